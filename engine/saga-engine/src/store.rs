//! The event store: a saga's append-only history and its query projection.
//!
//! `saga_events` is the source of truth; its primary key `(saga_id, seq)` and the
//! projection's `version` column are the optimistic lock. [`append`] writes new events
//! and the projection row in the caller's transaction, so they commit together with the
//! inbox record, the outbox rows and the timers of the same transition.

use chrono::{DateTime, Utc};
use saga_core::{SagaState, SagaStatus};
use saga_plumbing::error::is_unique_violation;
use serde_json::Value;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::{Error, Result};

/// An event about to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Event name, e.g. `StepSucceeded`.
    pub event_type: String,
    /// Event body.
    pub data: Value,
}

impl NewEvent {
    /// An event named `event_type` carrying `data`.
    pub fn new(event_type: impl Into<String>, data: Value) -> Self {
        NewEvent {
            event_type: event_type.into(),
            data,
        }
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct RecordedEvent {
    /// The saga it belongs to.
    pub saga_id: Uuid,
    /// Position in the saga's history, from 1.
    pub seq: i64,
    /// Event name.
    pub event_type: String,
    /// Event body.
    pub data: Value,
    /// When it was appended.
    pub recorded_at: DateTime<Utc>,
}

/// The query-facing view of a saga, written with every append.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    /// Definition name.
    pub definition: String,
    /// Definition version.
    pub definition_version: i32,
    /// Where the saga is in its life.
    pub status: SagaStatus,
    /// The step the saga is at, if any.
    pub step: Option<String>,
    /// The saga's input: written with the saga's first row only, never rewritten.
    pub input: Value,
    /// Snapshot of the saga state after the appended events, without the input (see
    /// [`snapshot`]).
    pub state: Value,
    /// Why the saga is parked, when it is.
    pub parked_reason: Option<String>,
    /// For a new saga: the hash of its trigger's payload (see
    /// [`saga_core::digest::payload_hash`]). Written once, when the saga starts.
    pub payload_hash: Option<String>,
}

/// A row of the `sagas` projection.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct SagaRow {
    /// Saga id.
    pub id: Uuid,
    /// Definition name.
    pub definition: String,
    /// Definition version.
    pub definition_version: i32,
    /// Where the saga is in its life.
    #[sqlx(try_from = "String")]
    pub status: SagaStatus,
    /// Current step.
    pub step: Option<String>,
    /// Input.
    pub input: Value,
    /// State snapshot, without the input (see [`SagaRow::saga_state`]).
    pub state: Value,
    /// Sequence number of the last event.
    pub version: i64,
    /// First event time.
    pub created_at: DateTime<Utc>,
    /// Last event time.
    pub updated_at: DateTime<Utc>,
    /// Next wake-up: the earliest of its timers' times (read from `timers`, see
    /// [`SAGA_COLUMNS`]).
    pub next_wakeup_at: Option<DateTime<Utc>>,
    /// Parking reason.
    pub parked_reason: Option<String>,
}

impl SagaRow {
    /// The saga's state: the snapshot with the input put back from its own column.
    pub fn saga_state(&self) -> serde_json::Result<SagaState> {
        let mut state = self.state.clone();
        if let Value::Object(fields) = &mut state {
            // Snapshots written before the input left them still hold it.
            fields
                .entry(SNAPSHOT_INPUT)
                .or_insert_with(|| self.input.clone());
        }
        serde_json::from_value(state)
    }
}

/// The field of [`SagaState`] that the snapshot leaves out: the input is in its own column,
/// written once, and the snapshot is rewritten with every transition.
const SNAPSHOT_INPUT: &str = "input";

/// The snapshot stored for `state`: all of it but the input.
pub fn snapshot(state: &SagaState) -> serde_json::Result<Value> {
    let mut snapshot = serde_json::to_value(state)?;
    if let Value::Object(fields) = &mut snapshot {
        fields.remove(SNAPSHOT_INPUT);
    }
    Ok(snapshot)
}

/// The columns of a [`SagaRow`], for a query `FROM sagas`.
pub const SAGA_COLUMNS: &str = "id, definition, definition_version, status, step, input, state, \
     version, created_at, updated_at, parked_reason, \
     (SELECT min(fire_at) FROM timers WHERE timers.saga_id = sagas.id) AS next_wakeup_at";

/// Appends `events` to saga `saga_id`, whose history the caller saw at `expected_version`
/// (0 for a new saga), and writes `projection` as its query row. Returns the new version.
///
/// Fails with [`Error::VersionConflict`] when another writer appended first (or, for a new
/// saga, created it first); the caller's transaction is still usable for a rollback, and the
/// caller should reload and decide again.
pub async fn append(
    tx: &mut PgConnection,
    saga_id: Uuid,
    expected_version: i64,
    events: &[NewEvent],
    projection: &Projection,
) -> Result<i64> {
    if events.is_empty() {
        return Ok(expected_version);
    }
    let new_version = expected_version + events.len() as i64;
    let claimed = if expected_version == 0 {
        insert_projection(tx, saga_id, new_version, projection).await?
    } else {
        update_projection(tx, saga_id, expected_version, new_version, projection).await?
    };
    if !claimed {
        return Err(Error::VersionConflict {
            saga_id,
            expected: expected_version,
        });
    }
    let rows: Vec<(Uuid, i64, &NewEvent)> = (expected_version + 1..)
        .zip(events)
        .map(|(seq, event)| (saga_id, seq, event))
        .collect();
    insert_events(tx, &rows).await?;
    Ok(new_version)
}

