//! Retention: deletes what the engine no longer needs — old inbox rows, ended sagas (events,
//! projection row, leftover timers), old dead letters and old set-aside outbox rows — in
//! small batches, off the hot path.
//!
//! What expires is decided purely ([`cutoffs`], [`ended_statuses`]) from the settings and
//! the database's clock; [`sweep`] deletes it one batch per statement with a pause between
//! batches; [`run`] sweeps at start and then every interval until shutdown. Several engine
//! processes may sweep at once: sagas and dead letters are claimed with `SKIP LOCKED`, and
//! the other deletes touch each row once.
//!
//! A saga is deleted only when its status is terminal ([`SagaStatus::is_terminal`]) and it
//! has not changed for [`RetentionSettings::ended_sagas`]: running, compensating and parked
//! sagas, and their timers, are never touched. The saga row is what deduplicates a trigger
//! (its id derives from the idempotency key), so that retention is also how long a re-sent
//! trigger stays a duplicate.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use saga_core::SagaStatus;
use saga_plumbing::retention::{self, cutoff, Batch, Pace};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Result;

/// How long the engine keeps what it no longer needs, and how it deletes it.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionSettings {
    /// Time between two sweeps (default 5 min); a sweep also runs at start.
    pub interval: Duration,
    /// Rows (for ended sagas: sagas, with their events) one statement deletes (default
    /// 1,000), so no statement holds locks for long.
    pub batch_size: u32,
    /// Pause between two full batches (default 100 ms), leaving room for the hot path.
    pub batch_pause: Duration,
    /// Age of an inbox row (consumed message or operator request id) after which a
    /// redelivery of it is no longer recognised (default 7 days: Kafka's default topic
    /// retention, so a message cannot outlive its inbox row on a default topic).
    pub inbox: Duration,
    /// How long a saga stays after it ended — completed, compensated or resolved by hand —
    /// with its events (default 30 days). This is the trigger deduplication window: a
    /// trigger re-sent later starts a new saga.
    pub ended_sagas: Duration,
    /// How long a dead letter is kept, open or discarded, counted from when it was
    /// dead-lettered (default 30 days).
    pub dead_letters: Duration,
    /// How long an outbox row the broker refused for good is kept (default 30 days).
    pub set_aside_outbox: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        const DAY: Duration = Duration::from_secs(24 * 60 * 60);
        RetentionSettings {
            interval: Duration::from_secs(5 * 60),
            batch_size: 1_000,
            batch_pause: Duration::from_millis(100),
            inbox: 7 * DAY,
            ended_sagas: 30 * DAY,
            dead_letters: 30 * DAY,
            set_aside_outbox: 30 * DAY,
        }
    }
}

/// What the engine expires; each kind is deleted by its own statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `inbox` rows, by `received_at`.
    Inbox,
    /// Ended sagas: their `sagas` row, `saga_events` and any `timers`, by `updated_at`.
    EndedSagas,
    /// `dead_letters` with their `dead_letter_actions`, by `dead_lettered_at`.
    DeadLetters,
    /// `outbox_set_aside` rows, by `set_aside_at`.
    SetAsideOutbox,
}

impl Kind {
    /// Its name in logs: `inbox`, `ended_sagas`, `dead_letters`, `set_aside_outbox`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Inbox => "inbox",
            Kind::EndedSagas => "ended_sagas",
            Kind::DeadLetters => "dead_letters",
            Kind::SetAsideOutbox => "set_aside_outbox",
        }
    }
}

/// Each kind with the moment before which its rows have expired, given the database's
/// `now`. A retention too long to represent expires nothing.
pub fn cutoffs(settings: &RetentionSettings, now: DateTime<Utc>) -> Vec<(Kind, DateTime<Utc>)> {
    [
        (Kind::Inbox, settings.inbox),
        (Kind::EndedSagas, settings.ended_sagas),
        (Kind::DeadLetters, settings.dead_letters),
        (Kind::SetAsideOutbox, settings.set_aside_outbox),
    ]
    .into_iter()
    .map(|(kind, keep)| (kind, cutoff(now, keep)))
    .collect()
}

/// The stored statuses of sagas that have ended and may be deleted.
pub fn ended_statuses() -> Vec<&'static str> {
    SagaStatus::all()
        .filter(|status| status.is_terminal())
        .map(SagaStatus::as_str)
        .collect()
}

/// Rows one retention pass deleted, per table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Rows deleted, by table name (tables with none deleted are absent).
    pub deleted: BTreeMap<&'static str, u64>,
    /// Kinds whose deletion failed, with the error; the other kinds went on.
    pub failed: Vec<(Kind, String)>,
}

impl Swept {
    /// Rows deleted from `table`.
    pub fn from(&self, table: &str) -> u64 {
        self.deleted.get(table).copied().unwrap_or(0)
    }
}

