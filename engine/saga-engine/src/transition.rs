//! The one path every input takes: one Postgres transaction with the inbox record, the
//! saga's events and projection, the outbox rows and the timers.

use chrono::Utc;
use saga_core::{
    decide, defer_commands, digest, operator, Decision, Lifecycle, SagaDefinition, SagaEvent,
    SagaInput, SagaState, SagaStatus, TimerKind,
};
use saga_plumbing::inbox::{self, Receipt};
use saga_plumbing::outbox::{self, OutboxMessage};
use saga_plumbing::topics::Topics;
use saga_plumbing::trace::{self, TRACEPARENT_HEADER};
use schemas::{Envelope, LifecycleEvent, MessageKind, ReplyOutcome};
use sqlx::{Connection, PgConnection, PgPool};
use tracing::{debug, warn};
use uuid::Uuid;

use crate::breaker::{Admission, BreakerSettings, Breakers, CommandRef, Signal};
use crate::group::write_timer_changes;
use crate::ignored::IgnoredReplies;
use crate::metrics;
use crate::registry::Registry;
use crate::store::{self, NewEvent, Projection};
use crate::{Error, Result};

/// What applying an input did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The message was processed before; nothing changed.
    Duplicate,
    /// The input changed nothing (stale reply, repeated trigger, finished saga).
    Unchanged,
    /// Events were appended; the saga is now in `status`.
    Changed {
        /// The saga's status after the input.
        status: SagaStatus,
        /// Events in its history now.
        version: i64,
    },
    /// An operator action the saga's state does not allow; nothing was written (not even
    /// the inbox record, so the same key may try again later).
    Refused {
        /// Why.
        reason: String,
    },
    /// The saga belongs to a definition version this process does not know; left alone.
    UnknownDefinition {
        /// The saga's definition name.
        definition: String,
        /// Its version, which this process does not register.
        version: u32,
    },
}

/// Where an input came from, for deduplication.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Inbox consumer name.
    pub consumer: &'a str,
    /// The message id.
    pub message_id: Uuid,
}

/// What one input writes, worked out before anything is written.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Events to append.
    pub events: Vec<NewEvent>,
    /// The saga's query row after them.
    pub projection: Projection,
    /// Commands and lifecycle news for the outbox.
    pub messages: Vec<OutboxMessage>,
    /// The decision it came from (its timers, lifecycle news, commands).
    pub decision: Decision,
}

/// Shared by every input path of one engine.
#[derive(Debug, Clone)]
pub struct Transitions {
    pool: PgPool,
    registry: Registry,
    topics: Topics,
    conflict_retries: u32,
    breakers: Breakers,
    ignored: IgnoredReplies,
}

impl Transitions {
    /// The transition path over the engine's `pool` for the `registry`'s definitions;
    /// `conflict_retries` bounds how often one input is decided again after another writer
    /// moved its saga on.
    /// Its participants' circuit breakers have the default [`BreakerSettings`] (see
    /// [`Transitions::with_breakers`]).
    pub fn new(pool: PgPool, registry: Registry, topics: Topics, conflict_retries: u32) -> Self {
        let breakers = participant_breakers(&registry, BreakerSettings::default());
        Transitions {
            pool,
            registry,
            topics,
            conflict_retries,
            breakers,
            ignored: IgnoredReplies::default(),
        }
    }

    /// The same transitions with circuit breakers set by `settings` (fresh, all closed).
    pub fn with_breakers(mut self, settings: BreakerSettings) -> Self {
        self.breakers = participant_breakers(&self.registry, settings);
        self
    }

    /// The participants' circuit breakers of this process.
    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    /// Where replies that change nothing are counted and logged.
    pub(crate) fn ignored(&self) -> &IgnoredReplies {
        &self.ignored
    }

    /// The engine's pool (its schema).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The definitions this process knows.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The deployment's topic names.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// How often one input is decided again after a version conflict.
    pub(crate) fn conflict_retries(&self) -> u32 {
        self.conflict_retries
    }

