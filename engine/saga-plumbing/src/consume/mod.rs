//! The consumer loop every Kafka input shares: handle a message, retry infrastructure
//! errors with backoff, send poison messages to the DLQ, and store the offset only after
//! the message's effect is committed (or it was dead-lettered).
//!
//! Partitions are spread over lanes with bounded queues ([`dispatch`]); a full lane pauses
//! its partitions instead of stalling the others. A lane applies the messages it has
//! queued in one transaction (group commit, [`lane`]). Rebalances are followed through the
//! consumer's context ([`Assignment`]): revoked partitions' offsets are committed and their
//! queued messages dropped, assigned partitions flow again.

mod assignment;
mod dispatch;
mod lane;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::select_all;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use assignment::Assignment;
use dispatch::{Dispatched, Dispatcher};

use crate::dlq::DeadLetterQueue;
use crate::health::Health;
use crate::kafka::{kafka_error, KafkaSettings, ENVELOPE_ALLOWANCE_BYTES};
use crate::{Error, Result};

/// How often a consumer records the partitions it holds.
const ASSIGNMENT_CHECK: Duration = Duration::from_secs(1);

/// A consumer that follows its group's rebalances (see [`Assignment`]).
pub type InputConsumer = StreamConsumer<Assignment>;

/// A consumer called `name` in `group`, subscribed to `topics`, for [`run`].
pub fn subscribe(
    kafka: &KafkaSettings,
    name: &str,
    group: &str,
    topics: &[&str],
) -> Result<InputConsumer> {
    let consumer: InputConsumer = kafka
        .consumer_config(group)
        .create_with_context(Assignment::new(name))
        .map_err(|source| kafka_error("create consumer", "", source))?;
    consumer
        .subscribe(topics)
        .map_err(|source| kafka_error("subscribe", &topics.join(","), source))?;
    Ok(consumer)
}

/// How a consumer spreads and retries its work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerSettings {
    /// Partitions handled in parallel, each in order (default 6).
    pub lanes: usize,
    /// Messages queued per lane before the consumer waits (default 64).
    pub lane_capacity: usize,
    /// Most messages a lane applies in one transaction (default 64): what it has queued
    /// when it takes the next message, up to this. 1 commits every message on its own.
    pub max_batch: usize,
    /// Largest message accepted; bigger ones are dead-lettered (default 256 KiB). Must
    /// leave [`ENVELOPE_ALLOWANCE_BYTES`] below the producer's limit, so that what the
    /// engine sends for an accepted message always fits the broker.
    pub max_message_bytes: usize,
    /// Attempts at publishing a dead letter before it is kept in Postgres only and the
    /// consumer moves on (default 5).
    pub dead_letter_attempts: u32,
    /// How long one attempt at publishing a dead letter may take (default 10 s).
    #[serde(with = "humantime_serde")]
    pub dead_letter_timeout: Duration,
    /// First wait before handling a message again after an infrastructure error (default
    /// 50 ms); doubles up to `retry_max_backoff`.
    #[serde(with = "humantime_serde")]
    pub retry_initial_backoff: Duration,
    /// Longest wait between attempts at one message (default 5 s).
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            lanes: 6,
            lane_capacity: 64,
            max_batch: 64,
            max_message_bytes: 256 * 1024,
            dead_letter_attempts: 5,
            dead_letter_timeout: Duration::from_secs(10),
            retry_initial_backoff: Duration::from_millis(50),
            retry_max_backoff: Duration::from_secs(5),
        }
    }
}

impl ConsumerSettings {
    /// Checks that an accepted message, wrapped in an envelope, fits what the producers
    /// send (`produce_limit` bytes); the error names the settings to change.
    pub fn check_fits(&self, produce_limit: usize) -> Result<(), String> {
        if self.max_message_bytes + ENVELOPE_ALLOWANCE_BYTES > produce_limit {
            return Err(format!(
                "consumer.max_message_bytes = {} leaves less than {ENVELOPE_ALLOWANCE_BYTES} \
                 bytes below the producer limit of {produce_limit} (message.max.bytes): lower \
                 it or raise the producer's limit",
                self.max_message_bytes
            ));
        }
        Ok(())
    }
}

/// Why a message was not handled.
#[derive(Debug)]
pub enum HandleError {
    /// The message can never be processed (bad JSON, wrong schema, unknown definition).
    Poison(String),
    /// Postgres or Kafka failed; retried while [`Error::is_retryable`] says so.
    Infra(Error),
}

impl From<Error> for HandleError {
    fn from(error: Error) -> Self {
        HandleError::Infra(error)
    }
}

/// What a handler did with a message whose writes are to be kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Applied.
    Done,
    /// Refused, but what the handler wrote about it stands (an announcement, say); the
    /// message goes to the DLQ with this reason once that is committed.
    Refused(String),
}

