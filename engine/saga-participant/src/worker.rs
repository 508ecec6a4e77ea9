//! Feeds a participant's commands topic through the kit.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use saga_plumbing::consume::{
    self, ConsumerSettings, Grouped, HandleError, Handled, MessageHandler,
};
use saga_plumbing::db::PoolSettings;
use saga_plumbing::dlq::{DeadLetterQueue, DeadLetters};
use saga_plumbing::health::Health;
use saga_plumbing::kafka::{header, KafkaSettings};
use saga_plumbing::outbox::RelaySettings;
use saga_plumbing::topics::Topics;
use saga_plumbing::trace::TRACEPARENT_HEADER;
use saga_plumbing::Result;
use schemas::{Envelope, EnvelopeError, MessageKind};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::group::{handle_group_in, Delivery};
use crate::kit::command_span;
use crate::{handle_command_in, Command, CommandHandler};

/// How long a group waits for a row lock by default.
const DEFAULT_GROUP_LOCK_TIMEOUT: Duration = Duration::from_millis(100);

/// How a participant service runs; where Postgres and Kafka are comes separately.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParticipantSettings {
    /// Consumer group prefix; a participant's group is `<group_prefix><participant>`
    /// (default `participant-`).
    pub group_prefix: String,
    /// Partitions of the topics a participant creates when they are missing (default 6).
    pub partitions: i32,
    /// The commands consumer.
    pub consumer: ConsumerSettings,
    /// The relay of the participant's outbox (its replies).
    pub relay: RelaySettings,
    /// The participant's connection pool.
    pub pool: PoolSettings,
    /// Where a participant process serves `/metrics` (none by default; `sagas participant
    /// --metrics-addr`).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// How long a group of commands waits for a row lock before its commands are handled
    /// alone instead (default 100 ms; see [`ParticipantWorker::with_group_lock_timeout`]).
    #[serde(with = "humantime_serde")]
    pub group_lock_timeout: Duration,
}

impl Default for ParticipantSettings {
    fn default() -> Self {
        ParticipantSettings {
            group_prefix: "participant-".into(),
            partitions: 6,
            consumer: ConsumerSettings::default(),
            relay: RelaySettings::default(),
            pool: PoolSettings::default(),
            metrics_addr: None,
            group_lock_timeout: DEFAULT_GROUP_LOCK_TIMEOUT,
        }
    }
}

/// The topics a participant reads and writes.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerTopics {
    /// Where its commands arrive.
    pub commands: String,
    /// Where its replies go.
    pub replies: String,
    /// Where unprocessable commands go.
    pub dlq: String,
}

impl WorkerTopics {
    /// The standard topics of `participant` in a deployment named by `topics`.
    pub fn of(topics: &Topics, participant: &str) -> Self {
        WorkerTopics {
            commands: topics.commands(participant),
            replies: topics.replies(),
            dlq: topics.dlq(),
        }
    }
}

/// Consumes commands and runs each through [`handle_command`]; the Kafka offset is stored
/// only after the transaction committed. Infrastructure errors are retried with backoff; a
/// command that can never be processed goes to the DLQ and the worker moves on.
pub struct ParticipantWorker {
    kafka: KafkaSettings,
    apply: ApplyCommand,
    topics: WorkerTopics,
    group: String,
    consumer: ConsumerSettings,
    dead_letters: DeadLetters,
    health: Health,
}

struct ApplyCommand {
    pool: PgPool,
    handler: Arc<dyn CommandHandler>,
    reply_topic: String,
    max_message_bytes: usize,
    group_lock_timeout: Duration,
}

impl ParticipantWorker {
    /// A worker for `handler`, reading and writing `pool`'s schema, consuming `topics` in
    /// consumer group `group`.
    pub fn new(
        pool: PgPool,
        kafka: &KafkaSettings,
        handler: Arc<dyn CommandHandler>,
        topics: WorkerTopics,
        group: impl Into<String>,
        consumer: &ConsumerSettings,
    ) -> Self {
        ParticipantWorker {
            kafka: kafka.clone(),
            apply: ApplyCommand {
                pool,
                handler,
                reply_topic: topics.replies.clone(),
                max_message_bytes: consumer.max_message_bytes,
                group_lock_timeout: DEFAULT_GROUP_LOCK_TIMEOUT,
            },
            topics,
            group: group.into(),
            consumer: consumer.clone(),
            dead_letters: DeadLetters::default(),
            health: Health::default(),
        }
    }

    /// Commands fetched together are handled in one transaction (one statement per kit
    /// table); such a group waits at most `timeout` for a row lock another transaction
    /// holds, then its commands are handled alone, each in its own transaction. Groups of
    /// different partitions touching the same rows (one user's orders on several
    /// partitions) so never wait long for each other nor deadlock.
    pub fn with_group_lock_timeout(mut self, timeout: Duration) -> Self {
        self.apply.group_lock_timeout = timeout;
        self
    }

    /// What the worker's consumer reports about itself (readiness).
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// The count of commands this worker sent to the DLQ.
    pub fn dead_letters(&self) -> DeadLetters {
        self.dead_letters.clone()
    }

