//! The saga logic (pure): given a definition, a state and an input, what happens next.
//!
//! [`decide`] first reacts to the input (events about what arrived), then advances the saga
//! as far as the new state allows (events about what to do next), and finally derives the
//! effects of those events: commands to send, timers to set or clear, lifecycle news.

use chrono::{DateTime, Utc};
use schemas::{Phase, ReplyOutcome, SagaOutcome};
use serde_json::Value;

use crate::definition::{Mode, SagaDefinition, StepKind};
use crate::operator::{self, OperatorAction, OperatorCommand};
use crate::retry::jitter_seed;
use crate::state::{Progress, SagaEvent, SagaState, SagaStatus, TimerKind};

/// Why a saga compensates when its deadline passes (also the reason participants give
/// when they refuse forward work past it).
pub const DEADLINE_PASSED: &str = "deadline passed";

/// Something that arrived for a saga.
#[derive(Debug, Clone, PartialEq)]
pub enum SagaInput {
    /// A trigger asks to start it with `input`.
    Start {
        /// The saga input.
        input: Value,
        /// W3C trace id for the saga's messages.
        trace_id: String,
    },
    /// A participant answered a command.
    Reply {
        /// Step.
        step: String,
        /// Phase.
        phase: Phase,
        /// The attempt answered.
        attempt: u32,
        /// The answer.
        outcome: ReplyOutcome,
    },
    /// A step's timer fired: no final answer came in time.
    TimerFired {
        /// Step.
        step: String,
        /// Phase the timer was set for.
        phase: Phase,
        /// Attempt the timer was set for.
        attempt: u32,
    },
    /// An operator acted (refused actions change nothing; see [`operator::refusal`]).
    Operator(OperatorCommand),
    /// The saga's deadline timer fired: a saga still running forward compensates.
    DeadlinePassed,
    /// A forward command held back by its participant's circuit breaker may go now: the
    /// same attempt is sent again (if the saga still waits for it).
    DeferralEnded {
        /// Step.
        step: String,
        /// Phase held back.
        phase: Phase,
        /// Attempt held back.
        attempt: u32,
    },
}

/// A command to put in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingCommand {
    /// Step.
    pub step: String,
    /// Participant that runs it.
    pub participant: String,
    /// Phase.
    pub phase: Phase,
    /// Attempt, from 1.
    pub attempt: u32,
    /// Command body.
    pub payload: Value,
}

/// A change to a step's durable timer (one per step).
#[derive(Debug, Clone, PartialEq)]
pub enum TimerChange {
    /// Fire at `fire_at` unless an answer comes first.
    Set {
        /// Step.
        step: String,
        /// What the timer waits for.
        kind: TimerKind,
        /// Phase in flight.
        phase: Phase,
        /// Attempt in flight.
        attempt: u32,
        /// When.
        fire_at: DateTime<Utc>,
    },
    /// The step needs no wake-up any more.
    Clear {
        /// Step.
        step: String,
    },
    /// The saga's deadline: fire at `fire_at` (one per saga, apart from the step timers).
    SetDeadline {
        /// When.
        fire_at: DateTime<Utc>,
    },
    /// The saga needs no wake-ups any more.
    ClearAll,
}

/// Public news about the saga.
#[derive(Debug, Clone, PartialEq)]
pub enum Lifecycle {
    /// It started.
    Started,
    /// It ended.
    Finished(SagaOutcome),
    /// It needs an operator.
    Parked(String),
}

/// Everything one input leads to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    /// Events to append, in order.
    pub events: Vec<SagaEvent>,
    /// Commands to send.
    pub commands: Vec<OutgoingCommand>,
    /// Timer changes, in order (a later change of the same step wins).
    pub timers: Vec<TimerChange>,
    /// Lifecycle news to publish.
    pub lifecycle: Vec<Lifecycle>,
    /// The state after the events (`None` when the saga does not exist).
    pub state: Option<SagaState>,
}

