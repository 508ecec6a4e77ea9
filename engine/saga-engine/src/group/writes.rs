//! The writes of a group's transitions, gathered in memory and written with one statement
//! per table: the events, the new and the changed projection rows, the outbox rows and
//! the timers.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use saga_core::{TimerChange, TimerKind, DEADLINE_TIMER_STEP};
use saga_plumbing::outbox::{self, OutboxMessage};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::store::{self, NewEvent, Projection};
use crate::transition::Plan;
use crate::{Error, Result};

/// A saga's projection row at the end of a group.
#[derive(Debug)]
struct ProjectionWrite {
    /// The version the group found it at (0: the group starts it).
    loaded: i64,
    /// Its version after the group.
    version: i64,
    /// The row.
    projection: Projection,
}

/// Everything a group writes, in the order its inputs were decided.
#[derive(Debug, Default)]
pub(crate) struct GroupWrites {
    events: Vec<(Uuid, i64, NewEvent)>,
    projections: HashMap<Uuid, ProjectionWrite>,
    messages: Vec<OutboxMessage>,
    timers: BTreeMap<Uuid, SagaTimers>,
}

impl GroupWrites {
    /// Adds the transition `plan` of saga `saga_id` from `version` (0 for a new saga),
    /// decided at `now`. Returns the saga's version after it.
    pub(crate) fn add(
        &mut self,
        saga_id: Uuid,
        version: i64,
        plan: &Plan,
        now: DateTime<Utc>,
    ) -> i64 {
        let Plan {
            events,
            projection,
            messages,
            decision,
        } = plan;
        for (seq, event) in (version + 1..).zip(events) {
            self.events.push((saga_id, seq, event.clone()));
        }
        let new_version = version + events.len() as i64;
        let loaded = self
            .projections
            .get(&saga_id)
            .map_or(version, |write| write.loaded);
        let write = ProjectionWrite {
            loaded,
            version: new_version,
            projection: projection.clone(),
        };
        self.projections.insert(saga_id, write);
        self.messages.extend_from_slice(messages);
        let saga_timers = self.timers.entry(saga_id).or_default();
        for change in &decision.timers {
            saga_timers.change(change, now);
        }
        new_version
    }

    /// Writes it all in `tx`. A saga another writer moved on meanwhile (or created) is a
    /// [`Error::VersionConflict`]: the caller rolls back and applies the inputs one by one.
    pub(crate) async fn write(&self, tx: &mut PgConnection) -> Result<()> {
        self.write_projections(tx).await?;
        self.write_events(tx).await?;
        outbox::enqueue(tx, &self.messages).await?;
        write_timers(tx, &self.timers).await
    }

    async fn write_projections(&self, tx: &mut PgConnection) -> Result<()> {
        let mut sorted: Vec<_> = self.projections.iter().collect();
        sorted.sort_by_key(|(id, _)| **id);
        let (created, changed): (Vec<_>, Vec<_>) =
            sorted.into_iter().partition(|(_, write)| write.loaded == 0);
        if !created.is_empty() {
            self.insert_projections(tx, &created).await?;
        }
        if !changed.is_empty() {
            self.update_projections(tx, &changed).await?;
        }
        Ok(())
    }

