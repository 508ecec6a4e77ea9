//! `POST /v1/triggers/{definition}`: start a saga by publishing its trigger to Kafka (the
//! trigger topic stays the only way in), after checking the input as the engine will.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use schemas::{headers, Envelope, MessageKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::problem::{ApiError, Problem};
use crate::server::AdminState;

/// How long publishing may wait for the broker.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// A trigger accepted and published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TriggerPublished {
    /// The saga the trigger starts (or started already, for a known key).
    pub saga_id: Uuid,
    /// The idempotency key the definition derived from the input.
    pub key: String,
    /// Where it was published.
    pub topic: String,
    /// The trigger envelope's message id.
    pub message_id: Uuid,
}

/// Checks `input` against the definition (type and validation) and publishes it as a
/// trigger. The saga starts when the engine consumes it; a repeated key starts nothing new.
#[utoipa::path(
    post,
    path = "/v1/triggers/{definition}",
    tag = "triggers",
    params(("definition" = String, Path, description = "Definition name")),
    request_body(content = Object, description = "The saga input, as the trigger topic carries it"),
    responses(
        (status = 202, description = "Published", body = TriggerPublished),
        (status = 400, description = "The input does not fit the definition", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No token configured: the API only reads", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such definition", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The broker did not take it", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn publish(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<TriggerPublished>), ApiError> {
    let definition = state
        .registry
        .latest(&name)
        .ok_or_else(|| ApiError::not_found(format!("no definition `{name}`")))?;
    let input: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_field("body", format!("not JSON: {e}")))?;
    let accepted = definition
        .accept_trigger(&input)
        .map_err(|reason| ApiError::bad_field("body", reason))?;
    let envelope = Envelope::new(MessageKind::Trigger, &input);
    let payload =
        serde_json::to_vec(&envelope).map_err(|e| ApiError::bad_field("body", e.to_string()))?;
    let topic = state
        .transitions
        .topics()
        .trigger(definition.trigger_topic());
    let record = FutureRecord::to(&topic)
        .key(&accepted.key)
        .payload(&payload)
        .headers(OwnedHeaders::new().insert(Header {
            key: headers::DEFINITION,
            value: Some(definition.name()),
        }));
    state
        .producer
        .send(record, PUBLISH_TIMEOUT)
        .await
        .map_err(|(error, _)| {
            ApiError::unavailable(format!(
                "the broker at {} did not take the trigger: {error}",
                state.brokers
            ))
        })?;
    tracing::info!(definition = %name, saga_id = %accepted.saga_id, key = %accepted.key,
        "trigger published through the admin API");
    Ok((
        StatusCode::ACCEPTED,
        Json(TriggerPublished {
            saga_id: accepted.saga_id,
            key: accepted.key,
            topic,
            message_id: envelope.message_id,
        }),
    ))
}
