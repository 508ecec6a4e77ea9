//! Unit tests of the saga deadline and of commands held back by a circuit breaker: what
//! `decide` and `defer_commands` do, without I/O.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use schemas::{Phase, ReplyOutcome};
use serde::Deserialize;
use serde_json::json;

use super::*;

#[derive(Deserialize)]
struct Order {
    id: String,
}

/// funds (TCC) → points (compensable), a 30 s deadline, 3 forward attempts.
fn definition(mode: Mode) -> SagaDefinition {
    let definition = Definition::<Order>::new("order", 1)
        .trigger("order.requested", |o| o.id.clone())
        .tcc("funds", "balance", |_| json!({ "cents": 5 }))
        .step("points", "points", |_| json!({}), |_| json!({}))
        .timeout(Duration::from_secs(5))
        .retry(RetryPolicy::default().with_max_attempts(3))
        .deadline(Duration::from_secs(30));
    match mode {
        Mode::Sequential => definition.build().unwrap(),
        Mode::Parallel => definition.parallel().build().unwrap(),
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap()
}

fn at(seconds: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(seconds)
}

struct Saga {
    definition: SagaDefinition,
    state: Option<SagaState>,
}

impl Saga {
    fn started(mode: Mode) -> (Saga, Decision) {
        let mut saga = Saga {
            definition: definition(mode),
            state: None,
        };
        let start = SagaInput::Start {
            input: json!({ "id": "o-1" }),
            trace_id: "t".into(),
        };
        let decision = saga.input(start, t0());
        (saga, decision)
    }

    fn input(&mut self, input: SagaInput, now: DateTime<Utc>) -> Decision {
        let decision = decide(&self.definition, self.state.as_ref(), &input, now);
        if !decision.events.is_empty() {
            self.state = decision.state.clone();
        }
        decision
    }

    fn reply(
        &mut self,
        step: &str,
        phase: Phase,
        outcome: ReplyOutcome,
        now: DateTime<Utc>,
    ) -> Decision {
        let input = SagaInput::Reply {
            step: step.into(),
            phase,
            attempt: 1,
            outcome,
        };
        self.input(input, now)
    }

    fn state(&self) -> &SagaState {
        self.state.as_ref().unwrap()
    }
}

fn sent(decision: &Decision) -> Vec<(&str, Phase, u32)> {
    decision
        .commands
        .iter()
        .map(|c| (c.step.as_str(), c.phase, c.attempt))
        .collect()
}

#[test]
fn the_deadline_is_fixed_at_start_on_the_given_clock_and_armed_as_a_timer() {
    let (saga, decision) = Saga::started(Mode::Sequential);
    assert_eq!(saga.state().deadline, Some(at(30)));
    assert!(decision
        .events
        .contains(&SagaEvent::DeadlineSet { at: at(30) }));
    assert!(decision
        .timers
        .contains(&TimerChange::SetDeadline { fire_at: at(30) }));
}

#[test]
fn without_a_deadline_no_timer_is_set_and_the_state_has_none() {
    let definition = Definition::<Order>::new("order", 1)
        .trigger("order.requested", |o| o.id.clone())
        .tcc("funds", "balance", |_| json!({}))
        .build()
        .unwrap();
    let start = SagaInput::Start {
        input: json!({ "id": "o-1" }),
        trace_id: "t".into(),
    };
    let decision = decide(&definition, None, &start, t0());
    assert_eq!(decision.state.unwrap().deadline, None);
    assert!(!decision
        .timers
        .iter()
        .any(|t| matches!(t, TimerChange::SetDeadline { .. })));
}

#[test]
fn the_deadline_timer_compensates_a_saga_running_forward_and_undoes_the_step_in_flight() {
    let (mut saga, _) = Saga::started(Mode::Sequential);
    saga.reply("funds", Phase::Try, ReplyOutcome::ok(), at(1));
    // `points` is in flight when the deadline passes.
    let decision = saga.input(SagaInput::DeadlinePassed, at(30));
    assert_eq!(saga.state().status, SagaStatus::Compensating);
    assert_eq!(saga.state().failure.as_deref(), Some(DEADLINE_PASSED));
    // The step in flight may have taken effect: its undo goes first, no forward work.
    assert_eq!(sent(&decision), [("points", Phase::Compensate, 1)]);
    // A late ok for the forward step changes nothing: its undo is already on its way.
    let late = saga.reply("points", Phase::Action, ReplyOutcome::ok(), at(31));
    assert!(late.events.is_empty());
    saga.reply("points", Phase::Compensate, ReplyOutcome::ok(), at(32));
    let cancel = saga.reply("funds", Phase::Cancel, ReplyOutcome::ok(), at(33));
    assert_eq!(saga.state().status, SagaStatus::Compensated);
    assert!(cancel.timers.contains(&TimerChange::ClearAll));
}

#[test]
fn the_deadline_has_no_effect_once_compensating_or_forward_work_is_done() {
    let (mut saga, _) = Saga::started(Mode::Sequential);
    saga.reply("funds", Phase::Try, ReplyOutcome::ok(), at(1));
    let no = ReplyOutcome::Rejected {
        reason: "no points".into(),
    };
    saga.reply("points", Phase::Action, no, at(2));
    assert_eq!(saga.state().status, SagaStatus::Compensating);
    assert!(saga
        .input(SagaInput::DeadlinePassed, at(30))
        .events
        .is_empty());

    let (mut saga, _) = Saga::started(Mode::Parallel);
    saga.reply("funds", Phase::Try, ReplyOutcome::ok(), at(1));
    saga.reply("points", Phase::Action, ReplyOutcome::ok(), at(2));
    // Confirming: the forward steps all succeeded, so the deadline does not stop it.
    assert_eq!(saga.state().status, SagaStatus::Running);
    assert!(saga
        .input(SagaInput::DeadlinePassed, at(30))
        .events
        .is_empty());
    saga.reply("funds", Phase::Confirm, ReplyOutcome::ok(), at(31));
    assert_eq!(saga.state().status, SagaStatus::Completed);
}

#[test]
fn past_the_deadline_a_late_timer_does_not_let_forward_work_go_on() {
    let (mut saga, _) = Saga::started(Mode::Sequential);
    // The deadline timer has not fired yet, but the reply comes after the deadline: the
    // next forward step is not sent, the saga compensates.
    let decision = saga.reply("funds", Phase::Try, ReplyOutcome::ok(), at(31));
    assert_eq!(saga.state().status, SagaStatus::Compensating);
    assert_eq!(sent(&decision), [("funds", Phase::Cancel, 1)]);
    // Before the deadline the same reply moves forward.
    let (mut saga, _) = Saga::started(Mode::Sequential);
    let decision = saga.reply("funds", Phase::Try, ReplyOutcome::ok(), at(29));
    assert_eq!(sent(&decision), [("points", Phase::Action, 1)]);
}

#[test]
fn a_held_back_command_waits_in_flight_with_a_deferred_timer_and_keeps_its_attempt() {
    let (mut saga, mut decision) = Saga::started(Mode::Sequential);
    let held = defer_commands(&mut decision, |_| Some(at(10)));
    assert_eq!(held, 1);
    assert!(decision.commands.is_empty());
    let deferred = SagaEvent::CommandDeferred {
        step: "funds".into(),
        phase: Phase::Try,
        attempt: 1,
        until: at(10),
    };
    assert!(decision.events.contains(&deferred));
    assert!(!decision
        .events
        .iter()
        .any(|e| matches!(e, SagaEvent::CommandSent { .. })));
    assert!(decision.timers.contains(&TimerChange::Set {
        step: "funds".into(),
        kind: TimerKind::Deferred,
        phase: Phase::Try,
        attempt: 1,
        fire_at: at(10),
    }));
    // The fold of the rewritten events is the state decide computed: in flight.
    let mut folded = None;
    for event in &decision.events {
        folded = SagaState::apply(folded, event);
    }
    assert_eq!(folded.as_ref(), decision.state.as_ref());
    saga.state = folded;
    // When the wait ends, the same attempt goes out (no attempt used up by the wait).
    let resent = saga.input(
        SagaInput::DeferralEnded {
            step: "funds".into(),
            phase: Phase::Try,
            attempt: 1,
        },
        at(10),
    );
    assert_eq!(sent(&resent), [("funds", Phase::Try, 1)]);
    // A stale end of a wait (another attempt) does nothing.
    let stale = saga.input(
        SagaInput::DeferralEnded {
            step: "funds".into(),
            phase: Phase::Try,
            attempt: 7,
        },
        at(11),
    );
    assert!(stale.events.is_empty());
}

#[test]
fn waits_never_use_up_attempts() {
    let (mut saga, mut decision) = Saga::started(Mode::Sequential);
    defer_commands(&mut decision, |_| Some(at(1)));
    saga.state = decision.state.clone();
    // Held back many more times than the 3 attempts allow: still attempt 1, still running.
    for second in 1..10 {
        let mut again = saga.input(
            SagaInput::DeferralEnded {
                step: "funds".into(),
                phase: Phase::Try,
                attempt: 1,
            },
            at(second),
        );
        assert_eq!(defer_commands(&mut again, |_| Some(at(second + 1))), 1);
        saga.state = again.state.clone();
        assert_eq!(saga.state().status, SagaStatus::Running);
    }
    let sent_now = saga.input(
        SagaInput::DeferralEnded {
            step: "funds".into(),
            phase: Phase::Try,
            attempt: 1,
        },
        at(12),
    );
    assert_eq!(sent(&sent_now), [("funds", Phase::Try, 1)]);
}

#[test]
fn settling_commands_are_never_offered_to_the_breaker() {
    let (mut saga, _) = Saga::started(Mode::Sequential);
    saga.reply("funds", Phase::Try, ReplyOutcome::ok(), at(1));
    let no = ReplyOutcome::Rejected {
        reason: "no".into(),
    };
    let mut decision = saga.reply("points", Phase::Action, no, at(2));
    assert_eq!(sent(&decision), [("funds", Phase::Cancel, 1)]);
    let mut offered = Vec::new();
    let held = defer_commands(&mut decision, |command| {
        offered.push(command.phase);
        Some(at(5))
    });
    assert_eq!(held, 0);
    assert!(offered.is_empty());
    assert_eq!(sent(&decision), [("funds", Phase::Cancel, 1)]);
}

#[test]
fn only_the_commands_held_are_deferred_in_parallel_mode() {
    let (_, mut decision) = Saga::started(Mode::Parallel);
    let held = defer_commands(&mut decision, |command| {
        (command.participant == "points").then(|| at(4))
    });
    assert_eq!(held, 1);
    assert_eq!(sent(&decision), [("funds", Phase::Try, 1)]);
    assert!(decision.timers.iter().any(|t| matches!(t,
        TimerChange::Set { step, kind: TimerKind::Timeout, .. } if step == "funds")));
    assert!(decision.timers.iter().any(|t| matches!(t,
        TimerChange::Set { step, kind: TimerKind::Deferred, .. } if step == "points")));
}

#[test]
fn a_deferred_forward_step_is_undone_when_the_deadline_passes() {
    let (mut saga, mut decision) = Saga::started(Mode::Sequential);
    defer_commands(&mut decision, |_| Some(at(40)));
    saga.state = decision.state.clone();
    let decision = saga.input(SagaInput::DeadlinePassed, at(30));
    assert_eq!(saga.state().status, SagaStatus::Compensating);
    // Its command may never have been sent; the cancel is a null compensation then.
    assert_eq!(sent(&decision), [("funds", Phase::Cancel, 1)]);
    // The deferral ending later sends nothing forward.
    let late = saga.input(
        SagaInput::DeferralEnded {
            step: "funds".into(),
            phase: Phase::Try,
            attempt: 1,
        },
        at(40),
    );
    assert!(late.commands.is_empty());
}