/// Decides what `input` does to a saga of `definition` currently in `state`, at `now`.
pub fn decide(
    definition: &SagaDefinition,
    state: Option<&SagaState>,
    input: &SagaInput,
    now: DateTime<Utc>,
) -> Decision {
    let mut state = state.cloned();
    let mut events = react(definition, state.as_ref(), input, now);
    for event in &events {
        state = SagaState::apply(state, event);
    }
    // A late deadline timer must not let forward work go on: whatever arrives past the
    // deadline of a saga still running forward turns it to compensation first.
    if !events.is_empty() && state.as_ref().is_some_and(|s| past_deadline(s, now)) {
        let stop = SagaEvent::CompensationStarted {
            reason: DEADLINE_PASSED.into(),
        };
        state = SagaState::apply(state, &stop);
        events.push(stop);
    }
    if !events.is_empty() {
        while let Some(current) = state.as_ref() {
            let next = advance(definition, current);
            if next.is_empty() {
                break;
            }
            for event in next {
                state = SagaState::apply(state, &event);
                events.push(event);
            }
        }
    }
    let mut decision = effects(definition, state.as_ref(), &events, now);
    decision.events = events;
    decision.state = state;
    decision
}

/// Whether the saga still runs forward (some forward step not done) with its deadline
/// at or before `now`.
fn past_deadline(state: &SagaState, now: DateTime<Utc>) -> bool {
    state.status == SagaStatus::Running
        && state.deadline.is_some_and(|deadline| deadline <= now)
        && !forward_done(state)
}

/// Whether every forward step succeeded (the saga is confirming or done: a deadline no
/// longer stops it).
fn forward_done(state: &SagaState) -> bool {
    state.steps.iter().all(|s| s.forward == Progress::Succeeded)
}

/// Events recording what arrived, or none when it changes nothing (duplicate, stale).
fn react(
    definition: &SagaDefinition,
    state: Option<&SagaState>,
    input: &SagaInput,
    now: DateTime<Utc>,
) -> Vec<SagaEvent> {
    match (input, state) {
        (SagaInput::Start { input, trace_id }, None) => {
            let mut events = vec![SagaEvent::Started {
                definition: definition.name().to_string(),
                version: definition.version(),
                input: input.clone(),
                steps: definition
                    .steps()
                    .iter()
                    .map(|s| s.name().to_string())
                    .collect(),
                trace_id: trace_id.clone(),
            }];
            if let Some(deadline) = definition.deadline() {
                let at =
                    now + chrono::Duration::from_std(deadline).unwrap_or(chrono::Duration::MAX);
                events.push(SagaEvent::DeadlineSet { at });
            }
            events
        }
        // A trigger for a saga that exists: the same key arrived again.
        (SagaInput::Start { .. }, Some(_)) | (_, None) => vec![],
        (SagaInput::Operator(command), Some(state)) => react_to_operator(state, command),
        (_, Some(state)) if state.status.is_terminal() || state.status == SagaStatus::Parked => {
            vec![]
        }
        (SagaInput::DeadlinePassed, Some(state)) => {
            if state.status == SagaStatus::Running && !forward_done(state) {
                vec![SagaEvent::CompensationStarted {
                    reason: DEADLINE_PASSED.into(),
                }]
            } else {
                vec![]
            }
        }
        (
            SagaInput::DeferralEnded {
                step,
                phase,
                attempt,
            },
            Some(state),
        ) => {
            if awaited(state, step, *phase, Some(*attempt)) {
                vec![SagaEvent::CommandSent {
                    step: step.clone(),
                    phase: *phase,
                    attempt: *attempt,
                }]
            } else {
                vec![]
            }
        }
        (
            SagaInput::Reply {
                step,
                phase,
                attempt,
                outcome,
            },
            Some(state),
        ) => react_to_reply(definition, state, step, *phase, *attempt, outcome),
        (
            SagaInput::TimerFired {
                step,
                phase,
                attempt,
            },
            Some(state),
        ) => {
            if !awaited(state, step, *phase, Some(*attempt)) {
                return vec![];
            }
            retry_or_give_up(
                definition,
                step,
                *phase,
                *attempt,
                "no reply before the timeout",
            )
        }
    }
}

