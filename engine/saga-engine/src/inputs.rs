//! Turning Kafka messages into saga inputs: triggers start sagas, replies advance them.

use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use saga_core::{AcceptedTrigger, SagaDefinition, SagaInput};
use saga_plumbing::consume::{Grouped, HandleError, Handled, MessageHandler};
use saga_plumbing::kafka::header;
use saga_plumbing::trace::{self, TRACEPARENT_HEADER};
use schemas::{headers, Envelope, MessageKind, ReplyOutcome};
use sqlx::{PgConnection, PgPool};
use tracing::{info_span, Instrument, Span};
use uuid::Uuid;

use crate::group::GroupInput;
pub use crate::idempotency::TRIGGER_CONSUMER;
use crate::idempotency::{Trigger, Triggered, CONFLICT_ERROR};
use crate::transition::{Applied, Source, Transitions};
use crate::Error;

/// Header a trigger may carry to name its definition (otherwise the topic decides).
pub const DEFINITION_HEADER: &str = headers::DEFINITION;

/// Inbox consumer name of the reply path.
pub const REPLY_CONSUMER: &str = "replies";

/// Starts sagas from trigger messages.
pub struct TriggerHandler {
    /// The transition path.
    pub transitions: Transitions,
    /// Larger triggers are dead-lettered.
    pub max_message_bytes: usize,
}

/// Advances sagas with participant replies.
pub struct ReplyHandler {
    /// The transition path.
    pub transitions: Transitions,
    /// Larger replies are dead-lettered.
    pub max_message_bytes: usize,
}

fn poison(error: impl std::fmt::Display) -> HandleError {
    HandleError::Poison(error.to_string())
}

/// A trigger message, read and accepted by its definition.
struct ReadTrigger<'a> {
    definition: &'a SagaDefinition,
    accepted: AcceptedTrigger,
    message_id: Uuid,
    trace_id: String,
    span: Span,
}

impl TriggerHandler {
    /// Reads `message` as a trigger of one of the registered definitions.
    fn read<'a>(&'a self, message: &OwnedMessage) -> Result<ReadTrigger<'a>, HandleError> {
        let envelope = Envelope::parse(
            message.payload(),
            MessageKind::Trigger,
            self.max_message_bytes,
        )
        .map_err(poison)?;
        let registry = self.transitions.registry();
        let definition = match header(message, DEFINITION_HEADER) {
            Some(name) => registry
                .latest(&name)
                .ok_or_else(|| poison(format!("trigger names unknown definition `{name}`")))?,
            None => {
                let unprefixed = message
                    .topic()
                    .strip_prefix(self.transitions.topics().prefix.as_str())
                    .unwrap_or(message.topic());
                registry.for_trigger_topic(unprefixed).ok_or_else(|| {
                    poison(format!(
                        "no definition is triggered by `{}`",
                        message.topic()
                    ))
                })?
            }
        };
        let accepted = definition
            .accept_trigger(&envelope.payload)
            .map_err(|reason| {
                poison(format!(
                    "trigger rejected by `{}`: {reason}",
                    definition.name()
                ))
            })?;
        let span = info_span!("trigger", saga.id = %accepted.saga_id,
            saga.definition = %definition.name());
        let traceparent = header(message, TRACEPARENT_HEADER);
        let trace_id = traceparent
            .as_deref()
            .and_then(trace::trace_id_of)
            .unwrap_or_else(|| trace::trace_id_for_saga(accepted.saga_id));
        match &traceparent {
            Some(traceparent) if trace::trace_id_of(traceparent).is_some() => {
                trace::continue_trace(&span, traceparent)
            }
            _ => trace::continue_trace_id(&span, &trace_id),
        }
        Ok(ReadTrigger {
            definition,
            accepted,
            message_id: envelope.message_id,
            trace_id,
            span,
        })
    }
}

impl MessageHandler for TriggerHandler {
    fn pool(&self) -> &PgPool {
        self.transitions.pool()
    }

    async fn handle_in(
        &self,
        tx: &mut PgConnection,
        message: &OwnedMessage,
    ) -> Result<Handled, HandleError> {
        let read = self.read(message)?;
        let trigger = Trigger {
            definition: read.definition,
            accepted: &read.accepted,
            message_id: read.message_id,
            trace_id: &read.trace_id,
        };
        let triggered = self
            .transitions
            .trigger(tx, trigger)
            .instrument(read.span)
            .await?;
        match triggered {
            Triggered::Started | Triggered::Duplicate => Ok(Handled::Done),
            // The conflict's announcement stands; the trigger goes to the DLQ.
            Triggered::Conflict { .. } => Ok(Handled::Refused(CONFLICT_ERROR.into())),
        }
    }

