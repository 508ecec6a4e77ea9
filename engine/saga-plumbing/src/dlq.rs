//! The dead-letter queue: where messages that cannot be processed go, with the reason.
//!
//! A poison message is first kept in the component's `dead_letters` table (where an
//! operator can list, replay or discard it), then copied to the DLQ topic with its key,
//! at most [`PAYLOAD_LIMIT`] bytes of its payload, and headers naming the error, the
//! original size and where it came from. Both copies are bounded, so a dead letter always
//! fits the broker. When the DLQ topic still refuses it after a few attempts, the row in
//! Postgres says so and the consumer moves on: one message never blocks a partition.
//! Each consumer counts what it dead-lettered in a [`DeadLetters`] its owner holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use sqlx::PgPool;
use tracing::{error, warn};

pub use schemas::headers::{
    DLQ_ERROR as ERROR_HEADER, DLQ_SOURCE_OFFSET as SOURCE_OFFSET_HEADER,
    DLQ_SOURCE_PARTITION as SOURCE_PARTITION_HEADER, DLQ_SOURCE_SIZE as SOURCE_SIZE_HEADER,
    DLQ_SOURCE_TOPIC as SOURCE_TOPIC_HEADER, DLQ_TRUNCATED as TRUNCATED_HEADER,
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

/// Payload bytes a dead letter keeps (in Postgres and on the DLQ topic); a longer payload
/// keeps this prefix, and the headers give the original size.
pub const PAYLOAD_LIMIT: usize = 64 * 1024;
/// Bytes of the error text a dead letter keeps.
pub const ERROR_LIMIT: usize = 2 * 1024;
/// Bytes of the original headers (names and values) a dead letter copies; later headers
/// are left out.
pub const COPIED_HEADERS_LIMIT: usize = 16 * 1024;
/// The most a dead letter can weigh: payload, error, copied and added headers.
pub const MAX_DEAD_LETTER_BYTES: usize = PAYLOAD_LIMIT + ERROR_LIMIT + COPIED_HEADERS_LIMIT + 1024;

/// The pause after a dead letter's first publish attempt failed for a passing reason; it
/// doubles per attempt, up to [`PUBLISH_MAX_BACKOFF`]. The caller of [`send`] (a consumer
/// lane) waits meanwhile; the message is already kept in Postgres.
pub const PUBLISH_FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between two publish attempts of one dead letter.
pub const PUBLISH_MAX_BACKOFF: Duration = Duration::from_secs(5);

// A dead letter fits what the producers send, with room to spare.
const _: () = assert!(MAX_DEAD_LETTER_BYTES < crate::kafka::PRODUCE_LIMIT_BYTES / 4);

/// Where poison messages go, and who counts them.
#[derive(Clone)]
pub struct DeadLetterQueue {
    /// The producer that writes to it.
    pub producer: FutureProducer,
    /// The DLQ topic.
    pub topic: String,
    /// The count this queue adds to.
    pub counter: DeadLetters,
    /// The pool whose schema has the `dead_letters` table.
    pub store: PgPool,
    /// Attempts at publishing to the DLQ topic before the row in Postgres is all there is.
    pub publish_attempts: u32,
    /// How long one attempt may wait for the broker's acknowledgement.
    pub publish_timeout: Duration,
}

impl std::fmt::Debug for DeadLetterQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterQueue")
            .field("topic", &self.topic)
            .field("counter", &self.counter)
            .field("publish_attempts", &self.publish_attempts)
            .field("publish_timeout", &self.publish_timeout)
            .finish_non_exhaustive()
    }
}