fn react_to_operator(state: &SagaState, command: &OperatorCommand) -> Vec<SagaEvent> {
    if operator::refusal(state, command.action).is_some() {
        return vec![];
    }
    let mut events = vec![SagaEvent::OperatorActed {
        action: command.action,
        actor: command.actor.clone(),
        reason: command.reason.clone(),
    }];
    match command.action {
        OperatorAction::Retry => {
            events.extend(operator::waiting_phases(state).into_iter().map(
                |(step, phase, attempt)| SagaEvent::CommandSent {
                    step,
                    phase,
                    attempt: attempt + 1,
                },
            ));
        }
        OperatorAction::Compensate => events.push(SagaEvent::CompensationStarted {
            reason: format!(
                "compensation requested by {}: {}",
                command.actor, command.reason
            ),
        }),
        // The fold does it: back to undo or confirm, or ended by hand.
        OperatorAction::Resume | OperatorAction::Resolve => {}
    }
    events
}

/// Whether `phase` of `step` is what the saga waits for (at `attempt`, when given). Once
/// compensating, the saga no longer waits for forward phases: their undo is on its way.
fn awaited(state: &SagaState, step: &str, phase: Phase, attempt: Option<u32>) -> bool {
    crate::ignored::not_awaited(state, step, phase, attempt).is_none()
}

fn react_to_reply(
    definition: &SagaDefinition,
    state: &SagaState,
    step: &str,
    phase: Phase,
    attempt: u32,
    outcome: &ReplyOutcome,
) -> Vec<SagaEvent> {
    if crate::ignored::why_ignored(Some(state), step, phase, attempt, outcome).is_some() {
        return vec![];
    }
    let received = SagaEvent::ReplyReceived {
        step: step.to_string(),
        phase,
        attempt,
        outcome: outcome.clone(),
    };
    match outcome {
        ReplyOutcome::Failed { error }
            if !definition.retry_for(step, phase).allows_after(attempt) =>
        {
            vec![received, gave_up(step, phase, attempt, error)]
        }
        _ => vec![received],
    }
}

fn retry_or_give_up(
    definition: &SagaDefinition,
    step: &str,
    phase: Phase,
    attempt: u32,
    why: &str,
) -> Vec<SagaEvent> {
    if definition.retry_for(step, phase).allows_after(attempt) {
        vec![SagaEvent::CommandSent {
            step: step.to_string(),
            phase,
            attempt: attempt + 1,
        }]
    } else {
        vec![gave_up(step, phase, attempt, why)]
    }
}

fn gave_up(step: &str, phase: Phase, attempts: u32, why: &str) -> SagaEvent {
    SagaEvent::GaveUp {
        step: step.to_string(),
        phase,
        reason: format!("{phase} of `{step}` gave up after {attempts} attempts: {why}"),
    }
}

fn send(step: &str, phase: Phase) -> SagaEvent {
    SagaEvent::CommandSent {
        step: step.to_string(),
        phase,
        attempt: 1,
    }
}

/// The next events the state calls for (none when the saga must wait for an answer).
fn advance(definition: &SagaDefinition, state: &SagaState) -> Vec<SagaEvent> {
    match state.status {
        SagaStatus::Running => advance_forward(definition, state),
        SagaStatus::Compensating => advance_undo(definition, state),
        SagaStatus::Completed
        | SagaStatus::Compensated
        | SagaStatus::Parked
        | SagaStatus::ResolvedManually => vec![],
    }
}

fn failure_reason(progress: &Progress) -> Option<&str> {
    match progress {
        Progress::Rejected { reason } | Progress::GaveUp { reason } => Some(reason),
        _ => None,
    }
}

