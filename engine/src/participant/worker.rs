//! Feeds a participant's commands topic through the kit.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::Message;
use saga_schemas::{Envelope, MessageKind};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{handle_command, Command, CommandHandler};
use crate::kafka::{kafka_error, KafkaSettings};
use crate::{dlq, Result};

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
}

/// Consumes commands, runs each through [`handle_command`], and stores the Kafka offset only
/// after the transaction committed. Infrastructure errors are retried with backoff; a
/// command that can never be processed goes to the DLQ and the worker moves on.
pub struct ParticipantWorker {
    pool: PgPool,
    handler: Arc<dyn CommandHandler>,
    consumer: StreamConsumer,
    producer: FutureProducer,
    settings: WorkerSettings,
}

impl ParticipantWorker {
    /// A worker for `handler`, reading and writing `pool`'s schema.
    pub fn new(
        pool: PgPool,
        kafka: &KafkaSettings,
        handler: Arc<dyn CommandHandler>,
        settings: WorkerSettings,
    ) -> Result<Self> {
        let consumer = kafka.consumer(&settings.group, &[settings.commands_topic.as_str()])?;
        let producer = kafka.producer()?;
        Ok(ParticipantWorker {
            pool,
            handler,
            consumer,
            producer,
            settings,
        })
    }

    /// Processes commands until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(topic = %self.settings.commands_topic, "participant worker started");
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                message = self.consumer.recv() => message,
            };
            match message {
                Ok(message) => self.process(&message, &shutdown).await,
                Err(error) => {
                    warn!(%error, "consume failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        info!(topic = %self.settings.commands_topic, "participant worker stopped");
    }

    async fn process(&self, message: &BorrowedMessage<'_>, shutdown: &CancellationToken) {
        let outcome = match parse_command(message.payload()) {
            Ok(command) => self.apply(&command, shutdown).await,
            Err(error) => Err(error),
        };
        if let Err(error) = outcome {
            if shutdown.is_cancelled() {
                return;
            }
            self.dead_letter(message, &error, shutdown).await;
        }
        if let Err(source) = self.consumer.store_offset_from_message(message) {
            let error = kafka_error("store offset", message.topic(), source);
            warn!(%error, "offset not stored; the command will be redelivered");
        }
    }

    /// Runs the command, retrying retryable errors until it succeeds or `shutdown`.
    /// Returns the text of a non-retryable error.
    async fn apply(&self, command: &Command, shutdown: &CancellationToken) -> Result<(), String> {
        let mut backoff = Duration::from_millis(50);
        loop {
            match handle_command(
                &self.pool,
                self.handler.as_ref(),
                command,
                &self.settings.reply_topic,
            )
            .await
            {
                Ok(_) => return Ok(()),
                Err(error) if error.is_retryable() && !shutdown.is_cancelled() => {
                    warn!(%error, ?backoff, "command failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(error) => return Err(error.to_string()),
            }
        }
    }

    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        error: &str,
        shutdown: &CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(100);
        while let Err(e) = dlq::send(&self.producer, &self.settings.dlq_topic, message, error).await
        {
            if shutdown.is_cancelled() {
                return;
            }
            warn!(error = %e, "dead-lettering failed, retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
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