    async fn insert_projections(&self, tx: &mut PgConnection, created: &[Row<'_>]) -> Result<()> {
        let rows = ProjectionRows::of(created);
        let inserted = sqlx::query(
            "INSERT INTO sagas (id, definition, definition_version, status, step, input, state,
                                version, parked_reason, payload_hash)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[],
                                  $6::jsonb[], $7::jsonb[], $8::bigint[], $9::text[],
                                  $10::text[])
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&rows.ids)
        .bind(&rows.definitions)
        .bind(&rows.definition_versions)
        .bind(&rows.statuses)
        .bind(&rows.steps)
        .bind(&rows.inputs)
        .bind(&rows.states)
        .bind(&rows.versions)
        .bind(&rows.parked_reasons)
        .bind(&rows.payload_hashes)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted != created.len() as u64 {
            return Err(conflict(created));
        }
        Ok(())
    }

    async fn update_projections(&self, tx: &mut PgConnection, changed: &[Row<'_>]) -> Result<()> {
        // The definition and the input never change after the start: not rewritten.
        let rows = ProjectionRows::of(changed);
        let expected: Vec<i64> = changed.iter().map(|(_, write)| write.loaded).collect();
        let updated = sqlx::query(
            "UPDATE sagas s SET status = u.status, step = u.step, state = u.state,
                                version = u.version, parked_reason = u.parked_reason,
                                updated_at = now()
             FROM UNNEST($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::jsonb[],
                         $6::bigint[], $7::text[])
                  AS u(id, expected, status, step, state, version, parked_reason)
             WHERE s.id = u.id AND s.version = u.expected",
        )
        .bind(&rows.ids)
        .bind(&expected)
        .bind(&rows.statuses)
        .bind(&rows.steps)
        .bind(&rows.states)
        .bind(&rows.versions)
        .bind(&rows.parked_reasons)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated != changed.len() as u64 {
            return Err(conflict(changed));
        }
        Ok(())
    }

    async fn write_events(&self, tx: &mut PgConnection) -> Result<()> {
        let rows: Vec<(Uuid, i64, &NewEvent)> = self
            .events
            .iter()
            .map(|(id, seq, event)| (*id, *seq, event))
            .collect();
        store::insert_events(tx, &rows).await
    }
}

/// Writes `changes` to saga `saga_id`'s timers, decided at `now`, in the statements a group
/// uses (the one-by-one path's timers).
pub(crate) async fn write_timer_changes(
    tx: &mut PgConnection,
    saga_id: Uuid,
    changes: &[TimerChange],
    now: DateTime<Utc>,
) -> Result<()> {
    let mut timers = SagaTimers::default();
    for change in changes {
        timers.change(change, now);
    }
    write_timers(tx, &BTreeMap::from([(saga_id, timers)])).await
}

