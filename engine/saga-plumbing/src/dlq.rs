//! The dead-letter queue: where messages that cannot be processed go, with the reason.
//!
//! A poison message is copied to the DLQ topic with its original key and payload, and
//! headers naming the error and where it came from; then the consumer moves past it.
//! Each consumer counts what it dead-lettered in a [`DeadLetters`] its owner holds, and,
//! given a pool, keeps a copy in the component's `dead_letters` table, where an operator
//! can list, replay or discard it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use sqlx::PgPool;
use tracing::warn;

pub use schemas::headers::{
    DLQ_ERROR as ERROR_HEADER, DLQ_SOURCE_OFFSET as SOURCE_OFFSET_HEADER,
    DLQ_SOURCE_PARTITION as SOURCE_PARTITION_HEADER, DLQ_SOURCE_TOPIC as SOURCE_TOPIC_HEADER,
};

use crate::kafka::kafka_error;
use crate::Result;

/// How many messages some consumers sent to the DLQ. Clones share one count, so a
/// component hands a clone to each of its consumers and reads the total.
#[derive(Debug, Clone, Default)]
pub struct DeadLetters(Arc<AtomicU64>);

impl DeadLetters {
    /// Messages dead-lettered so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add_one(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Payload bytes kept in Postgres per dead letter; a longer payload keeps this prefix.
pub const STORED_PAYLOAD_LIMIT: usize = 64 * 1024;

/// Where poison messages go, and who counts them.
#[derive(Clone)]
pub struct DeadLetterQueue {
    /// The producer that writes to it.
    pub producer: FutureProducer,
    /// The DLQ topic.
    pub topic: String,
    /// The count this queue adds to.
    pub counter: DeadLetters,
    /// The pool whose schema has the `dead_letters` table, when copies are kept there.
    pub store: Option<PgPool>,
}

impl std::fmt::Debug for DeadLetterQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterQueue")
            .field("topic", &self.topic)
            .field("counter", &self.counter)
            .field("store", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

/// Keeps a copy of `message` in `dead_letters` (once per source position).
async fn record(pool: &PgPool, message: &impl Message, error: &str) -> Result<()> {
    let headers: serde_json::Map<String, serde_json::Value> = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| {
                    let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                    (h.key.to_string(), value.into())
                })
                .collect()
        })
        .unwrap_or_default();
    let payload = message.payload();
    let size = payload.map_or(0, <[u8]>::len);
    let kept = payload.map(|p| &p[..size.min(STORED_PAYLOAD_LIMIT)]);
    sqlx::query(
        r#"INSERT INTO dead_letters
               (topic, partition, "offset", key, headers, payload, payload_size, truncated, error)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (topic, partition, "offset") DO NOTHING"#,
    )
    .bind(message.topic())
    .bind(message.partition())
    .bind(message.offset())
    .bind(message.key())
    .bind(serde_json::Value::Object(headers))
    .bind(kept)
    .bind(i32::try_from(size).unwrap_or(i32::MAX))
    .bind(size > STORED_PAYLOAD_LIMIT)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Copies `message` to the DLQ with `error` in its headers and waits for the broker's
/// acknowledgement, so the caller may then store the message's offset.
pub async fn send(dlq: &DeadLetterQueue, message: &impl Message, error: &str) -> Result<()> {
    let dlq_topic = dlq.topic.as_str();
    warn!(
        topic = message.topic(),
        partition = message.partition(),
        offset = message.offset(),
        error,
        "message sent to the dead-letter queue"
    );
    if let Some(pool) = &dlq.store {
        record(pool, message, error).await?;
    }
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
    dlq.producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(source, _)| kafka_error("produce to dlq", dlq_topic, source))?;
    dlq.counter.add_one();
    crate::metrics::dead_lettered(message.topic(), error);
    Ok(())
}
