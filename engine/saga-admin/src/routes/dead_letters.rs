//! `/v1/dead-letters`: messages the engine could not process — list, replay, discard.
//! Replays and discards are recorded with actor and reason.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::actions::ActionRequest;
use crate::problem::{ApiError, Problem};
use crate::server::AdminState;
use crate::store::{self, DeadLetterRow};

/// Header a replayed message carries: the id of the dead letter it replays.
pub const REPLAY_OF_HEADER: &str = "saga.replay_of";
/// How long publishing a replay may wait for the broker.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// A dead-lettered message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterView {
    /// Id (for replay and discard).
    pub id: i64,
    /// The topic it was consumed from.
    pub topic: String,
    /// Its partition there.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// Its key, as text.
    pub key: Option<String>,
    /// Its headers.
    #[schema(value_type = Object)]
    pub headers: Value,
    /// Its payload as text (lossy for bytes that are not UTF-8).
    pub payload: Option<String>,
    /// The payload's full size in bytes.
    pub payload_size: i32,
    /// Only the first 64 KiB were kept (such a message cannot be replayed).
    pub truncated: bool,
    /// Why it could not be processed.
    pub error: String,
    /// When it was dead-lettered.
    pub dead_lettered_at: DateTime<Utc>,
    /// When an operator discarded it.
    pub discarded_at: Option<DateTime<Utc>>,
}

impl From<DeadLetterRow> for DeadLetterView {
    fn from(row: DeadLetterRow) -> Self {
        let text = |bytes: Option<Vec<u8>>| bytes.map(|b| String::from_utf8_lossy(&b).into_owned());
        DeadLetterView {
            id: row.id,
            topic: row.topic,
            partition: row.partition,
            offset: row.offset,
            key: text(row.key),
            headers: row.headers,
            payload: text(row.payload),
            payload_size: row.payload_size,
            truncated: row.truncated,
            error: row.error,
            dead_lettered_at: row.dead_lettered_at,
            discarded_at: row.discarded_at,
        }
    }
}

/// A page of dead letters, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterPage {
    /// The dead letters.
    pub items: Vec<DeadLetterView>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// Lists dead letters, newest first; discarded ones only with `discarded=true`.
#[utoipa::path(
    get,
    path = "/v1/dead-letters",
    tag = "dead letters",
    params(
        ("discarded" = Option<bool>, Query, description = "List the discarded ones instead"),
        ("limit" = Option<u32>, Query, description = "Page size; capped by the server"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "One page", body = DeadLetterPage),
        (status = 400, description = "A parameter is wrong", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AdminState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    let mut discarded = false;
    let mut limit = state.limits.default;
    let mut before: Option<i64> = None;
    for (name, value) in &pairs {
        match name.as_str() {
            "discarded" => {
                discarded = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(ApiError::bad_field("discarded", "must be true or false")),
                }
            }
            "limit" => {
                limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| *l >= 1)
                    .ok_or_else(|| ApiError::bad_field("limit", "must be a whole number from 1"))?
                    .min(state.limits.max)
            }
            "cursor" => {
                before =
                    Some(value.parse().map_err(|_| {
                        ApiError::bad_field("cursor", "not a cursor this API gave out")
                    })?)
            }
            other => {
                return Err(ApiError::bad_field(
                    other,
                    "unknown parameter; known: discarded, limit, cursor",
                ))
            }
        }
    }
    let mut rows = store::dead_letters(&state.pool, discarded, before, limit).await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.id.to_string())
    } else {
        None
    };
    Ok(Json(DeadLetterPage {
        items: rows.into_iter().map(DeadLetterView::from).collect(),
        next_cursor,
    }))
}

fn letter_id(text: &str) -> Result<i64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_field("id", format!("`{text}` is not a dead-letter id")))
}

async fn open_letter(state: &AdminState, id: i64) -> Result<DeadLetterRow, ApiError> {
    let row = store::dead_letter(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no dead letter {id}")))?;
    if row.discarded_at.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("dead letter {id} was discarded"),
        ));
    }
    Ok(row)
}

/// Publishes a dead letter again to the topic it came from, with its key, payload and
/// headers (plus `saga.replay_of`), after recording who does it and why.
#[utoipa::path(
    post,
    path = "/v1/dead-letters/{id}/replay",
    tag = "dead letters",
    params(("id" = i64, Path, description = "Dead-letter id")),
    request_body = ActionRequest,
    responses(
        (status = 202, description = "Published again", body = DeadLetterView),
        (status = 400, description = "Bad id or body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dead letter", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Discarded, or its payload was truncated", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database or the broker did not answer; nothing was replayed", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn replay(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<DeadLetterView>), ApiError> {
    let id = letter_id(&id)?;
    let request = ActionRequest::parse(&body)?;
    let row = open_letter(&state, id).await?;
    if row.truncated {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "dead letter {id} kept only the first {} of {} bytes; it cannot be replayed",
                row.payload.as_ref().map_or(0, Vec::len),
                row.payload_size
            ),
        ));
    }
    let mut headers = OwnedHeaders::new();
    if let Value::Object(original) = &row.headers {
        for (name, value) in original
            .iter()
            .filter(|(name, _)| !name.starts_with("dlq."))
        {
            headers = headers.insert(Header {
                key: name,
                value: value.as_str(),
            });
        }
    }
    let replay_of = id.to_string();
    let headers = headers.insert(Header {
        key: REPLAY_OF_HEADER,
        value: Some(&replay_of),
    });
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&row.topic).headers(headers);
    if let Some(key) = &row.key {
        record = record.key(key);
    }
    if let Some(payload) = &row.payload {
        record = record.payload(payload);
    }
    // Recorded before it is published, so that no replay goes out unrecorded; a replay
    // the broker refused is taken back from the record.
    let actor = request.actor.unwrap_or_else(|| "admin-api".into());
    let action =
        store::record_dead_letter_action(&state.pool, id, "replay", &actor, &request.reason)
            .await?;
    if let Err((error, _)) = state.producer.send(record, PUBLISH_TIMEOUT).await {
        if let Err(forget) = store::forget_dead_letter_action(&state.pool, action).await {
            tracing::warn!(dead_letter = id, action, error = %forget,
                "a replay the broker refused stays recorded");
        }
        return Err(ApiError::unavailable(format!(
            "the broker at {} did not take the replay: {error}",
            state.brokers
        )));
    }
    tracing::info!(dead_letter = id, topic = %row.topic, %actor, reason = %request.reason,
        "dead letter replayed");
    Ok((StatusCode::ACCEPTED, Json(row.into())))
}

/// Discards a dead letter (it stays listed under `discarded=true`), recording who and why.
#[utoipa::path(
    delete,
    path = "/v1/dead-letters/{id}",
    tag = "dead letters",
    params(("id" = i64, Path, description = "Dead-letter id")),
    request_body = ActionRequest,
    responses(
        (status = 200, description = "Discarded", body = DeadLetterView),
        (status = 400, description = "Bad id or body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dead letter", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already discarded", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn discard(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<DeadLetterView>, ApiError> {
    let id = letter_id(&id)?;
    let request = ActionRequest::parse(&body)?;
    open_letter(&state, id).await?;
    let actor = request.actor.unwrap_or_else(|| "admin-api".into());
    let row = store::discard_dead_letter(&state.pool, id, &actor, &request.reason)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                format!("dead letter {id} was discarded"),
            )
        })?;
    tracing::info!(dead_letter = id, %actor, reason = %request.reason, "dead letter discarded");
    Ok(Json(row.into()))
}
