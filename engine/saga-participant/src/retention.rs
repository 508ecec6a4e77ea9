//! Retention in a participant's schema: deletes old barrier rows, old dead letters and old
//! set-aside outbox rows in small batches, off the hot path.
//!
//! What expires is decided purely ([`cutoffs`]) from the settings and the database's clock;
//! [`sweep`] deletes it one batch per statement with a pause between batches; [`run`]
//! sweeps at start and then every interval until shutdown.
//!
//! A barrier row is what makes a redelivered command a duplicate and an undo that came
//! first a null compensation, so it must outlive every delivery of its command and of the
//! command's undo: [`RetentionSettings::barrier`] must be longer than the longest a saga
//! may wait, parked, for an operator to resume it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use saga_plumbing::retention::{self, Pace};
use saga_plumbing::Result;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long a participant keeps what it no longer needs, and how it deletes it.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionSettings {
    /// Time between two sweeps (default 5 min); a sweep also runs at start.
    pub interval: Duration,
    /// Rows one statement deletes (default 1,000), so no statement holds locks for long.
    pub batch_size: u32,
    /// Pause between two full batches (default 100 ms), leaving room for the hot path.
    pub batch_pause: Duration,
    /// Age of a barrier row after which its command, redelivered, would run again and its
    /// undo would be taken for a null compensation (default 30 days: longer than any
    /// redelivery, and a month for an operator to resume a parked saga).
    pub barrier: Duration,
    /// How long a dead letter is kept, open or discarded, counted from when it was
    /// dead-lettered (default 30 days).
    pub dead_letters: Duration,
    /// How long an outbox row (a reply) the broker refused for good is kept (default 30
    /// days).
    pub set_aside_outbox: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        const DAY: Duration = Duration::from_secs(24 * 60 * 60);
        RetentionSettings {
            interval: Duration::from_secs(5 * 60),
            batch_size: 1_000,
            batch_pause: Duration::from_millis(100),
            barrier: 30 * DAY,
            dead_letters: 30 * DAY,
            set_aside_outbox: 30 * DAY,
        }
    }
}

/// What a participant expires; each kind is deleted by its own statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `barrier` rows, by `created_at`.
    Barrier,
    /// `dead_letters` with their `dead_letter_actions`, by `dead_lettered_at`.
    DeadLetters,
    /// `outbox_set_aside` rows, by `set_aside_at`.
    SetAsideOutbox,
}

impl Kind {
    /// Its name in logs: `barrier`, `dead_letters`, `set_aside_outbox`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Barrier => "barrier",
            Kind::DeadLetters => "dead_letters",
            Kind::SetAsideOutbox => "set_aside_outbox",
        }
    }
}

/// Each kind with the moment before which its rows have expired, given the database's
/// `now`. A retention too long to represent expires nothing.
pub fn cutoffs(settings: &RetentionSettings, now: DateTime<Utc>) -> Vec<(Kind, DateTime<Utc>)> {
    [
        (Kind::Barrier, settings.barrier),
        (Kind::DeadLetters, settings.dead_letters),
        (Kind::SetAsideOutbox, settings.set_aside_outbox),
    ]
    .into_iter()
    .map(|(kind, keep)| (kind, retention::cutoff(now, keep)))
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

/// Deletes every expired row of every kind in `pool`'s schema (named `schema` in logs and
/// metrics), one batch per statement, pausing `settings.batch_pause` between full batches.
/// The clock is the database's.
pub async fn sweep(pool: &PgPool, schema: &str, settings: &RetentionSettings) -> Result<Swept> {
    let now = retention::database_now(pool).await?;
    let pace = Pace {
        batch_size: settings.batch_size,
        batch_pause: settings.batch_pause,
    };
    let limit = pace.limit();
    let mut swept = Swept::default();
    for (kind, before) in cutoffs(settings, now) {
        let deleted = &mut swept.deleted;
        let counted = |table, rows| crate::metrics::retention_deleted(schema, table, rows);
        let drained = match kind {
            Kind::Barrier => {
                retention::drain(pace, deleted, counted, || {
                    retention::delete_older(pool, "barrier", "created_at", before, limit)
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
            warn!(%schema, kind = kind.as_str(), %error,
                "retention: deleting expired rows failed");
            swept.failed.push((kind, error.to_string()));
        }
    }
    Ok(swept)
}

/// Sweeps at start and then every `settings.interval` until `shutdown` (which also stops a
/// sweep between two statements).
pub async fn run(
    pool: PgPool,
    schema: String,
    settings: RetentionSettings,
    shutdown: CancellationToken,
) {
    retention::every(settings.interval, shutdown, || async {
        match sweep(&pool, &schema, &settings).await {
            Ok(swept) if !swept.deleted.is_empty() => {
                info!(%schema, deleted = ?swept.deleted, "retention: expired rows deleted")
            }
            Ok(_) => {}
            Err(error) => warn!(%schema, %error, "retention sweep failed"),
        }
    })
    .await
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
            barrier: Duration::from_secs(60),
            dead_letters: Duration::from_secs(3_600),
            set_aside_outbox: Duration::from_secs(u64::MAX / 2),
            ..RetentionSettings::default()
        };
        let ago = |secs| now() - chrono::Duration::seconds(secs);
        assert_eq!(
            cutoffs(&settings, now()),
            [
                (Kind::Barrier, ago(60)),
                (Kind::DeadLetters, ago(3_600)),
                // Longer than time can say: nothing expires.
                (Kind::SetAsideOutbox, DateTime::<Utc>::MIN_UTC),
            ]
        );
    }

    #[test]
    fn defaults_keep_barrier_rows_dead_letters_and_set_aside_rows_a_month() {
        let month = Duration::from_secs(30 * 24 * 60 * 60);
        let defaults = RetentionSettings::default();
        assert_eq!(
            (
                defaults.barrier,
                defaults.dead_letters,
                defaults.set_aside_outbox
            ),
            (month, month, month)
        );
        assert_eq!(defaults.batch_size, 1_000);
    }
}