/// Writes the timers of every saga in `timers`: the sagas clearing all first, then each
/// step's timer deleted, written whole, or (the deadline) moved.
async fn write_timers(tx: &mut PgConnection, timers: &BTreeMap<Uuid, SagaTimers>) -> Result<()> {
    let cleared: Vec<Uuid> = timers
        .iter()
        .filter(|(_, t)| t.clear_all)
        .map(|(id, _)| *id)
        .collect();
    if !cleared.is_empty() {
        sqlx::query("DELETE FROM timers WHERE saga_id = ANY($1)")
            .bind(&cleared)
            .execute(&mut *tx)
            .await?;
    }
    let mut removed = (Vec::new(), Vec::new());
    let mut set = TimerRows::default();
    let mut deadlines = (Vec::new(), Vec::new());
    for (saga_id, saga_timers) in timers {
        for (step, timer) in &saga_timers.steps {
            match timer {
                StepTimer::Cleared => {
                    removed.0.push(*saga_id);
                    removed.1.push(step.as_str());
                }
                StepTimer::Set(row) => set.push(*saga_id, step, row),
                StepTimer::Deadline(fire_at) => {
                    deadlines.0.push(*saga_id);
                    deadlines.1.push(*fire_at);
                }
            }
        }
    }
    if !removed.0.is_empty() {
        sqlx::query(
            "DELETE FROM timers t USING UNNEST($1::uuid[], $2::text[]) AS d(saga_id, step)
             WHERE t.saga_id = d.saga_id AND t.step = d.step",
        )
        .bind(&removed.0)
        .bind(&removed.1)
        .execute(&mut *tx)
        .await?;
    }
    if !set.saga_ids.is_empty() {
        sqlx::query(
            "INSERT INTO timers (saga_id, step, kind, phase, attempt, fire_at, wait, armed_at)
             SELECT saga_id, step, kind, phase, attempt, fire_at,
                    wait_us * interval '1 microsecond', now()
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[],
                         $6::timestamptz[], $7::bigint[])
                  AS t(saga_id, step, kind, phase, attempt, fire_at, wait_us)
             ON CONFLICT (saga_id, step) DO UPDATE
             SET kind = EXCLUDED.kind, phase = EXCLUDED.phase,
                 attempt = EXCLUDED.attempt, fire_at = EXCLUDED.fire_at,
                 wait = EXCLUDED.wait, armed_at = EXCLUDED.armed_at,
                 failures = 0, last_error = NULL",
        )
        .bind(&set.saga_ids)
        .bind(&set.steps)
        .bind(&set.kinds)
        .bind(&set.phases)
        .bind(&set.attempts)
        .bind(&set.fire_ats)
        .bind(&set.waits_us)
        .execute(&mut *tx)
        .await?;
    }
    if !deadlines.0.is_empty() {
        sqlx::query(
            "INSERT INTO timers (saga_id, step, kind, phase, attempt, fire_at, armed_at)
             SELECT saga_id, $2, $3, NULL, 0, fire_at, now()
             FROM UNNEST($1::uuid[], $4::timestamptz[]) AS d(saga_id, fire_at)
             ON CONFLICT (saga_id, step) DO UPDATE SET fire_at = EXCLUDED.fire_at",
        )
        .bind(&deadlines.0)
        .bind(DEADLINE_TIMER_STEP)
        .bind(TimerKind::Deadline.as_str())
        .bind(&deadlines.1)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// A saga's id and its projection write, in id order.
type Row<'a> = (&'a Uuid, &'a ProjectionWrite);

fn conflict(rows: &[Row<'_>]) -> Error {
    let (saga_id, expected) = rows
        .first()
        .map_or((Uuid::nil(), 0), |(id, write)| (**id, write.loaded));
    Error::VersionConflict { saga_id, expected }
}

/// What the timers of one saga end up as after a group's changes, in order: a later
/// change of the same step wins, and clearing all of them drops what came before.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct SagaTimers {
    /// Every stored timer of the saga is deleted first.
    clear_all: bool,
    /// Then each of these steps' timer is written or deleted.
    steps: BTreeMap<String, StepTimer>,
}

/// The last change of one step's timer in a group.
#[derive(Debug, Clone, PartialEq)]
enum StepTimer {
    /// Deleted.
    Cleared,
    /// Written whole (armed again).
    Set(TimerRow),
    /// The saga's deadline: its time moves, the rest of a stored row stays.
    Deadline(DateTime<Utc>),
}

/// A timer as written: a reply timeout waits `wait_us` from the command's acknowledgement
/// (no `fire_at` yet); the other kinds fire at `fire_at`.
#[derive(Debug, Clone, PartialEq)]
struct TimerRow {
    kind: TimerKind,
    phase: schemas::Phase,
    attempt: u32,
    fire_at: Option<DateTime<Utc>>,
    wait_us: Option<i64>,
}

impl SagaTimers {
    /// Folds in one change decided at `now`.
    fn change(&mut self, change: &TimerChange, now: DateTime<Utc>) {
        match change {
            TimerChange::Set {
                step,
                kind,
                phase,
                attempt,
                fire_at,
            } => {
                let (fire_at, wait_us) = match kind {
                    TimerKind::Timeout => (None, (*fire_at - now).num_microseconds()),
                    TimerKind::Backoff | TimerKind::Deferred | TimerKind::Deadline => {
                        (Some(*fire_at), None)
                    }
                };
                let row = TimerRow {
                    kind: *kind,
                    phase: *phase,
                    attempt: *attempt,
                    fire_at,
                    wait_us,
                };
                self.steps.insert(step.clone(), StepTimer::Set(row));
            }
            TimerChange::Clear { step } => {
                self.steps.insert(step.clone(), StepTimer::Cleared);
            }
            TimerChange::SetDeadline { fire_at } => {
                self.steps.insert(
                    DEADLINE_TIMER_STEP.to_string(),
                    StepTimer::Deadline(*fire_at),
                );
            }
            TimerChange::ClearAll => {
                self.clear_all = true;
                self.steps.clear();
            }
        }
    }
}

/// Projection rows as column arrays for `UNNEST`.
struct ProjectionRows<'a> {
    ids: Vec<Uuid>,
    definitions: Vec<&'a str>,
    definition_versions: Vec<i32>,
    statuses: Vec<&'static str>,
    steps: Vec<Option<&'a str>>,
    inputs: Vec<&'a Value>,
    states: Vec<&'a Value>,
    versions: Vec<i64>,
    parked_reasons: Vec<Option<&'a str>>,
    payload_hashes: Vec<Option<&'a str>>,
}