    /// Applies `input` to saga `saga_id` in one transaction, retrying version conflicts.
    /// `definition` is required for a start (the trigger names it) and ignored otherwise.
    pub async fn apply(
        &self,
        source: Option<Source<'_>>,
        saga_id: Uuid,
        input: &SagaInput,
        definition: Option<&SagaDefinition>,
    ) -> Result<Applied> {
        let mut tx = self.pool.begin().await?;
        let applied = self
            .apply_on(&mut tx, source, saga_id, input, definition)
            .await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// [`Transitions::apply`] inside the caller's transaction, which may hold other inputs'
    /// transitions too (a consumer's group commit): each attempt runs in a savepoint, so a
    /// version conflict is decided again and a refused action leaves nothing behind.
    pub async fn apply_on(
        &self,
        tx: &mut PgConnection,
        source: Option<Source<'_>>,
        saga_id: Uuid,
        input: &SagaInput,
        definition: Option<&SagaDefinition>,
    ) -> Result<Applied> {
        let started = std::time::Instant::now();
        let mut conflicts = 0;
        let applied = loop {
            let mut savepoint = tx.begin().await?;
            match self
                .apply_in(&mut savepoint, source, saga_id, input, definition)
                .await
            {
                Ok(applied @ (Applied::UnknownDefinition { .. } | Applied::Refused { .. })) => {
                    savepoint.rollback().await?;
                    break applied;
                }
                Ok(applied) => {
                    savepoint.commit().await?;
                    break applied;
                }
                Err(Error::VersionConflict { .. }) if conflicts < self.conflict_retries => {
                    conflicts += 1;
                    debug!(%saga_id, conflicts, "version conflict, deciding again");
                    savepoint.rollback().await?;
                }
                Err(error) => return Err(error),
            }
        };
        metrics::transition(
            input,
            &applied,
            source.map(|s| s.consumer),
            started.elapsed(),
        );
        Ok(applied)
    }

    /// The transition inside the caller's transaction (the timer poller adds its claim).
    pub async fn apply_in(
        &self,
        tx: &mut PgConnection,
        source: Option<Source<'_>>,
        saga_id: Uuid,
        input: &SagaInput,
        definition: Option<&SagaDefinition>,
    ) -> Result<Applied> {
        if let Some(source) = source {
            if inbox::record(tx, source.consumer, source.message_id).await? == Receipt::Duplicate {
                return Ok(Applied::Duplicate);
            }
        }
        let row = store::load_saga(tx, saga_id).await?;
        let (state, version) = match &row {
            Some(row) => (Some(row.saga_state()?), row.version),
            None => (None, 0),
        };
        let definition = match (&state, definition) {
            (Some(state), _) => match self.registry.get(&state.definition, state.version) {
                Some(known) => known.as_ref(),
                None => {
                    debug!(%saga_id, definition = %state.definition, version = state.version,
                        "saga of an unknown definition version left alone");
                    return Ok(Applied::UnknownDefinition {
                        definition: state.definition.clone(),
                        version: state.version,
                    });
                }
            },
            (None, Some(definition)) => definition,
            (None, None) => {
                self.ignored.note(saga_id, None, input);
                return Ok(Applied::Unchanged);
            }
        };
        if let (SagaInput::Operator(command), Some(state)) = (input, &state) {
            if let Some(reason) = operator::refusal(state, command.action) {
                return Ok(Applied::Refused { reason });
            }
        }
        // Every deadline is on the database's clock, the one the timer poller reads.
        let now: chrono::DateTime<Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut *tx)
            .await?;
        let mut decision = decide(definition, state.as_ref(), input, now);
        let Some(new_state) = decision
            .state
            .clone()
            .filter(|_| !decision.events.is_empty())
        else {
            self.observe(saga_id, definition, input);
            self.ignored.note(saga_id, state.as_ref(), input);
            return Ok(Applied::Unchanged);
        };
        let new_state = &new_state;
        self.hold_back(saga_id, &mut decision, now);
        if held_again(input, &mut decision) {
            // The history already says this command waits; only its timer moves.
            store::hold_version(tx, saga_id, version).await?;
            write_timer_changes(tx, saga_id, &decision.timers, now).await?;
            return Ok(Applied::Unchanged);
        }
        if let SagaInput::Reply { step, phase, .. } = input {
            record_step_duration(tx, saga_id, definition, step, *phase).await?;
        }
        let plan = self.plan(saga_id, definition, input, decision, new_state)?;
        outbox::enqueue(tx, &plan.messages).await?;
        write_timer_changes(tx, saga_id, &plan.decision.timers, now).await?;
        let version = store::append(tx, saga_id, version, &plan.events, &plan.projection).await?;
        let created_at = row.as_ref().map(|r| r.created_at);
        self.applied(saga_id, definition, input, &plan, created_at);
        Ok(Applied::Changed {
            status: plan.projection.status,
            version,
        })
    }

