//! `POST /v1/sagas/{id}/{action}`: operator actions, each an event in the saga's history.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use saga_core::{OperatorAction, OperatorCommand, SagaInput};
use saga_engine::{Applied, Source};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::Instrument;
use utoipa::ToSchema;
use uuid::Uuid;

use super::saga_id;
use crate::problem::{ApiError, Problem};
use crate::server::AdminState;
use crate::store;

/// The inbox consumer name of operator actions.
pub const ADMIN_CONSUMER: &str = "admin";
/// Longest accepted reason.
const MAX_REASON: usize = 2_000;
/// Longest accepted actor.
const MAX_ACTOR: usize = 200;

/// Who acts and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ActionRequest {
    /// Why, in the operator's words (required, at most 2,000 characters).
    pub reason: String,
    /// Who (default `admin-api`; at most 200 characters).
    pub actor: Option<String>,
}

impl ActionRequest {
    /// Parses a body, naming the field at fault. Operator actions and dead-letter replays
    /// and discards all take this body.
    pub fn parse(body: &[u8]) -> Result<ActionRequest, ApiError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_field("body", format!("not JSON: {e}")))?;
        let Value::Object(fields) = value else {
            return Err(ApiError::bad_field("body", "must be a JSON object"));
        };
        if let Some(unknown) = fields.keys().find(|k| *k != "reason" && *k != "actor") {
            return Err(ApiError::bad_field(
                unknown.clone(),
                "unknown field; known: reason, actor",
            ));
        }
        let text = |name: &str, max: usize, required: bool| -> Result<Option<String>, ApiError> {
            match fields.get(name) {
                None | Some(Value::Null) if required => {
                    Err(ApiError::bad_field(name, "is required"))
                }
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => {
                    Err(ApiError::bad_field(name, "must not be empty"))
                }
                Some(Value::String(s)) if s.chars().count() > max => Err(ApiError::bad_field(
                    name,
                    format!("must be at most {max} characters"),
                )),
                // Postgres text cannot hold NUL; refused here, not as a database error.
                Some(Value::String(s)) if s.contains('\0') => {
                    Err(ApiError::bad_field(name, "must not contain NUL characters"))
                }
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(ApiError::bad_field(name, "must be a string")),
            }
        };
        Ok(ActionRequest {
            reason: text("reason", MAX_REASON, true)?.unwrap_or_default(),
            actor: text("actor", MAX_ACTOR, false)?,
        })
    }
}

/// The actions, as the path names them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperatorActionName {
    /// Re-send what the saga waits for now.
    Retry,
    /// A parked saga goes on with fresh retries.
    Resume,
    /// Abort a running saga.
    Compensate,
    /// A parked saga was fixed by hand.
    Resolve,
}

/// What an accepted action did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ActionAccepted {
    /// The saga.
    pub saga_id: Uuid,
    /// The action.
    pub action: String,
    /// The saga's status now.
    pub status: String,
    /// Events in its history now.
    pub version: i64,
    /// The same `Idempotency-Key` was accepted before; nothing new happened.
    pub duplicate: bool,
}

/// Acts on a saga: `retry` (re-send what it waits for now), `resume` (a parked saga goes
/// on with fresh retries), `compensate` (abort a running saga), `resolve` (a parked saga
/// was fixed by hand). Repeating a request with the same `Idempotency-Key` acts once.
#[utoipa::path(
    post,
    path = "/v1/sagas/{id}/{action}",
    tag = "actions",
    params(
        ("id" = uuid::Uuid, Path, description = "Saga id"),
        ("action" = OperatorActionName, Path, description = "What to do"),
        ("Idempotency-Key" = Option<String>, Header, description = "Repeats with the same key act once"),
    ),
    request_body = ActionRequest,
    responses(
        (status = 202, description = "Accepted: the action is in the history", body = ActionAccepted),
        (status = 400, description = "Bad id, action or body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Token missing or wrong", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No token configured: the API only reads", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The saga's state does not allow the action", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn act(
    State(state): State<AdminState>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<ActionAccepted>), ApiError> {
    let id = saga_id(&id)?;
    let action: OperatorAction = action.parse().map_err(|_| {
        ApiError::bad_field(
            "action",
            format!("`{action}` is not an action; one of retry, resume, compensate, resolve"),
        )
    })?;
    let request = ActionRequest::parse(&body)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => match value.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= 200 => Some(key.to_string()),
            _ => {
                return Err(ApiError::bad_field(
                    "Idempotency-Key",
                    "must be 1 to 200 visible ASCII characters",
                ))
            }
        },
    };
    let Some(row) = store::saga(&state.pool, id).await? else {
        return Err(ApiError::not_found(format!("no saga {id}")));
    };
    let message_id = match &key {
        Some(key) => Uuid::new_v5(&id, format!("{action}:{key}").as_bytes()),
        None => Uuid::new_v4(),
    };
    let input = SagaInput::Operator(OperatorCommand {
        action,
        actor: request.actor.unwrap_or_else(|| "admin-api".into()),
        reason: request.reason,
    });
    let source = Source {
        consumer: ADMIN_CONSUMER,
        message_id,
    };
    let span = tracing::info_span!("operator", saga.id = %id, action = %action);
    if let Some(trace_id) = row.state["trace_id"].as_str() {
        saga_plumbing::trace::continue_trace_id(&span, trace_id);
    }
    let applied = state
        .transitions
        .apply(Some(source), id, &input, None)
        .instrument(span)
        .await?;
    let accepted = |status: String, version: i64, duplicate: bool| {
        Ok((
            StatusCode::ACCEPTED,
            Json(ActionAccepted {
                saga_id: id,
                action: action.to_string(),
                status,
                version,
                duplicate,
            }),
        ))
    };
    match applied {
        Applied::Changed { status, version } => accepted(status.to_string(), version, false),
        Applied::Duplicate => {
            let row = store::saga(&state.pool, id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("no saga {id}")))?;
            accepted(row.status.to_string(), row.version, true)
        }
        Applied::Refused { reason } => Err(ApiError::new(StatusCode::CONFLICT, reason)),
        Applied::UnknownDefinition {
            definition,
            version,
        } => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "this engine does not run the saga's definition version {definition}@{version}; \
                 act from one that does"
            ),
        )),
        Applied::Unchanged => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{action} changed nothing"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_needs_a_reason_and_nothing_unknown() {
        let ok = ActionRequest::parse(br#"{"reason":"fixed by hand","actor":"ana"}"#).unwrap();
        assert_eq!(ok.reason, "fixed by hand");
        assert_eq!(ok.actor.as_deref(), Some("ana"));
        for (body, field) in [
            (&br#"{}"#[..], "reason"),
            (br#"{"reason":""}"#, "reason"),
            (br#"{"reason":7}"#, "reason"),
            (br#"{"reason":"x","actor":false}"#, "actor"),
            (br#"{"reason":"x","why":"y"}"#, "why"),
            (br#"[1]"#, "body"),
            (br#"{"reason":"#, "body"),
            (br#"{"reason":"a\u0000b"}"#, "reason"),
            (br#"{"reason":"x","actor":"\u0000"}"#, "actor"),
        ] {
            let error = ActionRequest::parse(body).unwrap_err();
            assert_eq!(error.status(), StatusCode::BAD_REQUEST);
            assert_eq!(error.problem().field.as_deref(), Some(field));
        }
        let long = format!(r#"{{"reason":"{}"}}"#, "x".repeat(MAX_REASON + 1));
        assert!(ActionRequest::parse(long.as_bytes()).is_err());
    }
}