/// The longest prefix of `text` of at most `limit` bytes that ends on a character boundary.
fn prefix(text: &str, limit: usize) -> &str {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `text` without NUL characters, which Postgres cannot store.
fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// The original headers a dead letter copies: in order, while they fit
/// [`COPIED_HEADERS_LIMIT`].
fn copied_headers(message: &impl Message) -> Vec<(&str, Option<&[u8]>)> {
    let mut room = COPIED_HEADERS_LIMIT;
    let mut copied = Vec::new();
    if let Some(headers) = message.headers() {
        for header in headers.iter() {
            let size = header.key.len() + header.value.map_or(0, <[u8]>::len);
            if size > room {
                break;
            }
            room -= size;
            copied.push((header.key, header.value));
        }
    }
    copied
}

/// Keeps a copy of `message` in `dead_letters` (once per source position); returns its id.
async fn record(pool: &PgPool, message: &impl Message, error: &str) -> Result<i64> {
    let headers: serde_json::Map<String, serde_json::Value> = copied_headers(message)
        .into_iter()
        .map(|(key, value)| {
            let value = value.map(|v| storable(&String::from_utf8_lossy(v)));
            (storable(key), value.into())
        })
        .collect();
    let payload = message.payload();
    let size = payload.map_or(0, <[u8]>::len);
    let kept = payload.map(|p| &p[..size.min(PAYLOAD_LIMIT)]);
    let (id,): (i64,) = sqlx::query_as(
        r#"INSERT INTO dead_letters
               (topic, partition, "offset", key, headers, payload, payload_size, truncated, error)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (topic, partition, "offset") DO UPDATE SET error = EXCLUDED.error
           RETURNING id"#,
    )
    .bind(message.topic())
    .bind(message.partition())
    .bind(message.offset())
    .bind(message.key())
    .bind(serde_json::Value::Object(headers))
    .bind(kept)
    .bind(i32::try_from(size).unwrap_or(i32::MAX))
    .bind(size > PAYLOAD_LIMIT)
    .bind(storable(error))
    .fetch_one(pool)
    .await?;
    Ok(id)
}

/// Dead-letters `message` with `error`: keeps it in Postgres, then publishes a bounded copy
/// to the DLQ topic (up to `publish_attempts` tries, fewer when the broker refuses it for
/// good). Returns once the message is safely kept, so the caller may store its offset; an
/// error means Postgres could not keep it (retry: the message must not be skipped).
pub async fn send(dlq: &DeadLetterQueue, message: &impl Message, error: &str) -> Result<()> {
    let error = prefix(error, ERROR_LIMIT);
    let id = record(&dlq.store, message, error).await?;
    let mut backoff = PUBLISH_FIRST_BACKOFF;
    let mut attempt = 1;
    let outcome = loop {
        match publish(dlq, message, error).await {
            Ok(()) => break Ok(()),
            Err(failure) if failure.is_retryable() && attempt < dlq.publish_attempts.max(1) => {
                warn!(dlq = %dlq.topic, attempt, error = %failure, "dead letter not published yet, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(PUBLISH_MAX_BACKOFF);
                attempt += 1;
            }
            Err(failure) => break Err(failure),
        }
    };
    match outcome {
        Ok(()) => {
            sqlx::query("UPDATE dead_letters SET published_at = now() WHERE id = $1")
                .bind(id)
                .execute(&dlq.store)
                .await?;
            warn!(
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                dlq = %dlq.topic,
                error,
                "message dead-lettered"
            );
        }
        Err(failure) => {
            let publish_error = failure.to_string();
            sqlx::query("UPDATE dead_letters SET publish_error = $2 WHERE id = $1")
                .bind(id)
                .bind(&publish_error)
                .execute(&dlq.store)
                .await?;
            error!(
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                dlq = %dlq.topic,
                dead_letter_id = id,
                error,
                publish_error,
                "message kept in dead_letters only: the DLQ topic refused it; skipped"
            );
            crate::metrics::dead_letter_unpublished(message.topic());
        }
    }
    dlq.counter.add_one();
    crate::metrics::dead_lettered(message.topic(), error);
    Ok(())
}

/// Publishes the bounded copy of `message` and waits for the broker's acknowledgement.
async fn publish(dlq: &DeadLetterQueue, message: &impl Message, error: &str) -> Result<()> {
    let dlq_topic = dlq.topic.as_str();
    let payload = message.payload();
    let size = payload.map_or(0, <[u8]>::len);
    let partition = message.partition().to_string();
    let offset = message.offset().to_string();
    let size_text = size.to_string();
    let truncated = if size > PAYLOAD_LIMIT {
        "true"
    } else {
        "false"
    };
    let mut headers = OwnedHeaders::new();
    for (key, value) in copied_headers(message) {
        headers = headers.insert(Header { key, value });
    }
    let added = [
        (ERROR_HEADER, error),
        (SOURCE_TOPIC_HEADER, message.topic()),
        (SOURCE_PARTITION_HEADER, &partition),
        (SOURCE_OFFSET_HEADER, &offset),
        (SOURCE_SIZE_HEADER, &size_text),
        (TRUNCATED_HEADER, truncated),
    ];
    for (key, value) in added {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(dlq_topic).headers(headers);
    if let Some(key) = message.key() {
        record = record.key(&key[..key.len().min(PAYLOAD_LIMIT)]);
    }
    if let Some(payload) = payload {
        record = record.payload(&payload[..size.min(PAYLOAD_LIMIT)]);
    }
    let failed = |source| kafka_error("produce to dlq", dlq_topic, source);
    match tokio::time::timeout(
        dlq.publish_timeout,
        dlq.producer.send(record, dlq.publish_timeout),
    )
    .await
    {
        Ok(sent) => sent.map(|_| ()).map_err(|(source, _)| failed(source)),
        Err(_) => Err(failed(rdkafka::error::KafkaError::MessageProduction(
            rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_end_on_character_boundaries() {
        assert_eq!(prefix("héllo", 2), "h");
        assert_eq!(prefix("héllo", 3), "hé");
        assert_eq!(prefix("abc", 10), "abc");
    }
}
