//! The consumer loop every Kafka input shares: handle a message, retry infrastructure
//! errors with backoff, send poison messages to the DLQ, and store the offset only after
//! the message's effect is committed (or it was dead-lettered).

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, OwnedMessage};
use rdkafka::producer::FutureProducer;
use rdkafka::Message;
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

/// Consumes until `shutdown`, one message at a time, with `handler`.
pub async fn run(
    name: &str,
    consumer: StreamConsumer,
    producer: FutureProducer,
    dlq_topic: String,
    handler: &dyn MessageHandler,
    shutdown: CancellationToken,
) {
    info!(consumer = name, "consumer started");
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            message = consumer.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                warn!(consumer = name, %error, "consume failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if !process(&message, &producer, &dlq_topic, handler, &shutdown).await {
            break;
        }
        if let Err(source) = consumer.store_offset_from_message(&message) {
            let error = kafka_error("store offset", message.topic(), source);
            warn!(consumer = name, %error, "offset not stored; the message will come again");
        }
    }
    info!(consumer = name, "consumer stopped");
}

/// Handles one message to the end (done or dead-lettered). Returns false when shutdown
/// interrupted it: the offset must not be stored then.
async fn process(
    message: &BorrowedMessage<'_>,
    producer: &FutureProducer,
    dlq_topic: &str,
    handler: &dyn MessageHandler,
    shutdown: &CancellationToken,
) -> bool {
    let owned = message.detach();
    let mut backoff = Duration::from_millis(50);
    let poison = loop {
        match handler.handle(&owned).await {
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