    /// Processes commands until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let consumer = consume::subscribe(
            &self.kafka,
            &self.topics.commands,
            &self.group,
            &[self.topics.commands.as_str()],
        )?;
        let dlq = DeadLetterQueue {
            producer: self.kafka.producer()?,
            topic: self.topics.dlq.clone(),
            counter: self.dead_letters.clone(),
            store: self.apply.pool.clone(),
            publish_attempts: self.consumer.dead_letter_attempts,
            publish_timeout: self.consumer.dead_letter_timeout,
        };
        consume::run(
            &self.topics.commands,
            consumer,
            dlq,
            Arc::new(self.apply),
            &self.consumer,
            self.health.clone(),
            shutdown,
        )
        .await;
        Ok(())
    }
}

impl MessageHandler for ApplyCommand {
    fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn handle_in(
        &self,
        tx: &mut PgConnection,
        message: &OwnedMessage,
    ) -> Result<Handled, HandleError> {
        let Delivery { command, deadline } = self.delivery(message)?;
        let handled = handle_command_in(
            tx,
            self.handler.as_ref(),
            &command,
            &self.reply_topic,
            deadline,
        )
        .instrument(command_span(&command))
        .await?;
        crate::metrics::handled(message.topic(), command.phase, &handled);
        Ok(Handled::Done)
    }

    async fn handle_group(
        &self,
        tx: &mut PgConnection,
        messages: &[OwnedMessage],
    ) -> Result<Grouped, HandleError> {
        let Ok(deliveries) = messages
            .iter()
            .map(|message| self.delivery(message))
            .collect::<Result<Vec<_>, _>>()
        else {
            // Poison among them: one by one, so it alone goes to the DLQ.
            return Ok(Grouped::OneByOne);
        };
        let handled = handle_group_in(
            tx,
            self.handler.as_ref(),
            &deliveries,
            &self.reply_topic,
            self.group_lock_timeout,
        )
        .await?;
        let Some(handled) = handled else {
            return Ok(Grouped::OneByOne);
        };
        for ((message, delivery), handled) in messages.iter().zip(&deliveries).zip(&handled) {
            crate::metrics::handled(message.topic(), delivery.command.phase, handled);
        }
        Ok(Grouped::Applied)
    }
}

impl ApplyCommand {
    /// The command `message` carries, with its deadline, or why it is poison.
    fn delivery(&self, message: &OwnedMessage) -> Result<Delivery, HandleError> {
        let mut command = parse_command(message.payload(), self.max_message_bytes)
            .map_err(|e| HandleError::Poison(e.to_string()))?;
        command.traceparent = header(message, TRACEPARENT_HEADER);
        let deadline = header(message, schemas::headers::SAGA_DEADLINE)
            .map(|value| parse_deadline(&value))
            .transpose()
            .map_err(HandleError::Poison)?;
        self.handler
            .validate(&command)
            .map_err(|e| HandleError::Poison(format!("command refused: {e}")))?;
        Ok(Delivery { command, deadline })
    }
}

/// Reads a `saga.deadline` header (RFC 3339).
fn parse_deadline(value: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|at| at.with_timezone(&chrono::Utc))
        .map_err(|e| {
            format!(
                "header `{}` is not an RFC 3339 time: {e}",
                schemas::headers::SAGA_DEADLINE
            )
        })
}

/// Reads a command envelope, or says exactly what is wrong with it.
fn parse_command(payload: Option<&[u8]>, limit: usize) -> Result<Command, EnvelopeError> {
    let envelope = Envelope::parse(payload, MessageKind::Command, limit)?;
    let (address, payload) = envelope.into_step_message()?;
    Ok(Command {
        saga_id: address.saga_id,
        step: address.step,
        phase: address.phase,
        attempt: address.attempt,
        payload,
        traceparent: None,
    })
}

#[cfg(test)]
mod tests {
    use schemas::Phase;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn a_complete_command_envelope_parses() {
        let saga_id = Uuid::new_v4();
        let envelope = Envelope::new(MessageKind::Command, serde_json::json!({"cents": 5}))
            .for_saga(saga_id)
            .for_step("reserve_funds", Phase::Try, 2);
        let bytes = serde_json::to_vec(&envelope).unwrap();
        let command = parse_command(Some(&bytes), 1 << 20).unwrap();
        assert_eq!(command.saga_id, saga_id);
        assert_eq!(command.phase, Phase::Try);
        assert_eq!(command.attempt, 2);
    }

    #[test]
    fn deadline_headers_parse_or_say_why_not() {
        let at = parse_deadline("2026-11-24T09:00:00.250Z").unwrap();
        assert_eq!(at.timestamp_millis() % 1000, 250);
        assert!(parse_deadline("tomorrow")
            .unwrap_err()
            .contains("saga.deadline"));
    }

    #[test]
    fn a_command_without_its_step_is_refused() {
        let no_step =
            Envelope::new(MessageKind::Command, serde_json::Value::Null).for_saga(Uuid::new_v4());
        let bytes = serde_json::to_vec(&no_step).unwrap();
        let error = parse_command(Some(&bytes), 1 << 20).unwrap_err();
        assert_eq!(error.to_string(), "command envelope without `step`");
    }
}
