//! The outbox relay: publishes outbox rows to Kafka, deletes them once acknowledged.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::{FromRow, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::ack::{settle, Delivery};
use super::NOTIFY_CHANNEL_PREFIX;
use crate::Result;

/// How a relay claims and waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// Rows claimed per transaction (default 500).
    pub batch_size: i64,
    /// Polling interval when no notification arrives (default 500 ms; a fallback, NOTIFY
    /// is the fast path). Also the pause after a failed batch.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// What one [`Relay::publish_batch`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Rows were claimed: `published` acknowledged and deleted, `set_aside` refused for
    /// good, `kept` left for a retry.
    Published {
        /// Rows acknowledged by the broker and deleted.
        published: usize,
        /// Rows the broker refused for good, moved to `outbox_set_aside`.
        set_aside: usize,
        /// Rows claimed but left in place (publish failed, or an earlier row of the same
        /// key is held by another relay).
        kept: usize,
    },
    /// Nothing to publish.
    Empty,
}

#[derive(Debug, FromRow)]
struct OutboxRow {
    id: i64,
    topic: String,
    key: String,
    payload: Value,
    headers: sqlx::types::Json<BTreeMap<String, String>>,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// Publishes a schema's outbox to Kafka. Any number of relays may run on the same outbox:
/// they claim disjoint rows with `FOR UPDATE SKIP LOCKED`, and a relay publishes a row only
/// when no earlier row of the same key is held elsewhere, so per-key order survives.
pub struct Relay {
    pool: PgPool,
    producer: FutureProducer,
    schema: String,
    settings: RelaySettings,
}

impl Relay {
    /// A relay draining the outbox of `schema` (the schema `pool` points at) into
    /// `producer`.
    pub fn new(
        pool: PgPool,
        producer: FutureProducer,
        schema: impl Into<String>,
        settings: RelaySettings,
    ) -> Self {
        Relay {
            pool,
            producer,
            schema: schema.into(),
            settings,
        }
    }

    /// Claims one batch, publishes it, waits for the acknowledgements and deletes the
    /// acknowledged rows, all in one transaction. A crash before the commit leaves every
    /// claimed row in place (it is published again: at least once).
    pub async fn publish_batch(&self) -> Result<BatchOutcome> {
        let mut tx = self.pool.begin().await?;
        let rows = claim(&mut tx, self.settings.batch_size).await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(BatchOutcome::Empty);
        }
        let deliveries = self.produce_all(&rows).await;
        let settled = settle(
            rows.iter()
                .zip(deliveries)
                .map(|(row, delivery)| (row.id, row.key.as_str(), delivery)),
        );
        for (id, error) in &settled.set_aside {
            set_aside(&mut tx, *id, error).await?;
        }
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
            .bind(&settled.published)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        for (id, error) in &settled.set_aside {
            let row = rows.iter().find(|row| row.id == *id);
            let topic = row.map_or("", |row| row.topic.as_str());
            warn!(
                outbox_id = id,
                topic, error, "outbox row refused by the broker for good; set aside"
            );
            crate::metrics::set_aside(topic);
        }
        let now = chrono::Utc::now();
        crate::metrics::relayed(
            rows.iter()
                .filter(|row| settled.published.contains(&row.id))
                .map(|row| (now - row.created_at).to_std().unwrap_or_default()),
        );
        let done = settled.published.len() + settled.set_aside.len();
        Ok(BatchOutcome::Published {
            published: settled.published.len(),
            set_aside: settled.set_aside.len(),
            kept: rows.len() - done,
        })
    }

