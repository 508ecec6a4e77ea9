//! The dead-letter queue: where messages that cannot be processed go, with the reason.
//!
//! A poison message is copied to the DLQ topic with its original key and payload, and
//! headers naming the error and where it came from; then the consumer moves past it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use tracing::warn;

use crate::kafka::kafka_error;
use crate::Result;

/// Header carrying the error text.
pub const ERROR_HEADER: &str = "dlq.error";
/// Header carrying the topic the message was consumed from.
pub const SOURCE_TOPIC_HEADER: &str = "dlq.source.topic";
/// Header carrying the partition the message was consumed from.
pub const SOURCE_PARTITION_HEADER: &str = "dlq.source.partition";
/// Header carrying the offset the message was consumed from.
pub const SOURCE_OFFSET_HEADER: &str = "dlq.source.offset";

static DEAD_LETTERED: AtomicU64 = AtomicU64::new(0);

/// Messages this process has sent to a DLQ since it started.
pub fn dead_lettered() -> u64 {
    DEAD_LETTERED.load(Ordering::Relaxed)
}

/// Copies `message` to `dlq_topic` with `error` in its headers and waits for the broker's
/// acknowledgement, so the caller may then store the message's offset.
pub async fn send(
    producer: &FutureProducer,
    dlq_topic: &str,
    message: &impl Message,
    error: &str,
) -> Result<()> {
    warn!(
        topic = message.topic(),
        partition = message.partition(),
        offset = message.offset(),
        error,
        "message sent to the dead-letter queue"
    );
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    let mut headers = OwnedHeaders::new();
    if let Some(original) = message.headers() {
        for header in original.iter() {
            headers = headers.insert(Header {
                key: header.key,
                value: header.value,
            });
        }
    }
    let headers = headers
        .insert(Header {
            key: ERROR_HEADER,
            value: Some(error),
        })
        .insert(Header {
            key: SOURCE_TOPIC_HEADER,
            value: Some(message.topic()),
        })
        .insert(Header {
            key: SOURCE_PARTITION_HEADER,
            value: Some(&partition),
        })
        .insert(Header {
            key: SOURCE_OFFSET_HEADER,
            value: Some(&offset),
        });
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(dlq_topic).headers(headers);
    if let Some(key) = message.key() {
        record = record.key(key);
    }
    if let Some(payload) = message.payload() {
        record = record.payload(payload);
    }
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(source, _)| kafka_error("produce to dlq", dlq_topic, source))?;
    DEAD_LETTERED.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
