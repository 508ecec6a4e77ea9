//! The consumer loop every Kafka input shares: handle a message, retry infrastructure
//! errors with backoff, send poison messages to the DLQ, and store the offset only after
//! the message's effect is committed (or it was dead-lettered).
//!
//! Partitions are spread over lanes with bounded queues ([`dispatch`]); a full lane pauses
//! its partitions instead of stalling the others. Rebalances are followed through the
//! consumer's context ([`Assignment`]): revoked partitions' offsets are committed and their
//! queued messages dropped, assigned partitions flow again.

mod assignment;
mod dispatch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::select_all;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use assignment::Assignment;
use dispatch::{Dispatched, Dispatcher};

use crate::dlq::{self, DeadLetterQueue};
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

/// Handles one consumed message.
pub trait MessageHandler: Send + Sync + 'static {
    /// Applies the message; returns once its effect is committed.
    fn handle(
        &self,
        message: &OwnedMessage,
    ) -> impl Future<Output = std::result::Result<(), HandleError>> + Send;
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
        workers.spawn(lane(receiver, context.clone()));
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
        match step {
            Step::Look => {
                health.set_partitions(name, consumer.context().count());
                dispatcher.drop_revoked(consumer.context());
            }
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

/// Handles one lane's messages in order, storing each offset once its message is done.
async fn lane<H: MessageHandler>(
    mut messages: mpsc::Receiver<OwnedMessage>,
    context: Arc<LaneContext<H>>,
) {
    while let Some(message) = messages.recv().await {
        // After shutdown, queued messages stay unhandled (and uncommitted) for the next owner.
        if context.shutdown.is_cancelled() {
            break;
        }
        // Taken away by a rebalance: its next owner handles it from the committed offset.
        if !context
            .consumer
            .context()
            .holds(message.topic(), message.partition())
        {
            continue;
        }
        if !process(&message, &context).await {
            break;
        }
        let stored =
            context
                .consumer
                .store_offset(message.topic(), message.partition(), message.offset());
        if let Err(source) = stored {
            let error = kafka_error("store offset", message.topic(), source);
            warn!(consumer = %context.name, %error,
                "offset not stored; the message will come again");
        }
    }
}

/// Handles one message to the end (done or dead-lettered). Returns false when shutdown
/// interrupted it: the offset must not be stored then.
async fn process<H: MessageHandler>(message: &OwnedMessage, context: &LaneContext<H>) -> bool {
    let (settings, shutdown) = (&context.settings, &context.shutdown);
    let next = |backoff: Duration| (backoff * 2).min(settings.retry_max_backoff);
    let mut backoff = settings.retry_initial_backoff;
    let poison = loop {
        match context.handler.handle(message).await {
            Ok(()) => return true,
            Err(HandleError::Poison(reason)) => break reason,
            Err(HandleError::Infra(error)) if !error.is_retryable() => break error.to_string(),
            Err(HandleError::Infra(error)) => {
                warn!(consumer = %context.name, %error, ?backoff, topic = message.topic(),
                    offset = message.offset(), "handling failed, retrying");
                crate::metrics::handle_retried(&context.name);
                if !pause(backoff, shutdown).await {
                    return false;
                }
                backoff = next(backoff);
            }
        }
    };
    let mut backoff = settings.retry_initial_backoff;
    // Only Postgres failing to keep the dead letter ends here; the message waits for it.
    while let Err(error) = dlq::send(&context.dlq, message, &poison).await {
        warn!(%error, ?backoff, topic = message.topic(), offset = message.offset(),
            "keeping the dead letter failed, retrying");
        if !pause(backoff, shutdown).await {
            return false;
        }
        backoff = next(backoff);
    }
    true
}

/// Sleeps `wait` unless shutdown comes first; says whether to go on.
async fn pause(wait: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}