fn advance_forward(definition: &SagaDefinition, state: &SagaState) -> Vec<SagaEvent> {
    if let Some(reason) = state.steps.iter().find_map(|s| failure_reason(&s.forward)) {
        return vec![SagaEvent::CompensationStarted {
            reason: reason.to_string(),
        }];
    }
    let pairs = || definition.steps().iter().zip(&state.steps);
    if pairs().all(|(_, p)| p.forward == Progress::Succeeded) {
        // Every forward step succeeded: confirm the TCC branches, then complete.
        let tcc = || pairs().filter(|(d, _)| d.kind() == StepKind::Tcc);
        if let Some(reason) = tcc().find_map(|(_, p)| failure_reason(&p.settle)) {
            // Let every other confirm finish first: parked means nothing is in flight.
            if !tcc().any(|(_, p)| unsettled(&p.settle)) {
                return vec![SagaEvent::Parked {
                    reason: format!("confirm failed: {reason}"),
                }];
            }
        }
        let confirms: Vec<_> = tcc()
            .filter(|(_, p)| p.settle == Progress::Idle)
            .map(|(d, _)| send(d.name(), Phase::Confirm))
            .collect();
        if !confirms.is_empty() {
            return confirms;
        }
        if tcc().all(|(_, p)| p.settle == Progress::Succeeded) {
            return vec![SagaEvent::Completed];
        }
        return vec![];
    }
    let idle = pairs().filter(|(_, p)| p.forward == Progress::Idle);
    match definition.mode() {
        Mode::Parallel => idle
            .map(|(d, _)| send(d.name(), d.forward_phase()))
            .collect(),
        Mode::Sequential => {
            let in_flight = pairs().any(|(_, p)| matches!(p.forward, Progress::InFlight { .. }));
            match (in_flight, idle.into_iter().next()) {
                (false, Some((d, _))) => vec![send(d.name(), d.forward_phase())],
                _ => vec![],
            }
        }
    }
}

/// Whether a settling phase (undo or confirm) has yet to be sent or answered.
fn unsettled(progress: &Progress) -> bool {
    matches!(progress, Progress::Idle | Progress::InFlight { .. })
}

/// Whether a step's forward phase may have taken effect, so it must be undone.
fn needs_undo(progress: &Progress) -> bool {
    matches!(
        progress,
        Progress::Succeeded | Progress::InFlight { .. } | Progress::GaveUp { .. }
    )
}

fn advance_undo(definition: &SagaDefinition, state: &SagaState) -> Vec<SagaEvent> {
    let to_undo: Vec<_> = definition
        .steps()
        .iter()
        .zip(&state.steps)
        .filter(|(_, p)| needs_undo(&p.forward))
        .collect();
    if let Some(reason) = to_undo.iter().find_map(|(_, p)| failure_reason(&p.settle)) {
        // In parallel mode the other branches are undone to the end first, so a parked
        // saga has nothing in flight and its operator sees every branch settled. In
        // sequential mode the earlier steps wait for the later one's undo.
        let others_unsettled = to_undo.iter().any(|(_, p)| unsettled(&p.settle));
        if definition.mode() == Mode::Sequential || !others_unsettled {
            return vec![SagaEvent::Parked {
                reason: format!("undo failed: {reason}"),
            }];
        }
    }
    let pending: Vec<_> = to_undo
        .iter()
        .filter(|(_, p)| p.settle != Progress::Succeeded)
        .collect();
    if pending.is_empty() {
        return vec![SagaEvent::Compensated];
    }
    match definition.mode() {
        Mode::Parallel => pending
            .iter()
            .filter(|(_, p)| p.settle == Progress::Idle)
            .map(|(d, _)| send(d.name(), d.undo_phase()))
            .collect(),
        // Reverse order: the latest step first, one at a time.
        Mode::Sequential => match pending.last() {
            Some((d, p)) if p.settle == Progress::Idle => vec![send(d.name(), d.undo_phase())],
            _ => vec![],
        },
    }
}

