//! The transactional outbox.
//!
//! A component writes the messages it wants to send into its `outbox` table in the same
//! transaction as its state change ([`enqueue`]); the [`Relay`] publishes them to Kafka and
//! deletes them once the broker acknowledged them. Delivery is at least once: consumers
//! deduplicate (inbox, barrier).

mod ack;
mod relay;
pub mod wake;

use std::collections::BTreeMap;

use schemas::Envelope;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;

pub use relay::{BatchOutcome, Relay, RelaySettings, RelayStats};

use crate::Result;

/// Prefix of the NOTIFY channel an outbox announces new rows on; the schema name follows.
/// (The `outbox_inserted` trigger of the migrations sends it.)
pub const NOTIFY_CHANNEL_PREFIX: &str = "outbox_";

/// A message waiting to be published.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    /// Destination topic.
    pub topic: String,
    /// Kafka key: messages with the same key are published in enqueue order.
    pub key: String,
    /// JSON body.
    pub payload: Value,
    /// Kafka headers.
    pub headers: BTreeMap<String, String>,
}

impl OutboxMessage {
    /// `envelope` for `topic`, keyed by `key`.
    pub fn envelope<P: Serialize>(
        topic: impl Into<String>,
        key: impl Into<String>,
        envelope: &Envelope<P>,
    ) -> Result<Self> {
        Ok(OutboxMessage {
            topic: topic.into(),
            key: key.into(),
            payload: serde_json::to_value(envelope)?,
            headers: BTreeMap::new(),
        })
    }

    /// The same message with header `name` set to `value`.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}

/// Adds `messages` to the outbox of the connection's schema inside the caller's
/// transaction, and wakes the relays listening on it when the transaction commits (unless
/// the transaction was made [`wake::quiet`]: its writer wakes them).
pub async fn enqueue(tx: &mut PgConnection, messages: &[OutboxMessage]) -> Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let topics: Vec<&str> = messages.iter().map(|m| m.topic.as_str()).collect();
    let keys: Vec<&str> = messages.iter().map(|m| m.key.as_str()).collect();
    let payloads: Vec<&Value> = messages.iter().map(|m| &m.payload).collect();
    let headers: Vec<Value> = messages
        .iter()
        .map(|m| serde_json::to_value(&m.headers))
        .collect::<Result<_, _>>()?;
    sqlx::query(
        "INSERT INTO outbox (topic, key, payload, headers)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::jsonb[], $4::jsonb[])",
    )
    .bind(&topics)
    .bind(&keys)
    .bind(&payloads)
    .bind(&headers)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Number of messages waiting in the outbox of the connection's schema.
pub async fn backlog(conn: &mut PgConnection) -> Result<i64> {
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox")
        .fetch_one(&mut *conn)
        .await?;
    Ok(count)
}
