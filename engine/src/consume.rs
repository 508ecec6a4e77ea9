//! The consumer loop every Kafka input shares: handle a message, retry infrastructure
//! errors with backoff, send poison messages to the DLQ, and store the offset only after
//! the message's effect is committed (or it was dead-lettered).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::Message;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::kafka::kafka_error;
use crate::{dlq, Error};

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
#[async_trait]
pub trait MessageHandler: Send + Sync {
    /// Applies the message; returns once its effect is committed.
    async fn handle(&self, message: &OwnedMessage) -> Result<(), HandleError>;
}

/// Consumes until `shutdown` with `handler`. Messages are spread over `lanes` tasks by
/// partition, so each partition is still handled in order (and its offsets stored in
/// order) while different partitions proceed in parallel.
pub async fn run(
    name: &str,
    consumer: StreamConsumer,
    producer: FutureProducer,
    dlq_topic: String,
    handler: Arc<dyn MessageHandler>,
    lanes: usize,
    shutdown: CancellationToken,
) {
    info!(consumer = name, lanes, "consumer started");
    let consumer = Arc::new(consumer);
    let mut senders = Vec::new();
    let mut workers = JoinSet::new();
    for _ in 0..lanes.max(1) {
        let (sender, receiver) = mpsc::channel::<OwnedMessage>(64);
        senders.push(sender);
        workers.spawn(lane(
            name.to_string(),
            receiver,
            consumer.clone(),
            producer.clone(),
            dlq_topic.clone(),
            handler.clone(),
            shutdown.clone(),
        ));
    }
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            message = consumer.recv() => message,
        };
        match message {
            Ok(message) => {
                let lane = message.partition().unsigned_abs() as usize % senders.len();
                let sent = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    sent = senders[lane].send(message.detach()) => sent,
                };
                if sent.is_err() {
                    break;
                }
            }
            Err(error) => {
                warn!(consumer = name, %error, "consume failed");
                if !pause(Duration::from_millis(200), &shutdown).await {
                    break;
                }
            }
        }
    }
    drop(senders);
    while workers.join_next().await.is_some() {}
    info!(consumer = name, "consumer stopped");
}

/// Handles one lane's messages in order, storing each offset once its message is done.
async fn lane(
    name: String,
    mut messages: mpsc::Receiver<OwnedMessage>,
    consumer: Arc<StreamConsumer>,
    producer: FutureProducer,
    dlq_topic: String,
    handler: Arc<dyn MessageHandler>,
    shutdown: CancellationToken,
) {
    while let Some(message) = messages.recv().await {
        // After shutdown, queued messages stay unhandled (and uncommitted) for the next owner.
        if shutdown.is_cancelled() {
            break;
        }
        if !process(&message, &producer, &dlq_topic, handler.as_ref(), &shutdown).await {
            break;
        }
        let stored = consumer.store_offset(message.topic(), message.partition(), message.offset());
        if let Err(source) = stored {
            let error = kafka_error("store offset", message.topic(), source);
            warn!(consumer = %name, %error, "offset not stored; the message will come again");
        }
    }
}

/// Handles one message to the end (done or dead-lettered). Returns false when shutdown
/// interrupted it: the offset must not be stored then.
async fn process(
    message: &OwnedMessage,
    producer: &FutureProducer,
    dlq_topic: &str,
    handler: &dyn MessageHandler,
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = Duration::from_millis(50);
    let poison = loop {
        match handler.handle(message).await {
            Ok(()) => return true,
            Err(HandleError::Poison(reason)) => break reason,
            Err(HandleError::Infra(error)) if !error.is_retryable() => break error.to_string(),
            Err(HandleError::Infra(error)) => {
                warn!(%error, ?backoff, topic = message.topic(), offset = message.offset(),
                    "handling failed, retrying");
                if !pause(backoff, shutdown).await {
                    return false;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    let mut backoff = Duration::from_millis(100);
    while let Err(error) = dlq::send(producer, dlq_topic, message, &poison).await {
        warn!(%error, "dead-lettering failed, retrying");
        if !pause(backoff, shutdown).await {
            return false;
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
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
