//! `/v1/definitions`: what this engine runs, and lookup by business key.

use axum::extract::{Path, State};
use axum::Json;

use super::sagas::detail;
use crate::problem::{ApiError, Problem};
use crate::server::AdminState;
use crate::views::{DefinitionView, SagaDetail};

/// Every registered definition version with its steps, mode and trigger topic.
#[utoipa::path(
    get,
    path = "/v1/definitions",
    tag = "definitions",
    responses((status = 200, description = "The definitions", body = Vec<DefinitionView>))
)]
pub async fn list(State(state): State<AdminState>) -> Json<Vec<DefinitionView>> {
    let mut views: Vec<DefinitionView> = state
        .registry
        .all_versions()
        .map(|d| DefinitionView::from(d.as_ref()))
        .collect();
    views.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
    Json(views)
}

/// The saga a definition started for a business key (e.g. an order id).
#[utoipa::path(
    get,
    path = "/v1/definitions/{name}/sagas/{key}",
    tag = "definitions",
    params(
        ("name" = String, Path, description = "Definition name"),
        ("key" = String, Path, description = "The trigger's idempotency key"),
    ),
    responses(
        (status = 200, description = "The saga", body = SagaDetail),
        (status = 404, description = "No such definition, or no saga for the key", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn find_saga(
    State(state): State<AdminState>,
    Path((name, key)): Path<(String, String)>,
) -> Result<Json<SagaDetail>, ApiError> {
    let definition = state
        .registry
        .latest(&name)
        .ok_or_else(|| ApiError::not_found(format!("no definition `{name}`")))?;
    let id = definition.saga_id(&key);
    match detail(&state, id).await {
        Err(error) if error.status() == axum::http::StatusCode::NOT_FOUND => {
            Err(ApiError::not_found(format!(
                "no `{name}` saga for key `{key}` (it would be {id})"
            )))
        }
        other => other.map(Json),
    }
}
