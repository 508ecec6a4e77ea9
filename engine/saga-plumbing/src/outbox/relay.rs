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
    /// is the fast path). Also the first pause after a batch that published nothing
    /// because the broker or the database failed.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The longest pause between failing batches (default 10 s): each batch in a row that
    /// publishes nothing doubles the pause, up to this; notifications do not cut it short.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
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
        /// Rows claimed but left in place: their publish failed, or an earlier row of the
        /// same key in the batch did.
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
        let failed: Vec<_> = deliveries
            .iter()
            .filter_map(|d| d.failure.as_deref())
            .collect();
        if let Some(first) = failed.first() {
            warn!(
                failed = failed.len(),
                claimed = rows.len(),
                error = first,
                "publishing outbox rows failed; they stay and go again after a pause"
            );
            crate::metrics::publish_failed(failed.len());
        }
        let settled = settle(
            rows.iter()
                .zip(deliveries)
                .map(|(row, sent)| (row.id, row.key.as_str(), sent.delivery)),
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
    async fn produce_all(&self, rows: &[OutboxRow]) -> Vec<Sent> {
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
        let mut sent = Vec::with_capacity(rows.len());
        for (row, delivery) in rows.iter().zip(pending) {
            let error = match delivery {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => {
                        sent.push(Sent::acknowledged());
                        continue;
                    }
                    Ok(Err((error, _))) => Some(error),
                    Err(_) => None,
                },
                Err(error) => Some(error),
            };
            sent.push(match error {
                Some(error) if refused(&error) => Sent::refused(error.to_string()),
                Some(error) => {
                    debug!(topic = %row.topic, outbox_id = row.id, %error, "publish failed");
                    Sent::failed(error.to_string())
                }
                None => Sent::failed("the producer dropped the delivery report".into()),
            });
        }
        sent
    }

    /// Publishes until `shutdown`: drains the outbox, then waits for a notification or the
    /// polling interval. A batch that publishes nothing because the broker or the database
    /// failed is logged once and followed by a pause that doubles while it goes on (see
    /// [`RelaySettings::max_backoff`]); errors never stop it. Returns what it did.
    pub async fn run(self, shutdown: CancellationToken) -> RelayStats {
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
        let woken = super::wake::register();
        let mut stats = RelayStats::default();
        let mut backoff = None;
        while !shutdown.is_cancelled() {
            let outcome = self.publish_batch().await;
            stats.batches += 1;
            let mut full = false;
            let progress = match outcome {
                Ok(BatchOutcome::Published {
                    published,
                    set_aside,
                    kept,
                }) => {
                    debug!(published, set_aside, kept, "outbox batch");
                    full = (published + set_aside + kept) as i64 >= self.settings.batch_size;
                    Progress::of(published + set_aside, kept)
                }
                Ok(BatchOutcome::Empty) => Progress::Idle,
                Err(error) => {
                    warn!(%error, "outbox relay batch failed; retrying after a pause");
                    Progress::Stalled
                }
            };
            backoff = next_backoff(backoff, progress, &self.settings);
            match (progress, backoff) {
                // More may be waiting right away. After a partial batch, the rows committed
                // since it was claimed have notified the listener, so it wakes at once.
                (Progress::Moved, _) if full || listener.is_none() => continue,
                (_, Some(pause)) => {
                    stats.stalled_batches += 1;
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                (_, None) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = woken.notified() => {}
                        _ = wait_for_notification(listener.as_mut(), self.settings.poll_interval) => {}
                    }
                }
            }
        }
        stats
    }
}

/// What a relay did until it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Batches it tried.
    pub batches: u64,
    /// Batches that published nothing because the broker or the database failed (each
    /// followed by a backoff pause).
    pub stalled_batches: u64,
}

/// What one batch did, as far as pacing the next one goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Rows left the outbox: go on at once.
    Moved,
    /// Nothing to do: wait for a notification.
    Idle,
    /// Rows were there but none could leave: back off.
    Stalled,
}

impl Progress {
    fn of(done: usize, kept: usize) -> Progress {
        match (done, kept) {
            (0, 0) => Progress::Idle,
            (0, _) => Progress::Stalled,
            _ => Progress::Moved,
        }
    }
}

/// The pause before the next batch after one with `progress`, given the pause before it
/// (`None` when it was not a backoff): stalled batches in a row wait from `poll_interval`
/// doubling up to `max_backoff`; any other batch ends the backoff.
fn next_backoff(
    previous: Option<Duration>,
    progress: Progress,
    settings: &RelaySettings,
) -> Option<Duration> {
    match progress {
        Progress::Stalled => Some(match previous {
            None => settings.poll_interval,
            Some(pause) => pause.saturating_mul(2).min(settings.max_backoff),
        }),
        Progress::Moved | Progress::Idle => None,
    }
}

/// What the broker said about one row, with the error of a failed publish.
struct Sent {
    delivery: Delivery,
    failure: Option<String>,
}

impl Sent {
    fn acknowledged() -> Self {
        Sent {
            delivery: Delivery::Acknowledged,
            failure: None,
        }
    }

    fn refused(error: String) -> Self {
        Sent {
            delivery: Delivery::Refused(error),
            failure: None,
        }
    }

    fn failed(error: String) -> Self {
        Sent {
            delivery: Delivery::Failed,
            failure: Some(error),
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
    // That check is a scalar subquery per claimed row (an `outbox_key_id` probe), so the
    // cost follows the batch, never the table's size or its statistics.
    let rows = sqlx::query_as::<_, OutboxRow>(
        "WITH batch AS MATERIALIZED (
             SELECT id, topic, key, payload, headers, created_at FROM outbox
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
         ), claimed AS (
             SELECT array_agg(id) AS ids FROM batch
         )
         SELECT b.id, b.topic, b.key, b.payload, b.headers, b.created_at
         FROM batch b, claimed c
         WHERE (SELECT p.id FROM outbox p
                WHERE p.key = b.key AND p.id < b.id AND p.id <> ALL (c.ids)
                LIMIT 1) IS NULL
         ORDER BY b.id",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalled_batches_in_a_row_back_off_doubling_up_to_the_limit() {
        let settings = RelaySettings::default();
        let mut pause = None;
        let mut pauses = Vec::new();
        for _ in 0..7 {
            pause = next_backoff(pause, Progress::Stalled, &settings);
            pauses.push(pause.unwrap().as_millis());
        }
        assert_eq!(pauses, [500, 1000, 2000, 4000, 8000, 10000, 10000]);
    }

    #[test]
    fn a_batch_that_moves_rows_or_finds_none_ends_the_backoff() {
        let settings = RelaySettings::default();
        let long = Some(Duration::from_secs(8));
        assert_eq!(next_backoff(long, Progress::Moved, &settings), None);
        assert_eq!(next_backoff(long, Progress::Idle, &settings), None);
    }

    #[test]
    fn a_batch_is_stalled_only_when_rows_stayed_and_none_left() {
        assert_eq!(Progress::of(0, 3), Progress::Stalled);
        assert_eq!(Progress::of(1, 3), Progress::Moved);
        assert_eq!(Progress::of(0, 0), Progress::Idle);
    }
}
