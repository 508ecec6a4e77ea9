//! What every retention sweep shares: deleting expired rows in small batches with a pause
//! between full ones, the tables every component has (dead letters, set-aside outbox rows),
//! and the loop that sweeps at start and then at an interval.
//!
//! The engine (`saga_engine::retention`) and the participants
//! (`saga_participant::retention`) decide what expires; this module deletes it.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::Result;

/// Rows one statement deleted, per table; the first is the kind's own table, whose count
/// says whether the batch was full (and another may follow).
pub type Batch = Vec<(&'static str, u64)>;

/// How a sweep deletes: `batch_size` rows per statement, `batch_pause` between full batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Rows of a kind's own table one statement deletes (at least 1).
    pub batch_size: u32,
    /// Pause between two full batches.
    pub batch_pause: Duration,
}

impl Pace {
    /// The `LIMIT` of one statement.
    pub fn limit(self) -> i64 {
        i64::from(self.batch_size.max(1))
    }
}

/// `now - keep`, or the earliest representable moment when `keep` is longer than that (a
/// retention too long to say expires nothing).
pub fn cutoff(now: DateTime<Utc>, keep: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(keep)
        .ok()
        .and_then(|keep| now.checked_sub_signed(keep))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The database's clock, which every cutoff is taken from.
pub async fn database_now(pool: &PgPool) -> Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar("SELECT now()").fetch_one(pool).await?)
}

/// Runs `batch` until it deletes less than a full batch, adding what each statement deleted
/// to `deleted` and telling `counted` (for a metric) about every table with rows deleted.
pub async fn drain<F, Fut>(
    pace: Pace,
    deleted: &mut BTreeMap<&'static str, u64>,
    mut counted: impl FnMut(&'static str, u64),
    mut batch: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Batch>>,
{
    loop {
        let rows = batch().await?;
        for (table, count) in &rows {
            if *count > 0 {
                *deleted.entry(table).or_default() += count;
                counted(table, *count);
            }
        }
        let full = rows
            .first()
            .is_some_and(|(_, count)| *count >= u64::from(pace.batch_size.max(1)));
        if !full {
            return Ok(());
        }
        tokio::time::sleep(pace.batch_pause).await;
    }
}

/// Deletes up to `limit` rows of `table` whose `column` is before `before`. Both names are
/// the caller's constants, never input.
pub async fn delete_older(
    pool: &PgPool,
    table: &'static str,
    column: &'static str,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Batch> {
    let statement = format!(
        "DELETE FROM {table} WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM {table} WHERE {column} < $1 LIMIT $2))"
    );
    let done = sqlx::query(&statement)
        .bind(before)
        .bind(limit)
        .execute(pool)
        .await?;
    Ok(vec![(table, done.rows_affected())])
}

/// Deletes up to `limit` dead letters dead-lettered before `before`, with their actions
/// (letters another sweep holds are skipped).
pub async fn delete_dead_letters(
    pool: &PgPool,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Batch> {
    let (letters, actions): (i64, i64) = sqlx::query_as(
        "WITH doomed AS (
             SELECT id FROM dead_letters WHERE dead_lettered_at < $1
             LIMIT $2 FOR UPDATE SKIP LOCKED),
         gone_actions AS (
             DELETE FROM dead_letter_actions a USING doomed
             WHERE a.dead_letter_id = doomed.id RETURNING 1),
         gone_letters AS (
             DELETE FROM dead_letters l USING doomed WHERE l.id = doomed.id RETURNING 1)
         SELECT (SELECT count(*) FROM gone_letters), (SELECT count(*) FROM gone_actions)",
    )
    .bind(before)
    .bind(limit)
    .fetch_one(pool)
    .await?;
    Ok(vec![
        ("dead_letters", letters as u64),
        ("dead_letter_actions", actions as u64),
    ])
}

/// Deletes up to `limit` outbox rows set aside before `before`.
pub async fn delete_set_aside(pool: &PgPool, before: DateTime<Utc>, limit: i64) -> Result<Batch> {
    delete_older(pool, "outbox_set_aside", "set_aside_at", before, limit).await
}

/// Calls `sweep` at start and then every `interval` until `shutdown`, which also stops a
/// sweep under way (between two statements).
pub async fn every<F, Fut>(interval: Duration, shutdown: CancellationToken, mut sweep: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sweep() => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_cutoff_is_now_minus_the_retention_or_the_dawn_of_time() {
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
        assert_eq!(
            cutoff(now, Duration::from_secs(60)),
            now - chrono::Duration::seconds(60)
        );
        assert_eq!(
            cutoff(now, Duration::from_secs(u64::MAX / 2)),
            DateTime::<Utc>::MIN_UTC
        );
    }

    #[tokio::test]
    async fn draining_stops_after_the_first_batch_that_is_not_full() {
        let pace = Pace {
            batch_size: 10,
            batch_pause: Duration::ZERO,
        };
        let mut left = [10u64, 10, 4, 0].into_iter();
        let mut deleted = BTreeMap::new();
        let mut counted = Vec::new();
        drain(
            pace,
            &mut deleted,
            |table, rows| counted.push((table, rows)),
            || {
                let rows = left.next().unwrap();
                async move { Ok(vec![("inbox", rows), ("other", 1)]) }
            },
        )
        .await
        .unwrap();
        assert_eq!(deleted.get("inbox"), Some(&24));
        assert_eq!(deleted.get("other"), Some(&3));
        assert_eq!(counted.len(), 6);
        assert_eq!(left.next(), Some(0), "the empty batch was never asked for");
    }
}
