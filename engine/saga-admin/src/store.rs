//! The SQL the admin routes run against the engine schema: reads, and the writes of the
//! dead-letter actions (their audit records and discards). Operator actions on sagas go
//! through the engine's transitions, not through here.

use chrono::{DateTime, Utc};
use saga_core::{SagaStatus, TimerKind};
use saga_engine::store::{RecordedEvent, SagaRow, SAGA_COLUMNS};
use schemas::Phase;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::query::SagaFilter;
use crate::views::{OldestRunning, OutboxStats, StatusCount, TimerView};

/// One page of sagas matching `filter`, newest first; one more row than the limit tells
/// whether another page follows.
pub async fn list_sagas(pool: &PgPool, filter: &SagaFilter) -> sqlx::Result<Vec<SagaRow>> {
    let mut query: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE true"));
    if !filter.statuses.is_empty() {
        let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
        query
            .push(" AND status = ANY(")
            .push_bind(statuses)
            .push(")");
    }
    if let Some(definition) = &filter.definition {
        query
            .push(" AND definition = ")
            .push_bind(definition.clone());
    }
    if let Some(version) = filter.version {
        query.push(" AND definition_version = ").push_bind(version);
    }
    if let Some(step) = &filter.step {
        query.push(" AND step = ").push_bind(step.clone());
    }
    let times = [
        ("created_at >= ", filter.created_after),
        ("created_at < ", filter.created_before),
        ("updated_at >= ", filter.updated_after),
        ("updated_at < ", filter.updated_before),
    ];
    for (condition, time) in times {
        if let Some(time) = time {
            query.push(" AND ").push(condition).push_bind(time);
        }
    }
    if let Some(after) = filter.after {
        query
            .push(" AND (created_at, id) < (")
            .push_bind(after.created_at)
            .push(", ")
            .push_bind(after.id)
            .push(")");
    }
    query
        .push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(i64::from(filter.limit) + 1);
    query.build_query_as().fetch_all(pool).await
}

/// One saga's row.
pub async fn saga(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<SagaRow>> {
    sqlx::query_as(&format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// One saga's events, oldest first.
pub async fn events(pool: &PgPool, id: Uuid) -> sqlx::Result<Vec<RecordedEvent>> {
    sqlx::query_as(
        "SELECT saga_id, seq, event_type, data, recorded_at FROM saga_events
         WHERE saga_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}

/// A stored name that none of its enum's values has: the row cannot be read (an error
/// for the request, not a panic).
fn unknown_name(column: &str, problem: String) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: column.into(),
        source: problem.into(),
    }
}

/// A timer row: step, kind, phase (none for the saga's deadline), attempt and `fire_at`
/// (empty until its command is acknowledged).
type TimerRow = (String, String, Option<String>, i32, Option<DateTime<Utc>>);

/// One saga's timers.
pub async fn timers(pool: &PgPool, id: Uuid) -> sqlx::Result<Vec<TimerView>> {
    let rows: Vec<TimerRow> = sqlx::query_as(
        "SELECT step, kind, phase, attempt, fire_at FROM timers WHERE saga_id = $1
         ORDER BY fire_at NULLS LAST",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(timer_view).collect()
}

/// Reads a timer row through [`TimerKind`] and [`Phase`]; the view shows no phase as `""`.
fn timer_view((step, kind, phase, attempt, fire_at): TimerRow) -> sqlx::Result<TimerView> {
    let kind = TimerKind::try_from(kind).map_err(|e| unknown_name("kind", e))?;
    let phase = phase
        .map(Phase::try_from)
        .transpose()
        .map_err(|e| unknown_name("phase", e))?;
    Ok(TimerView {
        step,
        kind,
        phase: phase.map_or("", Phase::as_str).to_string(),
        attempt,
        fire_at,
    })
}

/// Counts per definition and status.
pub async fn status_counts(pool: &PgPool) -> sqlx::Result<Vec<StatusCount>> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT definition, status, count(*) FROM sagas GROUP BY definition, status
         ORDER BY definition, status",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(status_count).collect()
}

/// Reads a count row through [`SagaStatus`].
fn status_count((definition, status, count): (String, String, i64)) -> sqlx::Result<StatusCount> {
    Ok(StatusCount {
        definition,
        status: SagaStatus::try_from(status).map_err(|e| unknown_name("status", e))?,
        count,
    })
}

/// The oldest saga still running or compensating.
pub async fn oldest_running(pool: &PgPool) -> sqlx::Result<Option<OldestRunning>> {
    let running = [SagaStatus::Running, SagaStatus::Compensating].map(SagaStatus::as_str);
    let row: Option<(Uuid, DateTime<Utc>, f64)> = sqlx::query_as(
        "SELECT id, created_at, extract(epoch FROM now() - created_at)::float8 FROM sagas
         WHERE status = ANY($1) ORDER BY created_at, id LIMIT 1",
    )
    .bind(&running[..])
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(saga_id, created_at, age_seconds)| OldestRunning {
        saga_id,
        created_at,
        age_seconds,
    }))
}

