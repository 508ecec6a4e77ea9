//! Feeds a participant's commands topic through the kit.

use std::sync::Arc;

use async_trait::async_trait;
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use saga_schemas::{Envelope, MessageKind};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{handle_command, Command, CommandHandler};
use crate::consume::{self, HandleError, MessageHandler};
use crate::kafka::{header, KafkaSettings};
use crate::trace::TRACEPARENT_HEADER;
use crate::Result;

/// Topics and group of a participant worker.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Where commands arrive.
    pub commands_topic: String,
    /// Where replies go.
    pub reply_topic: String,
    /// Where unprocessable commands go.
    pub dlq_topic: String,
    /// Consumer group.
    pub group: String,
    /// Partitions handled in parallel (each one in order).
    pub lanes: usize,
}

/// Consumes commands and runs each through [`handle_command`]; the Kafka offset is stored
/// only after the transaction committed. Infrastructure errors are retried with backoff; a
/// command that can never be processed goes to the DLQ and the worker moves on.
pub struct ParticipantWorker {
    kafka: KafkaSettings,
    apply: Arc<ApplyCommand>,
    settings: WorkerSettings,
}

struct ApplyCommand {
    pool: PgPool,
    handler: Arc<dyn CommandHandler>,
    reply_topic: String,
}

impl ParticipantWorker {
    /// A worker for `handler`, reading and writing `pool`'s schema.
    pub fn new(
        pool: PgPool,
        kafka: &KafkaSettings,
        handler: Arc<dyn CommandHandler>,
        settings: WorkerSettings,
    ) -> Result<Self> {
        Ok(ParticipantWorker {
            kafka: kafka.clone(),
            apply: Arc::new(ApplyCommand {
                pool,
                handler,
                reply_topic: settings.reply_topic.clone(),
            }),
            settings,
        })
    }

    /// Processes commands until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let consumer = self.kafka.consumer(
            &self.settings.group,
            &[self.settings.commands_topic.as_str()],
        )?;
        let producer = self.kafka.producer()?;
        consume::run(
            &self.settings.commands_topic,
            consumer,
            producer,
            self.settings.dlq_topic.clone(),
            self.apply.clone(),
            self.settings.lanes,
            shutdown,
        )
        .await;
        Ok(())
    }
}

#[async_trait]
impl MessageHandler for ApplyCommand {
    async fn handle(&self, message: &OwnedMessage) -> Result<(), HandleError> {
        let mut command = parse_command(message.payload()).map_err(HandleError::Poison)?;
        command.traceparent = header(message, TRACEPARENT_HEADER);
        handle_command(
            &self.pool,
            self.handler.as_ref(),
            &command,
            &self.reply_topic,
        )
        .await?;
        Ok(())
    }
}

/// Reads a command envelope, or says exactly what is wrong with it.
pub(crate) fn parse_command(payload: Option<&[u8]>) -> Result<Command, String> {
    let payload = payload.ok_or("empty message")?;
    let envelope: Envelope = serde_json::from_slice(payload)
        .map_err(|e| format!("not a valid command envelope: {e}"))?;
    if envelope.kind != MessageKind::Command {
        return Err(format!("expected a command, got {:?}", envelope.kind));
    }
    let missing = |field: &str| format!("command envelope without `{field}`");
    Ok(Command {
        saga_id: envelope.saga_id.ok_or_else(|| missing("saga_id"))?,
        step: envelope.step.ok_or_else(|| missing("step"))?,
        phase: envelope.phase.ok_or_else(|| missing("phase"))?,
        attempt: envelope.attempt,
        payload: envelope.payload,
        traceparent: None,
    })
}

#[cfg(test)]
mod tests {
    use saga_schemas::Phase;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn a_complete_command_envelope_parses() {
        let saga_id = Uuid::new_v4();
        let envelope = Envelope::new(MessageKind::Command, serde_json::json!({"cents": 5}))
            .for_saga(saga_id)
            .for_step("reserve_funds", Phase::Try, 2);
        let bytes = serde_json::to_vec(&envelope).unwrap();
        let command = parse_command(Some(&bytes)).unwrap();
        assert_eq!(command.saga_id, saga_id);
        assert_eq!(command.phase, Phase::Try);
        assert_eq!(command.attempt, 2);
    }

    #[test]
    fn bad_commands_say_what_is_wrong() {
        assert_eq!(parse_command(None).unwrap_err(), "empty message");
        assert!(parse_command(Some(b"{nope"))
            .unwrap_err()
            .contains("not a valid"));
        let reply = Envelope::new(MessageKind::Reply, serde_json::Value::Null);
        let bytes = serde_json::to_vec(&reply).unwrap();
        assert!(parse_command(Some(&bytes))
            .unwrap_err()
            .contains("expected a command"));
        let no_step =
            Envelope::new(MessageKind::Command, serde_json::Value::Null).for_saga(Uuid::new_v4());
        let bytes = serde_json::to_vec(&no_step).unwrap();
        assert!(parse_command(Some(&bytes)).unwrap_err().contains("`step`"));
    }
}
