//! `/v1/sagas`: the list, one saga, its history.

use axum::extract::{Path, Query, State};
use axum::Json;

use super::saga_id;
use crate::problem::{ApiError, Problem};
use crate::query::{Cursor, SagaFilter};
use crate::server::AdminState;
use crate::store;
use crate::views::{SagaDetail, SagaHistory, SagaPage, SagaSummary};

/// Lists sagas, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/sagas",
    tag = "sagas",
    params(
        ("status" = Option<String>, Query, description = "Statuses, comma-separated: running, compensating, completed, compensated, parked, resolved_manually"),
        ("definition" = Option<String>, Query, description = "Definition name"),
        ("version" = Option<i32>, Query, description = "Definition version"),
        ("step" = Option<String>, Query, description = "The step the saga is at"),
        ("parked" = Option<bool>, Query, description = "Only parked sagas (true) or none (false)"),
        ("created_after" = Option<String>, Query, description = "RFC 3339; created at or after"),
        ("created_before" = Option<String>, Query, description = "RFC 3339; created before"),
        ("updated_after" = Option<String>, Query, description = "RFC 3339; changed at or after"),
        ("updated_before" = Option<String>, Query, description = "RFC 3339; changed before"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("limit" = Option<u32>, Query, description = "Page size; capped by the server"),
    ),
    responses(
        (status = 200, description = "One page", body = SagaPage),
        (status = 400, description = "A parameter is wrong", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Token missing or wrong", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AdminState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<SagaPage>, ApiError> {
    let filter = SagaFilter::parse(&pairs, state.limits)?;
    let mut rows = store::list_sagas(&state.pool, &filter).await?;
    let next_cursor = if rows.len() > filter.limit as usize {
        rows.truncate(filter.limit as usize);
        rows.last().map(|last| {
            Cursor {
                created_at: last.created_at,
                id: last.id,
            }
            .encode()
        })
    } else {
        None
    };
    Ok(Json(SagaPage {
        items: rows.iter().map(SagaSummary::from).collect(),
        next_cursor,
        limit: filter.limit,
    }))
}

/// One saga: its projection, each step's progress and last error, its timers.
#[utoipa::path(
    get,
    path = "/v1/sagas/{id}",
    tag = "sagas",
    params(("id" = uuid::Uuid, Path, description = "Saga id")),
    responses(
        (status = 200, description = "The saga", body = SagaDetail),
        (status = 400, description = "Not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn show(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<SagaDetail>, ApiError> {
    detail(&state, saga_id(&id)?).await.map(Json)
}

/// The saga detail of `id`, or 404.
pub(crate) async fn detail(state: &AdminState, id: uuid::Uuid) -> Result<SagaDetail, ApiError> {
    let row = store::saga(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no saga {id}")))?;
    let events = store::events(&state.pool, id).await?;
    let timers = store::timers(&state.pool, id).await?;
    let definition = state
        .registry
        .get(&row.definition, row.definition_version as u32);
    SagaDetail::build(&row, &events, timers, definition.map(|d| d.as_ref())).ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("the stored state of saga {id} does not decode; run `sagas verify-history`"),
        )
    })
}

/// A saga's whole story: its events, and each command sent with the reply it got.
#[utoipa::path(
    get,
    path = "/v1/sagas/{id}/history",
    tag = "sagas",
    params(("id" = uuid::Uuid, Path, description = "Saga id")),
    responses(
        (status = 200, description = "The history", body = SagaHistory),
        (status = 400, description = "Not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn history(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<SagaHistory>, ApiError> {
    let id = saga_id(&id)?;
    let events = store::events(&state.pool, id).await?;
    if events.is_empty() {
        return Err(ApiError::not_found(format!("no saga {id}")));
    }
    Ok(Json(SagaHistory::build(id, &events)))
}