/// Handles consumed messages inside transactions the consumer opens, so that one
/// transaction can hold many messages' effects (group commit).
pub trait MessageHandler: Send + Sync + 'static {
    /// The pool the consumer opens its transactions on.
    fn pool(&self) -> &PgPool;

    /// Applies the message inside `tx`, a transaction (or savepoint) that may hold other
    /// messages' effects too. After an error the consumer rolls back what it wrote.
    fn handle_in(
        &self,
        tx: &mut PgConnection,
        message: &OwnedMessage,
    ) -> impl Future<Output = std::result::Result<Handled, HandleError>> + Send;

    /// Applies a whole group of messages inside `tx` at once, where the handler can do
    /// better than one savepoint per message (one statement per table, say). The default
    /// asks for [`Grouped::OneByOne`]: the consumer then rolls back whatever this wrote and
    /// applies the messages one at a time with [`MessageHandler::handle_in`], as it also
    /// does after an error here.
    fn handle_group(
        &self,
        tx: &mut PgConnection,
        messages: &[OwnedMessage],
    ) -> impl Future<Output = std::result::Result<Grouped, HandleError>> + Send {
        let _ = (tx, messages);
        async { Ok(Grouped::OneByOne) }
    }
}

/// How [`MessageHandler::handle_group`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouped {
    /// Every message of the group was applied (a duplicate counts).
    Applied,
    /// The group needs its messages applied one at a time.
    OneByOne,
}

/// What one lane needs, shared by all lanes of a consumer.
struct LaneContext<H> {
    name: String,
    consumer: InputConsumer,
    dlq: DeadLetterQueue,
    handler: Arc<H>,
    settings: ConsumerSettings,
    shutdown: CancellationToken,
}

/// Consumes until `shutdown` with `handler`. Messages are spread over `settings.lanes`
/// tasks by partition, so each partition is still handled in order (and its offsets stored
/// in order) while different partitions proceed in parallel.
pub async fn run<H: MessageHandler>(
    name: &str,
    consumer: InputConsumer,
    dlq: DeadLetterQueue,
    handler: Arc<H>,
    settings: &ConsumerSettings,
    health: Health,
    shutdown: CancellationToken,
) {
    let lanes = settings.lanes.max(1);
    info!(consumer = name, lanes, "consumer started");
    health.set_running(name, true);
    let mut look = tokio::time::interval(ASSIGNMENT_CHECK);
    let context = Arc::new(LaneContext {
        name: name.to_string(),
        consumer,
        dlq,
        handler,
        settings: settings.clone(),
        shutdown: shutdown.clone(),
    });
    let consumer = &context.consumer;
    let mut senders = Vec::new();
    let mut workers = JoinSet::new();
    for _ in 0..lanes {
        let (sender, receiver) = mpsc::channel::<OwnedMessage>(settings.lane_capacity.max(1));
        senders.push(sender);
        workers.spawn(lane::run(receiver, context.clone()));
    }
    let mut dispatcher = Dispatcher::new(senders);
    loop {
        let waiting = dispatcher.waiting();
        let room = async move {
            if waiting.is_empty() {
                return std::future::pending().await;
            }
            let reserves = waiting.into_iter().map(|(index, queue)| {
                Box::pin(async move { (index, queue.reserve_owned().await) })
            });
            select_all(reserves).await.0
        };
        let step = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = look.tick() => Step::Look,
            (index, permit) = room => Step::Room(index, permit),
            message = consumer.recv() => Step::Message(message.map(|m| m.detach())),
        };
        // Rebalances happen inside `recv`: forget what was held back for lost partitions
        // before anything else, a message of the new assignment included.
        let revoked = consumer.context().take_revoked();
        if !revoked.is_empty() {
            dispatcher.forget(&revoked);
        }
        match step {
            Step::Look => health.set_partitions(name, consumer.context().count()),
            Step::Room(index, Ok(permit)) => dispatcher.refill(index, permit, consumer),
            Step::Room(_, Err(_)) => break,
            Step::Message(Ok(message)) => {
                if dispatcher.dispatch(message, consumer) == Dispatched::Closed {
                    break;
                }
            }
            Step::Message(Err(error)) => {
                warn!(consumer = name, %error, "consume failed");
                if !pause(settings.retry_initial_backoff, &shutdown).await {
                    break;
                }
            }
        }
    }
    drop(dispatcher);
    while workers.join_next().await.is_some() {}
    health.set_running(name, false);
    info!(consumer = name, "consumer stopped");
}

/// What woke the consumer loop.
enum Step {
    /// Time to record the assignment.
    Look,
    /// A full lane has room again.
    Room(
        usize,
        std::result::Result<mpsc::OwnedPermit<OwnedMessage>, mpsc::error::SendError<()>>,
    ),
    /// A message, or a consumer error.
    Message(std::result::Result<OwnedMessage, rdkafka::error::KafkaError>),
}

/// Sleeps `wait` unless shutdown comes first; says whether to go on.
pub(crate) async fn pause(wait: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}