/// Deletes every expired row of every kind, one batch per statement, pausing
/// `settings.batch_pause` between full batches. The clock is the database's.
pub async fn sweep(pool: &PgPool, settings: &RetentionSettings) -> Result<Swept> {
    let now = retention::database_now(pool).await?;
    let pace = Pace {
        batch_size: settings.batch_size,
        batch_pause: settings.batch_pause,
    };
    let limit = pace.limit();
    let ended = ended_statuses();
    let mut swept = Swept::default();
    for (kind, before) in cutoffs(settings, now) {
        let deleted = &mut swept.deleted;
        let counted = crate::metrics::retention_deleted;
        let drained = match kind {
            Kind::Inbox => {
                retention::drain(pace, deleted, counted, || {
                    retention::delete_older(pool, "inbox", "received_at", before, limit)
                })
                .await
            }
            Kind::EndedSagas => {
                retention::drain(pace, deleted, counted, || {
                    delete_ended_sagas(pool, &ended, before, limit)
                })
                .await
            }
            Kind::DeadLetters => {
                retention::drain(pace, deleted, counted, || {
                    retention::delete_dead_letters(pool, before, limit)
                })
                .await
            }
            Kind::SetAsideOutbox => {
                retention::drain(pace, deleted, counted, || {
                    retention::delete_set_aside(pool, before, limit)
                })
                .await
            }
        };
        if let Err(error) = drained {
            warn!(kind = kind.as_str(), %error, "retention: deleting expired rows failed");
            swept.failed.push((kind, error.to_string()));
        }
    }
    Ok(swept)
}

/// Sweeps at start and then every `settings.interval` until `shutdown` (which also stops a
/// sweep between two statements).
pub async fn run(pool: PgPool, settings: RetentionSettings, shutdown: CancellationToken) {
    retention::every(settings.interval, shutdown, || async {
        match sweep(&pool, &settings).await {
            Ok(swept) if !swept.deleted.is_empty() => {
                info!(deleted = ?swept.deleted, "retention: expired rows deleted")
            }
            Ok(_) => {}
            Err(error) => warn!(%error, "retention sweep failed"),
        }
    })
    .await
}

async fn delete_ended_sagas(
    pool: &PgPool,
    ended: &[&str],
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Batch> {
    // A saga whose row a transition holds is skipped (SKIP LOCKED), not waited for.
    let (sagas, events, timers): (i64, i64, i64) = sqlx::query_as(
        "WITH doomed AS (
             SELECT id FROM sagas WHERE status = ANY($1) AND updated_at < $2
             LIMIT $3 FOR UPDATE SKIP LOCKED),
         gone_events AS (
             DELETE FROM saga_events e USING doomed WHERE e.saga_id = doomed.id RETURNING 1),
         gone_timers AS (
             DELETE FROM timers t USING doomed WHERE t.saga_id = doomed.id RETURNING 1),
         gone_sagas AS (
             DELETE FROM sagas s USING doomed WHERE s.id = doomed.id RETURNING 1)
         SELECT (SELECT count(*) FROM gone_sagas), (SELECT count(*) FROM gone_events),
                (SELECT count(*) FROM gone_timers)",
    )
    .bind(ended)
    .bind(before)
    .bind(limit)
    .fetch_one(pool)
    .await?;
    Ok(vec![
        ("sagas", sagas as u64),
        ("saga_events", events as u64),
        ("timers", timers as u64),
    ])
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
    }

    #[test]
    fn each_kind_expires_at_now_minus_its_own_retention() {
        let settings = RetentionSettings {
            inbox: Duration::from_secs(60),
            ended_sagas: Duration::from_secs(3_600),
            dead_letters: Duration::from_secs(7_200),
            set_aside_outbox: Duration::from_secs(86_400),
            ..RetentionSettings::default()
        };
        let ago = |secs| now() - chrono::Duration::seconds(secs);
        assert_eq!(
            cutoffs(&settings, now()),
            [
                (Kind::Inbox, ago(60)),
                (Kind::EndedSagas, ago(3_600)),
                (Kind::DeadLetters, ago(7_200)),
                (Kind::SetAsideOutbox, ago(86_400)),
            ]
        );
    }

    #[test]
    fn defaults_keep_the_inbox_a_week_and_the_rest_a_month() {
        let days = |d: u64| Duration::from_secs(d * 24 * 60 * 60);
        let defaults = RetentionSettings::default();
        assert_eq!(defaults.inbox, days(7));
        assert_eq!(defaults.ended_sagas, days(30));
        assert_eq!(defaults.dead_letters, days(30));
        assert_eq!(defaults.set_aside_outbox, days(30));
        assert_eq!(defaults.batch_size, 1_000);
    }

    #[test]
    fn an_endless_retention_expires_nothing() {
        let forever = Duration::from_secs(u64::MAX / 2);
        assert_eq!(cutoff(now(), forever), DateTime::<Utc>::MIN_UTC);
        assert_eq!(cutoff(now(), Duration::ZERO), now());
    }

    #[test]
    fn only_ended_sagas_may_be_deleted() {
        assert_eq!(
            ended_statuses(),
            ["completed", "compensated", "resolved_manually"]
        );
        for live in [
            SagaStatus::Running,
            SagaStatus::Compensating,
            SagaStatus::Parked,
        ] {
            assert!(!ended_statuses().contains(&live.as_str()), "{live}");
        }
    }

    #[test]
    fn kinds_are_named_for_logs() {
        assert_eq!(Kind::EndedSagas.as_str(), "ended_sagas");
        assert_eq!(Kind::SetAsideOutbox.as_str(), "set_aside_outbox");
    }
}