    /// What `decision` writes: its events, the projection of `new_state`, the outbox rows.
    pub(crate) fn plan(
        &self,
        saga_id: Uuid,
        definition: &SagaDefinition,
        input: &SagaInput,
        decision: Decision,
        new_state: &SagaState,
    ) -> Result<Plan> {
        let messages = self.messages(saga_id, definition, &decision, new_state)?;
        let events = decision
            .events
            .iter()
            .map(|event| Ok(NewEvent::new(event.name(), serde_json::to_value(event)?)))
            .collect::<Result<Vec<_>>>()?;
        let projection = Projection {
            definition: new_state.definition.clone(),
            definition_version: new_state.version as i32,
            status: new_state.status,
            step: new_state.current_step().map(str::to_string),
            input: new_state.input.clone(),
            state: store::snapshot(new_state)?,
            parked_reason: new_state.parked_reason.clone(),
            payload_hash: match input {
                SagaInput::Start { input, .. } => Some(digest::payload_hash(input)),
                _ => None,
            },
        };
        Ok(Plan {
            events,
            projection,
            messages,
            decision,
        })
    }

    /// Records a written `plan`: metrics, the parked warning, the participant's breaker.
    /// `created_at` is the saga's start, `None` for a saga this input started.
    pub(crate) fn applied(
        &self,
        saga_id: Uuid,
        definition: &SagaDefinition,
        input: &SagaInput,
        plan: &Plan,
        created_at: Option<chrono::DateTime<Utc>>,
    ) {
        let age = created_at
            .map(|at| (Utc::now() - at).to_std().unwrap_or_default())
            .unwrap_or_default();
        metrics::decision(definition.name(), &plan.decision, age);
        for news in &plan.decision.lifecycle {
            if let Lifecycle::Parked(reason) = news {
                warn!(%saga_id, definition = %definition.name(), %reason,
                    "saga parked; an operator must resume or resolve it");
            }
        }
        self.observe(saga_id, definition, input);
    }

    /// Holds back the forward commands of `decision` whose participant's breaker is not
    /// letting new work through: each waits at its step (see [`defer_commands`]) until
    /// the breaker may let it go, spread over up to one `recheck` so held sagas do not all
    /// ask at once.
    pub(crate) fn hold_back(
        &self,
        saga_id: Uuid,
        decision: &mut Decision,
        now: chrono::DateTime<Utc>,
    ) {
        let recheck = self.breakers.settings().recheck;
        let spread = recheck.mul_f64((saga_id.as_u128() % 1000) as f64 / 1000.0);
        defer_commands(decision, |command| {
            let command_ref = CommandRef::new(saga_id, command.step.clone(), command.attempt);
            match self.breakers.admit(&command.participant, &command_ref) {
                Admission::Send => None,
                Admission::Hold(wait) => {
                    metrics::command_deferred(&command.participant);
                    debug!(%saga_id, step = %command.step, participant = %command.participant,
                        ?wait, "forward command held back by the participant's breaker");
                    Some(now + chrono::Duration::from_std(wait + spread).unwrap_or_default())
                }
            }
        });
    }

    /// Tells the breaker of the participant a reply came from whether it answered or
    /// failed. (Reply timeouts are told by the timer poller, which knows a timer's kind.)
    pub(crate) fn observe(&self, saga_id: Uuid, definition: &SagaDefinition, input: &SagaInput) {
        let SagaInput::Reply {
            step: name,
            outcome,
            attempt,
            ..
        } = input
        else {
            return;
        };
        let Some((_, step)) = definition.step(name) else {
            return;
        };
        let signal = match outcome {
            ReplyOutcome::Failed { .. } => Signal::Failed,
            ReplyOutcome::Ok { .. } | ReplyOutcome::Rejected { .. } => Signal::Answered,
        };
        let command = CommandRef::new(saga_id, name.clone(), *attempt);
        self.breakers.record(step.participant(), &command, signal);
    }

