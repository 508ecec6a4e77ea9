//! Turning Kafka messages into saga inputs: triggers start sagas, replies advance them.

use async_trait::async_trait;
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use saga_schemas::{Envelope, MessageKind, ReplyOutcome};
use tracing::{info_span, Instrument};

use super::transition::{Applied, Source, Transitions};
use crate::consume::{HandleError, MessageHandler};
use crate::kafka::header;
use crate::saga::SagaInput;
use crate::trace::{self, TRACEPARENT_HEADER};

/// Header a trigger may carry to name its definition (otherwise the topic decides).
pub const DEFINITION_HEADER: &str = "saga.definition";

/// Largest message the engine accepts; bigger ones go to the DLQ.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Inbox consumer name of the trigger path.
pub const TRIGGER_CONSUMER: &str = "triggers";
/// Inbox consumer name of the reply path.
pub const REPLY_CONSUMER: &str = "replies";

/// Starts sagas from trigger messages.
pub struct TriggerHandler {
    /// The transition path.
    pub transitions: Transitions,
}

/// Advances sagas with participant replies.
pub struct ReplyHandler {
    /// The transition path.
    pub transitions: Transitions,
}

fn envelope(message: &OwnedMessage, expected: MessageKind) -> Result<Envelope, HandleError> {
    let payload = message
        .payload()
        .ok_or_else(|| HandleError::Poison("empty message".into()))?;
    if payload.len() > MAX_MESSAGE_BYTES {
        return Err(HandleError::Poison(format!(
            "message of {} bytes exceeds the limit of {MAX_MESSAGE_BYTES}",
            payload.len()
        )));
    }
    let envelope: Envelope = serde_json::from_slice(payload)
        .map_err(|e| HandleError::Poison(format!("not a valid envelope: {e}")))?;
    if envelope.kind != expected {
        return Err(HandleError::Poison(format!(
            "expected a {expected:?} message, got {:?}",
            envelope.kind
        )));
    }
    Ok(envelope)
}

#[async_trait]
impl MessageHandler for TriggerHandler {
    async fn handle(&self, message: &OwnedMessage) -> Result<(), HandleError> {
        let envelope = envelope(message, MessageKind::Trigger)?;
        let registry = &self.transitions.registry;
        let definition = match header(message, DEFINITION_HEADER) {
            Some(name) => registry.latest(&name).ok_or_else(|| {
                HandleError::Poison(format!("trigger names unknown definition `{name}`"))
            })?,
            None => {
                let unprefixed = message
                    .topic()
                    .strip_prefix(self.transitions.topics.prefix.as_str())
                    .unwrap_or(message.topic());
                registry.for_trigger_topic(unprefixed).ok_or_else(|| {
                    HandleError::Poison(format!(
                        "no definition is triggered by `{}`",
                        message.topic()
                    ))
                })?
            }
        };
        let trigger = definition
            .accept_trigger(&envelope.payload)
            .map_err(|reason| {
                HandleError::Poison(format!(
                    "trigger rejected by `{}`: {reason}",
                    definition.name
                ))
            })?;
        let span =
            info_span!("trigger", saga.id = %trigger.saga_id, saga.definition = %definition.name);
        let source = Source {
            consumer: TRIGGER_CONSUMER,
            message_id: envelope.message_id,
        };
        let trace_id = header(message, TRACEPARENT_HEADER)
            .and_then(|value| trace::trace_id_of(&value))
            .unwrap_or_else(|| trace::trace_id_for_saga(trigger.saga_id));
        let input = SagaInput::Start {
            input: trigger.input,
            trace_id,
        };
        self.transitions
            .apply(Some(source), trigger.saga_id, &input, Some(definition))
            .instrument(span)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl MessageHandler for ReplyHandler {
    async fn handle(&self, message: &OwnedMessage) -> Result<(), HandleError> {
        let envelope = envelope(message, MessageKind::Reply)?;
        let missing = |field: &str| HandleError::Poison(format!("reply without `{field}`"));
        let saga_id = envelope.saga_id.ok_or_else(|| missing("saga_id"))?;
        let step = envelope.step.ok_or_else(|| missing("step"))?;
        let phase = envelope.phase.ok_or_else(|| missing("phase"))?;
        let outcome: ReplyOutcome = serde_json::from_value(envelope.payload)
            .map_err(|e| HandleError::Poison(format!("reply payload is not an outcome: {e}")))?;
        let span = info_span!("reply", saga.id = %saga_id, step = %step, phase = %phase);
        let source = Source {
            consumer: REPLY_CONSUMER,
            message_id: envelope.message_id,
        };
        let input = SagaInput::Reply {
            step,
            phase,
            attempt: envelope.attempt,
            outcome,
        };
        let applied = self
            .transitions
            .apply(Some(source), saga_id, &input, None)
            .instrument(span)
            .await?;
        if applied == Applied::UnknownDefinition {
            tracing::warn!(%saga_id, "reply for a saga of an unknown definition version skipped");
        }
        Ok(())
    }
}