/// The outbox's backlog and its oldest row's age.
pub async fn outbox(pool: &PgPool) -> sqlx::Result<OutboxStats> {
    let (backlog, oldest_age_seconds): (i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*), extract(epoch FROM now() - min(created_at))::float8 FROM outbox",
    )
    .fetch_one(pool)
    .await?;
    Ok(OutboxStats {
        backlog,
        oldest_age_seconds,
    })
}

/// Timers due and not yet fired.
pub async fn timers_due(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM timers WHERE fire_at <= now()")
        .fetch_one(pool)
        .await
}

/// Migrations applied to the engine schema, and whether any failed.
pub async fn applied_migrations(pool: &PgPool) -> sqlx::Result<(i64, bool)> {
    sqlx::query_as("SELECT count(*), coalesce(bool_or(NOT success), false) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await
}

/// A row of `dead_letters`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetterRow {
    pub id: i64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub headers: serde_json::Value,
    pub payload: Option<Vec<u8>>,
    pub payload_size: i32,
    pub truncated: bool,
    pub error: String,
    pub dead_lettered_at: DateTime<Utc>,
    pub discarded_at: Option<DateTime<Utc>>,
}

const DEAD_LETTER_COLUMNS: &str = r#"id, topic, partition, "offset", key, headers, payload,
    payload_size, truncated, error, dead_lettered_at, discarded_at"#;

/// Dead letters, newest first, discarded or not, with ids below `before`; one more than
/// `limit` tells whether another page follows.
pub async fn dead_letters(
    pool: &PgPool,
    discarded: bool,
    before: Option<i64>,
    limit: u32,
) -> sqlx::Result<Vec<DeadLetterRow>> {
    sqlx::query_as(&format!(
        "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters
         WHERE (discarded_at IS NOT NULL) = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
    ))
    .bind(discarded)
    .bind(before.unwrap_or(i64::MAX))
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await
}

/// One dead letter.
pub async fn dead_letter(pool: &PgPool, id: i64) -> sqlx::Result<Option<DeadLetterRow>> {
    sqlx::query_as(&format!(
        "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Records an operator's action on a dead letter; returns the record's id.
pub async fn record_dead_letter_action(
    pool: &PgPool,
    id: i64,
    action: &str,
    actor: &str,
    reason: &str,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO dead_letter_actions (dead_letter_id, action, actor, reason)
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(id)
    .bind(action)
    .bind(actor)
    .bind(reason)
    .fetch_one(pool)
    .await
}

/// Takes back the record `action_id` of [`record_dead_letter_action`], for an action that
/// did not happen after all.
pub async fn forget_dead_letter_action(pool: &PgPool, action_id: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM dead_letter_actions WHERE id = $1")
        .bind(action_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Marks a dead letter discarded and records who and why, in one transaction; `None` when
/// it was discarded already.
pub async fn discard_dead_letter(
    pool: &PgPool,
    id: i64,
    actor: &str,
    reason: &str,
) -> sqlx::Result<Option<DeadLetterRow>> {
    let mut tx = pool.begin().await?;
    let row: Option<DeadLetterRow> = sqlx::query_as(&format!(
        "UPDATE dead_letters SET discarded_at = now()
         WHERE id = $1 AND discarded_at IS NULL RETURNING {DEAD_LETTER_COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if row.is_some() {
        sqlx::query(
            "INSERT INTO dead_letter_actions (dead_letter_id, action, actor, reason)
             VALUES ($1, 'discard', $2, $3)",
        )
        .bind(id)
        .bind(actor)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(row)
}

/// Dead letters not discarded.
pub async fn open_dead_letters(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE discarded_at IS NULL")
        .fetch_one(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer_row(kind: &str, phase: Option<&str>) -> TimerRow {
        (
            "funds".into(),
            kind.into(),
            phase.map(str::to_string),
            2,
            None,
        )
    }

    #[test]
    fn timer_rows_are_read_through_their_enums_and_shown_by_the_same_names() {
        let view = timer_view(timer_row("timeout", Some("try"))).unwrap();
        assert_eq!(view.kind, TimerKind::Timeout);
        let shown = serde_json::to_value(&view).unwrap();
        assert_eq!(shown["kind"], "timeout");
        assert_eq!(shown["phase"], "try");
        let deadline = serde_json::to_value(timer_view(timer_row("deadline", None)).unwrap());
        assert_eq!(deadline.unwrap()["phase"], "");
        for (kind, phase, column) in [
            ("sleep", Some("try"), "kind"),
            ("timeout", Some("later"), "phase"),
        ] {
            let error = timer_view(timer_row(kind, phase)).unwrap_err();
            assert!(
                matches!(&error, sqlx::Error::ColumnDecode { index, .. } if index == column),
                "{error}"
            );
        }
    }

    #[test]
    fn status_counts_are_read_through_the_status_and_shown_by_the_same_names() {
        for status in SagaStatus::all() {
            let count = status_count(("checkout".into(), status.as_str().into(), 3)).unwrap();
            assert_eq!(count.status, status);
            let shown = serde_json::to_value(&count).unwrap();
            assert_eq!(shown["status"], status.as_str());
        }
        let error = status_count(("checkout".into(), "stuck".into(), 1)).unwrap_err();
        assert!(error.to_string().contains("stuck"), "{error}");
    }
}