    /// Commands and lifecycle news of a decision, as outbox rows keyed by saga id. Each
    /// command carries the saga's deadline, when it has one.
    fn messages(
        &self,
        saga_id: Uuid,
        definition: &SagaDefinition,
        decision: &Decision,
        state: &SagaState,
    ) -> Result<Vec<OutboxMessage>> {
        let key = saga_id.to_string();
        let trace_id = &state.trace_id;
        let traced = |message: OutboxMessage| {
            message.with_header(TRACEPARENT_HEADER, trace::child_traceparent(trace_id))
        };
        let deadline = state
            .deadline
            .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        let mut messages = Vec::with_capacity(decision.commands.len() + decision.lifecycle.len());
        for command in &decision.commands {
            let envelope = Envelope::new(MessageKind::Command, &command.payload)
                .for_saga(saga_id)
                .for_step(command.step.clone(), command.phase, command.attempt);
            let topic = self.topics.commands(&command.participant);
            let mut message = traced(OutboxMessage::envelope(topic, key.clone(), &envelope)?);
            if let Some(deadline) = &deadline {
                message = message.with_header(schemas::headers::SAGA_DEADLINE, deadline.clone());
            }
            messages.push(message);
        }
        for news in &decision.lifecycle {
            let event = match news {
                Lifecycle::Started => LifecycleEvent::Started {
                    definition: definition.name().to_string(),
                    version: definition.version(),
                },
                Lifecycle::Finished(outcome) => LifecycleEvent::Finished {
                    definition: definition.name().to_string(),
                    outcome: *outcome,
                },
                Lifecycle::Parked(reason) => LifecycleEvent::Parked {
                    definition: definition.name().to_string(),
                    reason: reason.clone(),
                },
            };
            let envelope = Envelope::new(MessageKind::Lifecycle, event).for_saga(saga_id);
            messages.push(traced(OutboxMessage::envelope(
                self.topics.lifecycle(),
                key.clone(),
                &envelope,
            )?));
        }
        Ok(messages)
    }
}

/// Records how long the participant of `step` took to answer `phase`, measured from when
/// the command's reply timeout was armed (the send).
async fn record_step_duration(
    tx: &mut PgConnection,
    saga_id: Uuid,
    definition: &SagaDefinition,
    step: &str,
    phase: schemas::Phase,
) -> Result<()> {
    let Some((_, def)) = definition.step(step) else {
        return Ok(());
    };
    let waited: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - armed_at)::float8 FROM timers
         WHERE saga_id = $1 AND step = $2 AND kind = $4 AND phase = $3",
    )
    .bind(saga_id)
    .bind(step)
    .bind(phase.as_str())
    .bind(TimerKind::Timeout.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(waited) = waited {
        metrics::step_answered(def.participant(), phase, waited);
    }
    Ok(())
}

/// Whether `decision`, the answer to a held command's deferral ending, holds the same
/// command back again; if so, drops its repeated `CommandDeferred` event, leaving only the
/// moved timer.
fn held_again(input: &SagaInput, decision: &mut Decision) -> bool {
    let SagaInput::DeferralEnded {
        step,
        phase,
        attempt,
    } = input
    else {
        return false;
    };
    let before = decision.events.len();
    decision.events.retain(|event| {
        !matches!(event, SagaEvent::CommandDeferred { step: s, phase: p, attempt: a, .. }
            if s == step && p == phase && a == attempt)
    });
    decision.events.len() < before && decision.events.is_empty()
}

/// Breakers for every participant of `registry`'s definitions.
fn participant_breakers(registry: &Registry, settings: BreakerSettings) -> Breakers {
    let participants: Vec<String> = registry
        .definitions()
        .flat_map(|d| d.steps().iter().map(|s| s.participant().to_string()))
        .collect();
    Breakers::new(settings, participants.iter().map(String::as_str))
}