/// Inserts `(saga id, seq, event)` rows, of one saga or many, in one statement. A sequence
/// number another writer took first is an [`Error::VersionConflict`] (of the first row's
/// saga).
pub(crate) async fn insert_events(
    tx: &mut PgConnection,
    rows: &[(Uuid, i64, &NewEvent)],
) -> Result<()> {
    let Some(&(first_id, first_seq, _)) = rows.first() else {
        return Ok(());
    };
    let ids: Vec<Uuid> = rows.iter().map(|(id, _, _)| *id).collect();
    let seqs: Vec<i64> = rows.iter().map(|(_, seq, _)| *seq).collect();
    let types: Vec<&str> = rows.iter().map(|(_, _, e)| e.event_type.as_str()).collect();
    let data: Vec<&Value> = rows.iter().map(|(_, _, e)| &e.data).collect();
    let inserted = sqlx::query(
        "INSERT INTO saga_events (saga_id, seq, event_type, data)
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::jsonb[])",
    )
    .bind(&ids)
    .bind(&seqs)
    .bind(&types)
    .bind(&data)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(Error::VersionConflict {
            saga_id: first_id,
            expected: first_seq - 1,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Checks that saga `saga_id` is still at `version` and holds its row until the end of
/// the transaction, for a change that appends no event (only its timers move). A saga
/// moved on meanwhile is a version conflict.
pub async fn hold_version(tx: &mut PgConnection, saga_id: Uuid, version: i64) -> Result<()> {
    let held: Option<i64> =
        sqlx::query_scalar("SELECT version FROM sagas WHERE id = $1 FOR NO KEY UPDATE")
            .bind(saga_id)
            .fetch_optional(&mut *tx)
            .await?;
    match held {
        Some(held) if held == version => Ok(()),
        _ => Err(Error::VersionConflict {
            saga_id,
            expected: version,
        }),
    }
}

async fn insert_projection(
    tx: &mut PgConnection,
    saga_id: Uuid,
    version: i64,
    p: &Projection,
) -> Result<bool> {
    let rows = sqlx::query(
        "INSERT INTO sagas (id, definition, definition_version, status, step, input, state,
                            version, parked_reason, payload_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(saga_id)
    .bind(&p.definition)
    .bind(p.definition_version)
    .bind(p.status.as_str())
    .bind(&p.step)
    .bind(&p.input)
    .bind(&p.state)
    .bind(version)
    .bind(&p.parked_reason)
    .bind(&p.payload_hash)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(rows == 1)
}

async fn update_projection(
    tx: &mut PgConnection,
    saga_id: Uuid,
    expected_version: i64,
    version: i64,
    p: &Projection,
) -> Result<bool> {
    // Under READ COMMITTED a concurrent writer with the same expected version waits for
    // the row lock, re-checks `version`, and updates nothing: a conflict without an error.
    let rows = sqlx::query(
        "UPDATE sagas SET definition = $3, definition_version = $4, status = $5, step = $6,
                          state = $7, version = $8, parked_reason = $9, updated_at = now()
         WHERE id = $1 AND version = $2",
    )
    .bind(saga_id)
    .bind(expected_version)
    .bind(&p.definition)
    .bind(p.definition_version)
    .bind(p.status.as_str())
    .bind(&p.step)
    .bind(&p.state)
    .bind(version)
    .bind(&p.parked_reason)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(rows == 1)
}

/// The whole history of a saga, oldest first (empty for an unknown saga).
pub async fn load_events(conn: &mut PgConnection, saga_id: Uuid) -> Result<Vec<RecordedEvent>> {
    load_events_after(conn, saga_id, 0).await
}

/// The events of a saga with `seq > after`, oldest first: what a snapshot at `after` misses.
pub async fn load_events_after(
    conn: &mut PgConnection,
    saga_id: Uuid,
    after: i64,
) -> Result<Vec<RecordedEvent>> {
    let events = sqlx::query_as::<_, RecordedEvent>(
        "SELECT saga_id, seq, event_type, data, recorded_at FROM saga_events
         WHERE saga_id = $1 AND seq > $2 ORDER BY seq",
    )
    .bind(saga_id)
    .bind(after)
    .fetch_all(&mut *conn)
    .await?;
    Ok(events)
}

/// The projection row of a saga, if it exists.
pub async fn load_saga(conn: &mut PgConnection, saga_id: Uuid) -> Result<Option<SagaRow>> {
    let row =
        sqlx::query_as::<_, SagaRow>(&format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE id = $1"))
            .bind(saga_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row)
}

/// The projection rows of `saga_ids` that exist, in one query.
pub async fn load_sagas(conn: &mut PgConnection, saga_ids: &[Uuid]) -> Result<Vec<SagaRow>> {
    if saga_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query_as::<_, SagaRow>(&format!(
        "SELECT {SAGA_COLUMNS} FROM sagas WHERE id = ANY($1)"
    ))
    .bind(saga_ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use saga_core::SagaEvent;
    use serde_json::json;

    use super::*;

    fn row(input: Value, state: Value) -> SagaRow {
        SagaRow {
            id: Uuid::nil(),
            definition: "order".into(),
            definition_version: 1,
            status: SagaStatus::Running,
            step: None,
            input,
            state,
            version: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            next_wakeup_at: None,
            parked_reason: None,
        }
    }

    #[test]
    fn the_snapshot_leaves_the_input_to_its_column_and_old_snapshots_still_read() {
        let input = json!({"order": "o-1", "cents": 500});
        let started = SagaEvent::Started {
            definition: "order".into(),
            version: 1,
            input: input.clone(),
            steps: vec!["funds".into()],
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
        };
        let state = SagaState::apply(None, &started).unwrap();
        let stored = snapshot(&state).unwrap();
        assert!(stored.get("input").is_none());
        assert_eq!(row(input.clone(), stored).saga_state().unwrap(), state);
        let old = serde_json::to_value(&state).unwrap();
        assert_eq!(row(input, old).saga_state().unwrap(), state);
    }
}
