//! Group commit of the consumers' inputs: the transitions of every message a lane took at
//! once are decided in memory, in order, and written with one statement per table (see
//! [`writes`]), instead of a dozen statements and a savepoint per message.
//!
//! Only the common case goes this way: triggers of new sagas, replies, and their
//! duplicates. Anything else — a trigger that reuses a key with another payload, a saga of
//! a definition version this process does not know, a saga another writer moved on
//! meanwhile — sends the whole group back to the one-by-one path
//! ([`Transitions::apply_on`]), which handles each case as it always has.

mod writes;

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Utc};
use saga_core::{decide, digest, SagaDefinition, SagaInput, SagaState, TimerKind};
use saga_plumbing::inbox;
use sqlx::PgConnection;
use tracing::Span;
use uuid::Uuid;

use crate::idempotency::stored_payload_hashes;
use crate::ignored;
use crate::metrics;
use crate::store::{self, SagaRow};
use crate::transition::{Applied, Plan, Transitions};
use crate::Result;
pub(crate) use writes::write_timer_changes;
use writes::GroupWrites;

/// One message of a group, as a saga input.
#[derive(Debug)]
pub struct GroupInput<'a> {
    /// Inbox consumer name.
    pub consumer: &'static str,
    /// The id the inbox keeps (a trigger's is its saga id).
    pub message_id: Uuid,
    /// The saga it is for.
    pub saga_id: Uuid,
    /// The input.
    pub input: SagaInput,
    /// For a trigger: the definition it starts.
    pub starts: Option<&'a SagaDefinition>,
    /// The span its transition is traced in.
    pub span: Span,
}

/// A saga as the group has it so far.
struct Current {
    state: SagaState,
    version: i64,
    created_at: Option<DateTime<Utc>>,
}

/// A transition decided, recorded once the group is written.
struct Decided<'a> {
    index: usize,
    saga_id: Uuid,
    definition: &'a SagaDefinition,
    plan: Plan,
    created_at: Option<DateTime<Utc>>,
}