impl<'a> ProjectionRows<'a> {
    fn of(rows: &[Row<'a>]) -> Self {
        let p = |(_, write): &Row<'a>| -> &'a Projection { &write.projection };
        ProjectionRows {
            ids: rows.iter().map(|(id, _)| **id).collect(),
            definitions: rows.iter().map(|r| p(r).definition.as_str()).collect(),
            definition_versions: rows.iter().map(|r| p(r).definition_version).collect(),
            statuses: rows.iter().map(|r| p(r).status.as_str()).collect(),
            steps: rows.iter().map(|r| p(r).step.as_deref()).collect(),
            inputs: rows.iter().map(|r| &p(r).input).collect(),
            states: rows.iter().map(|r| &p(r).state).collect(),
            versions: rows.iter().map(|(_, write)| write.version).collect(),
            parked_reasons: rows.iter().map(|r| p(r).parked_reason.as_deref()).collect(),
            payload_hashes: rows.iter().map(|r| p(r).payload_hash.as_deref()).collect(),
        }
    }
}

/// Timer rows as column arrays for `UNNEST`.
#[derive(Default)]
struct TimerRows<'a> {
    saga_ids: Vec<Uuid>,
    steps: Vec<&'a str>,
    kinds: Vec<&'static str>,
    phases: Vec<&'static str>,
    attempts: Vec<i32>,
    fire_ats: Vec<Option<DateTime<Utc>>>,
    waits_us: Vec<Option<i64>>,
}

impl<'a> TimerRows<'a> {
    fn push(&mut self, saga_id: Uuid, step: &'a str, row: &TimerRow) {
        self.saga_ids.push(saga_id);
        self.steps.push(step);
        self.kinds.push(row.kind.as_str());
        self.phases.push(row.phase.as_str());
        self.attempts.push(row.attempt as i32);
        self.fire_ats.push(row.fire_at);
        self.waits_us.push(row.wait_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::Phase;

    fn set(step: &str, kind: TimerKind, at: DateTime<Utc>) -> TimerChange {
        TimerChange::Set {
            step: step.into(),
            kind,
            phase: Phase::Try,
            attempt: 1,
            fire_at: at,
        }
    }

    #[test]
    fn a_later_change_of_a_step_wins_and_clearing_all_drops_what_came_before() {
        let now = Utc::now();
        let later = now + chrono::Duration::seconds(5);
        let mut timers = SagaTimers::default();
        timers.change(&set("a", TimerKind::Backoff, later), now);
        timers.change(&TimerChange::Clear { step: "a".into() }, now);
        timers.change(&set("b", TimerKind::Backoff, later), now);
        assert_eq!(timers.steps["a"], StepTimer::Cleared);
        assert!(!timers.clear_all);

        timers.change(&TimerChange::ClearAll, now);
        timers.change(&set("c", TimerKind::Timeout, later), now);
        assert!(timers.clear_all);
        assert_eq!(timers.steps.len(), 1, "{timers:?}");
        let StepTimer::Set(row) = &timers.steps["c"] else {
            panic!("c is set: {timers:?}")
        };
        // A reply timeout waits from the acknowledgement; it has no time of its own yet.
        assert_eq!((row.fire_at, row.wait_us), (None, Some(5_000_000)));
    }

    #[test]
    fn the_deadline_is_the_timer_of_its_own_step() {
        let now = Utc::now();
        let mut timers = SagaTimers::default();
        timers.change(&TimerChange::SetDeadline { fire_at: now }, now);
        assert_eq!(timers.steps[DEADLINE_TIMER_STEP], StepTimer::Deadline(now));
    }
}