    async fn handle_group(
        &self,
        tx: &mut PgConnection,
        messages: &[OwnedMessage],
    ) -> Result<Grouped, HandleError> {
        let inputs = messages.iter().map(|message| {
            let read = self.read(message).ok()?;
            Some(GroupInput {
                consumer: TRIGGER_CONSUMER,
                message_id: read.accepted.saga_id,
                saga_id: read.accepted.saga_id,
                input: SagaInput::Start {
                    input: read.accepted.input.clone(),
                    trace_id: read.trace_id,
                },
                starts: Some(read.definition),
                span: read.span,
            })
        });
        apply_group(&self.transitions, tx, inputs.collect()).await
    }
}

/// A reply message, read.
struct ReadReply {
    message_id: Uuid,
    saga_id: Uuid,
    input: SagaInput,
    span: Span,
}

impl ReplyHandler {
    /// Reads `message` as a participant's reply.
    fn read(&self, message: &OwnedMessage) -> Result<ReadReply, HandleError> {
        let envelope = Envelope::parse(
            message.payload(),
            MessageKind::Reply,
            self.max_message_bytes,
        )
        .map_err(poison)?;
        let message_id = envelope.message_id;
        let (address, payload) = envelope.into_step_message().map_err(poison)?;
        let outcome: ReplyOutcome = serde_json::from_value(payload)
            .map_err(|e| poison(format!("reply payload is not an outcome: {e}")))?;
        let saga_id = address.saga_id;
        let span = info_span!("reply", saga.id = %saga_id, step = %address.step,
            phase = %address.phase);
        if let Some(traceparent) = header(message, TRACEPARENT_HEADER) {
            trace::continue_trace(&span, &traceparent);
        }
        let input = SagaInput::Reply {
            step: address.step,
            phase: address.phase,
            attempt: address.attempt,
            outcome,
        };
        Ok(ReadReply {
            message_id,
            saga_id,
            input,
            span,
        })
    }
}

impl MessageHandler for ReplyHandler {
    fn pool(&self) -> &PgPool {
        self.transitions.pool()
    }

    async fn handle_group(
        &self,
        tx: &mut PgConnection,
        messages: &[OwnedMessage],
    ) -> Result<Grouped, HandleError> {
        let inputs = messages.iter().map(|message| {
            let read = self.read(message).ok()?;
            Some(GroupInput {
                consumer: REPLY_CONSUMER,
                message_id: read.message_id,
                saga_id: read.saga_id,
                input: read.input,
                starts: None,
                span: read.span,
            })
        });
        apply_group(&self.transitions, tx, inputs.collect()).await
    }

    async fn handle_in(
        &self,
        tx: &mut PgConnection,
        message: &OwnedMessage,
    ) -> Result<Handled, HandleError> {
        let ReadReply {
            message_id,
            saga_id,
            input,
            span,
        } = self.read(message)?;
        let source = Source {
            consumer: REPLY_CONSUMER,
            message_id,
        };
        let applied = self
            .transitions
            .apply_on(tx, Some(source), saga_id, &input, None)
            .instrument(span)
            .await?;
        if let Applied::UnknownDefinition {
            definition,
            version,
        } = applied
        {
            // Never dropped: the consumer retries it with backoff (and so keeps its offset)
            // until a process that registers the version takes the partition.
            return Err(HandleError::Infra(Error::Deferred(format!(
                "reply for saga {saga_id} of {definition}@{version}, a definition version \
                 this process does not register; waiting for a process that does"
            ))));
        }
        Ok(Handled::Done)
    }
}

/// Applies a group whose every message was read (`inputs` is `Some`) at once; a group
/// holding a message that does not read goes one message at a time, where that one is
/// dead-lettered.
async fn apply_group(
    transitions: &Transitions,
    tx: &mut PgConnection,
    inputs: Option<Vec<GroupInput<'_>>>,
) -> Result<Grouped, HandleError> {
    let Some(inputs) = inputs else {
        return Ok(Grouped::OneByOne);
    };
    Ok(match transitions.apply_group(tx, &inputs).await? {
        Some(_) => Grouped::Applied,
        None => Grouped::OneByOne,
    })
}