/// Commands, timers and lifecycle news that follow from `events`.
fn effects(
    definition: &SagaDefinition,
    state: Option<&SagaState>,
    events: &[SagaEvent],
    now: DateTime<Utc>,
) -> Decision {
    let mut decision = Decision::default();
    let Some(state) = state else {
        return decision;
    };
    let at = |wait: std::time::Duration| now + chrono::Duration::from_std(wait).unwrap_or_default();
    for event in events {
        match event {
            SagaEvent::Started { .. } => decision.lifecycle.push(Lifecycle::Started),
            SagaEvent::DeadlineSet { at } => decision
                .timers
                .push(TimerChange::SetDeadline { fire_at: *at }),
            SagaEvent::CommandDeferred {
                step,
                phase,
                attempt,
                until,
            } => decision.timers.push(TimerChange::Set {
                step: step.clone(),
                kind: TimerKind::Deferred,
                phase: *phase,
                attempt: *attempt,
                fire_at: *until,
            }),
            SagaEvent::CommandSent {
                step,
                phase,
                attempt,
            } => {
                let Some((_, def)) = definition.step(step) else {
                    continue;
                };
                let payload = def
                    .payload(*phase, &state.input)
                    .unwrap_or_else(|error| serde_json::json!({ "error": error }));
                decision.commands.push(OutgoingCommand {
                    step: step.clone(),
                    participant: def.participant().to_string(),
                    phase: *phase,
                    attempt: *attempt,
                    payload,
                });
                decision.timers.push(TimerChange::Set {
                    step: step.clone(),
                    kind: TimerKind::Timeout,
                    phase: *phase,
                    attempt: *attempt,
                    fire_at: at(definition.timeout_for(step)),
                });
            }
            SagaEvent::ReplyReceived {
                step,
                phase,
                attempt,
                outcome: ReplyOutcome::Failed { .. },
            } => decision.timers.push(TimerChange::Set {
                step: step.clone(),
                kind: TimerKind::Backoff,
                phase: *phase,
                attempt: *attempt,
                fire_at: at(definition
                    .retry_for(step, *phase)
                    .jittered_backoff(*attempt, backoff_seed(state, step, *phase, *attempt))),
            }),
            SagaEvent::ReplyReceived { step, .. } | SagaEvent::GaveUp { step, .. } => decision
                .timers
                .push(TimerChange::Clear { step: step.clone() }),
            SagaEvent::CompensationStarted { .. } => {}
            SagaEvent::Completed => {
                decision.timers.push(TimerChange::ClearAll);
                decision
                    .lifecycle
                    .push(Lifecycle::Finished(SagaOutcome::Completed));
            }
            SagaEvent::Compensated => {
                decision.timers.push(TimerChange::ClearAll);
                decision
                    .lifecycle
                    .push(Lifecycle::Finished(SagaOutcome::Compensated));
            }
            SagaEvent::Parked { reason } => {
                decision.timers.push(TimerChange::ClearAll);
                decision.lifecycle.push(Lifecycle::Parked(reason.clone()));
            }
            SagaEvent::OperatorActed {
                action: OperatorAction::Resolve,
                ..
            } => {
                decision.timers.push(TimerChange::ClearAll);
                decision
                    .lifecycle
                    .push(Lifecycle::Finished(SagaOutcome::ResolvedManually));
            }
            SagaEvent::OperatorActed { .. } => {}
        }
    }
    decision
}

/// The jitter seed of one retry wait: the saga (its definition, trace and input, which
/// holds its idempotency key), the step, the phase and the attempt. Sagas that fail
/// together get different waits; deciding the same input again gives the same wait.
fn backoff_seed(state: &SagaState, step: &str, phase: Phase, attempt: u32) -> u64 {
    let input = state.input.to_string();
    jitter_seed([
        state.definition.as_bytes(),
        state.trace_id.as_bytes(),
        input.as_bytes(),
        step.as_bytes(),
        phase.as_str().as_bytes(),
        &attempt.to_le_bytes(),
    ])
}