impl Transitions {
    /// Applies `inputs` in `tx` as one group. `None` when the group needs the one-by-one
    /// path; the caller then rolls back what this wrote. A saga moved on meanwhile is an
    /// [`crate::Error::VersionConflict`], for the same fallback.
    pub async fn apply_group(
        &self,
        tx: &mut PgConnection,
        inputs: &[GroupInput<'_>],
    ) -> Result<Option<Vec<Applied>>> {
        let started = Instant::now();
        let mut outcomes: Vec<Option<Applied>> = vec![None; inputs.len()];
        if !self
            .settle_repeated_triggers(tx, inputs, &mut outcomes)
            .await?
        {
            return Ok(None);
        }
        let fresh: Vec<(&str, Uuid)> = pending(inputs, &outcomes)
            .map(|i| (inputs[i].consumer, inputs[i].message_id))
            .collect();
        let firsts = inbox::record_all(tx, &fresh).await?;
        let mut counted = HashSet::new();
        let mut sagas = self.load(tx, inputs, &outcomes).await?;
        let waits = step_waits(tx, sagas.keys().copied().collect()).await?;
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut *tx)
            .await?;
        let mut writes = GroupWrites::default();
        let mut decided = Vec::new();
        let mut started_here = HashMap::new();
        let mut ignored_replies = Vec::new();
        for index in pending(inputs, &outcomes).collect::<Vec<_>>() {
            let input = &inputs[index];
            let key = (input.consumer.to_string(), input.message_id);
            let first = firsts.contains(&key) && counted.insert(key);
            if !first {
                // A trigger again: a duplicate only of the same payload started in this
                // group; anything else is compared where it was started (one by one).
                if input.starts.is_some() && started_here.get(&input.saga_id) != Some(&hash(input))
                {
                    return Ok(None);
                }
                outcomes[index] = Some(Applied::Duplicate);
                continue;
            }
            let step = input
                .span
                .in_scope(|| self.decide_one(input, sagas.get(&input.saga_id), now))?;
            let Some(step) = step else {
                return Ok(None);
            };
            match step {
                Step::Unchanged => {
                    let state = sagas.get(&input.saga_id).map(|c| &c.state);
                    if let Some(reason) = ignored::reason(state, &input.input) {
                        ignored_replies.push((index, reason));
                    }
                    outcomes[index] = Some(Applied::Unchanged);
                }
                Step::Changed(one) => {
                    if let SagaInput::Reply { step, phase, .. } = &input.input {
                        let key = (input.saga_id, step.clone(), phase.as_str().to_string());
                        let waited = waits.get(&key);
                        if let (Some(waited), Some((_, def))) = (waited, one.definition.step(step))
                        {
                            metrics::step_answered(def.participant(), *phase, *waited);
                        }
                    }
                    let current = sagas.get(&input.saga_id);
                    let (version, created_at) =
                        current.map_or((0, None), |c| (c.version, c.created_at));
                    let version = writes.add(input.saga_id, version, &one.plan, now);
                    if input.starts.is_some() {
                        started_here.insert(input.saga_id, hash(input));
                    }
                    let state = one.state;
                    outcomes[index] = Some(Applied::Changed {
                        status: state.status,
                        version,
                    });
                    sagas.insert(
                        input.saga_id,
                        Current {
                            state,
                            version,
                            created_at,
                        },
                    );
                    decided.push(Decided {
                        index,
                        saga_id: input.saga_id,
                        definition: one.definition,
                        plan: one.plan,
                        created_at,
                    });
                }
            }
        }
        writes.write(tx).await?;
        for (index, reason) in &ignored_replies {
            let input = &inputs[*index];
            self.ignored().record(input.saga_id, &input.input, reason);
        }
        for one in &decided {
            let input = &inputs[one.index].input;
            self.applied(
                one.saga_id,
                one.definition,
                input,
                &one.plan,
                one.created_at,
            );
        }
        let outcomes: Vec<Applied> = outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Applied::Unchanged))
            .collect();
        for (input, applied) in inputs.iter().zip(&outcomes) {
            let took = started.elapsed();
            metrics::transition(&input.input, applied, Some(input.consumer), took);
        }
        Ok(Some(outcomes))
    }

    /// Triggers whose saga exists already: a redelivery (same payload) is a duplicate;
    /// another payload under the same key is a conflict, for the one-by-one path (false).
    async fn settle_repeated_triggers(
        &self,
        tx: &mut PgConnection,
        inputs: &[GroupInput<'_>],
        outcomes: &mut [Option<Applied>],
    ) -> Result<bool> {
        let starts: Vec<Uuid> = inputs
            .iter()
            .filter(|i| i.starts.is_some())
            .map(|i| i.saga_id)
            .collect();
        if starts.is_empty() {
            return Ok(true);
        }
        let stored = stored_payload_hashes(tx, &starts).await?;
        for (input, outcome) in inputs.iter().zip(outcomes.iter_mut()) {
            let (Some(stored), SagaInput::Start { input: payload, .. }) =
                (stored.get(&input.saga_id), &input.input)
            else {
                continue;
            };
            if *stored != digest::payload_hash(payload) {
                return Ok(false);
            }
            *outcome = Some(Applied::Duplicate);
        }
        Ok(true)
    }

    /// The sagas the group's inputs act on, as they are stored.
    async fn load(
        &self,
        tx: &mut PgConnection,
        inputs: &[GroupInput<'_>],
        outcomes: &[Option<Applied>],
    ) -> Result<HashMap<Uuid, Current>> {
        let ids: Vec<Uuid> = pending(inputs, outcomes)
            .filter(|&i| inputs[i].starts.is_none())
            .map(|i| inputs[i].saga_id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let rows: Vec<SagaRow> = store::load_sagas(tx, &ids).await?;
        rows.into_iter()
            .map(|row| {
                let state = row.saga_state()?;
                let current = Current {
                    state,
                    version: row.version,
                    created_at: Some(row.created_at),
                };
                Ok((row.id, current))
            })
            .collect()
    }

    /// Decides one input of the group in memory. `None` when it needs the one-by-one path.
    fn decide_one<'d>(
        &'d self,
        input: &GroupInput<'d>,
        current: Option<&Current>,
        now: DateTime<Utc>,
    ) -> Result<Option<Step<'d>>> {
        let definition = match (current, input.starts) {
            (Some(current), _) => {
                let state = &current.state;
                match self.registry().get(&state.definition, state.version) {
                    Some(known) => known.as_ref(),
                    None => return Ok(None),
                }
            }
            (None, Some(definition)) => definition,
            (None, None) => return Ok(Some(Step::Unchanged)),
        };
        let state = current.map(|c| &c.state);
        let mut decision = decide(definition, state, &input.input, now);
        let Some(new_state) = decision
            .state
            .clone()
            .filter(|_| !decision.events.is_empty())
        else {
            self.observe(input.saga_id, definition, &input.input);
            return Ok(Some(Step::Unchanged));
        };
        self.hold_back(input.saga_id, &mut decision, now);
        let plan = self.plan(
            input.saga_id,
            definition,
            &input.input,
            decision,
            &new_state,
        )?;
        Ok(Some(Step::Changed(Box::new(Changed {
            definition,
            plan,
            state: new_state,
        }))))
    }
}

/// What one input of a group does.
enum Step<'d> {
    /// Nothing (a reply for a saga that moved on, an unknown saga).
    Unchanged,
    /// A transition.
    Changed(Box<Changed<'d>>),
}

/// A transition of a group, before it is written.
struct Changed<'d> {
    definition: &'d SagaDefinition,
    plan: Plan,
    state: SagaState,
}

/// The indices of the inputs not settled yet.
fn pending<'a>(
    inputs: &'a [GroupInput<'_>],
    outcomes: &'a [Option<Applied>],
) -> impl Iterator<Item = usize> + 'a {
    (0..inputs.len()).filter(|&i| outcomes[i].is_none())
}

/// How long each reply timeout of `saga_ids` has been armed, by saga, step and phase: how
/// long its participant is taking to answer.
async fn step_waits(
    tx: &mut PgConnection,
    saga_ids: Vec<Uuid>,
) -> Result<HashMap<(Uuid, String, String), f64>> {
    if saga_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, String, String, f64)> = sqlx::query_as(
        "SELECT saga_id, step, phase, extract(epoch FROM now() - armed_at)::float8
         FROM timers WHERE saga_id = ANY($1) AND kind = $2",
    )
    .bind(&saga_ids)
    .bind(TimerKind::Timeout.as_str())
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, step, phase, waited)| ((id, step, phase), waited))
        .collect())
}

/// The payload hash of a trigger's input (empty for other inputs).
fn hash(input: &GroupInput<'_>) -> String {
    match &input.input {
        SagaInput::Start { input, .. } => digest::payload_hash(input),
        _ => String::new(),
    }
}
