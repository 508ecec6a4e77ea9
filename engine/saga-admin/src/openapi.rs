//! The OpenAPI document of the admin API, generated from the route annotations.

use axum::Json;
use utoipa::OpenApi;

use crate::routes::{actions, dead_letters, definitions, health, sagas, stats, triggers};

/// Every route and body of the admin API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "saga engine admin API",
        description = "Inspect the sagas, definitions and figures of one engine deployment. \
            Errors are application/problem+json. With a token configured, /v1 routes need \
            `Authorization: Bearer <token>`."
    ),
    paths(
        sagas::list,
        sagas::show,
        sagas::history,
        actions::act,
        definitions::list,
        definitions::find_saga,
        stats::show,
        triggers::publish,
        dead_letters::list,
        dead_letters::replay,
        dead_letters::discard,
        health::live,
        health::ready,
        crate::metrics::serve,
        crate::dashboard::page,
        serve,
    ),
    components(schemas(actions::OperatorActionName)),
    modifiers(&BearerAuth)
)]
pub struct AdminApi;

/// Declares the bearer scheme.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "openapi",
    responses((status = 200, description = "The OpenAPI document of this API", body = Object)))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(AdminApi::openapi())
}