    /// Enqueues every row with the producer in id order, then waits for each delivery
    /// report. Returns, per row, what the broker said.
    async fn produce_all(&self, rows: &[OutboxRow]) -> Vec<Delivery> {
        let mut pending = Vec::with_capacity(rows.len());
        for row in rows {
            let payload = row.payload.to_string();
            let mut headers = OwnedHeaders::new_with_capacity(row.headers.len());
            for (name, value) in row.headers.iter() {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
            let record = FutureRecord::to(&row.topic)
                .key(&row.key)
                .payload(&payload)
                .headers(headers);
            match self.producer.send_result(record) {
                Ok(delivery) => pending.push(Ok(delivery)),
                Err((error, _)) => pending.push(Err(error)),
            }
        }
        let mut deliveries = Vec::with_capacity(rows.len());
        for (row, delivery) in rows.iter().zip(pending) {
            let error = match delivery {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => {
                        deliveries.push(Delivery::Acknowledged);
                        continue;
                    }
                    Ok(Err((error, _))) => Some(error),
                    Err(_) => None,
                },
                Err(error) => Some(error),
            };
            let delivery = match error {
                Some(error) if refused(&error) => Delivery::Refused(error.to_string()),
                Some(error) => {
                    warn!(topic = %row.topic, outbox_id = row.id, %error, "publish failed; retrying later");
                    Delivery::Failed
                }
                None => Delivery::Failed,
            };
            deliveries.push(delivery);
        }
        deliveries
    }

    /// Publishes until `shutdown`: drains the outbox, then waits for a notification or the
    /// polling interval. Errors are logged and retried after a pause; they never stop it.
    pub async fn run(self, shutdown: CancellationToken) {
        let channel = format!("{NOTIFY_CHANNEL_PREFIX}{}", self.schema);
        let mut listener = match PgListener::connect_with(&self.pool).await {
            Ok(mut listener) => match listener.listen(&channel).await {
                Ok(()) => Some(listener),
                Err(error) => {
                    warn!(%error, "LISTEN failed; the relay polls only");
                    None
                }
            },
            Err(error) => {
                warn!(%error, "no listener connection; the relay polls only");
                None
            }
        };
        while !shutdown.is_cancelled() {
            match self.publish_batch().await {
                Ok(BatchOutcome::Published {
                    published,
                    set_aside,
                    kept,
                }) => {
                    debug!(published, set_aside, kept, "outbox batch");
                    if published + set_aside > 0 {
                        continue;
                    }
                }
                Ok(BatchOutcome::Empty) => {}
                Err(error) => warn!(%error, "outbox relay batch failed"),
            }
            let pause = self.settings.poll_interval;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wait_for_notification(listener.as_mut(), pause) => {}
            }
        }
    }
}

async fn wait_for_notification(listener: Option<&mut PgListener>, pause: Duration) {
    match listener {
        Some(listener) => {
            // A receive error means the connection dropped; the listener reconnects on the
            // next call, and the timeout bounds the wait either way.
            let _ = tokio::time::timeout(pause, listener.recv()).await;
        }
        None => tokio::time::sleep(pause).await,
    }
}

/// Whether the broker or client refused a message for good.
fn refused(error: &rdkafka::error::KafkaError) -> bool {
    match error {
        rdkafka::error::KafkaError::MessageProduction(code) => crate::error::is_refusal(*code),
        _ => false,
    }
}

/// Moves outbox row `id` to `outbox_set_aside` with `error`.
async fn set_aside(tx: &mut PgConnection, id: i64, error: &str) -> Result<()> {
    sqlx::query(
        "WITH moved AS (DELETE FROM outbox WHERE id = $1 RETURNING *)
         INSERT INTO outbox_set_aside (id, topic, key, payload, headers, created_at, error)
         SELECT id, topic, key, payload, headers, created_at, $2 FROM moved
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(error)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn claim(tx: &mut PgConnection, limit: i64) -> Result<Vec<OutboxRow>> {
    // Lock the oldest unclaimed rows, then drop any row whose key has an earlier row
    // outside this batch (held by another relay): publishing it now could overtake it.
    let rows = sqlx::query_as::<_, OutboxRow>(
        "WITH batch AS (
             SELECT id, key FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
         )
         SELECT o.id, o.topic, o.key, o.payload, o.headers, o.created_at
         FROM outbox o JOIN batch b ON o.id = b.id
         WHERE NOT EXISTS (
             SELECT 1 FROM outbox p
             WHERE p.key = b.key AND p.id < b.id AND p.id NOT IN (SELECT id FROM batch)
         )
         ORDER BY o.id",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows)
}
