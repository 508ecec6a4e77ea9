//! Unit tests of `decide`: every transition of the saga state machine, without I/O.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use schemas::{Phase, ReplyOutcome, SagaOutcome};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::*;

#[derive(Serialize, Deserialize)]
struct Order {
    id: String,
    cents: i64,
}

fn order() -> serde_json::Value {
    json!({ "id": "o-1", "cents": 500 })
}

/// funds (TCC) → points (compensable) → coupon (compensable).
fn definition(mode: Mode) -> SagaDefinition {
    let definition = Definition::<Order>::new("order", 3)
        .trigger("order.requested", |o| o.id.clone())
        .tcc("funds", "balance", |o| json!({ "cents": o.cents }))
        .step(
            "points",
            "points",
            |_| json!({ "op": "deduct" }),
            |_| json!({ "op": "refund" }),
        )
        .step(
            "coupon",
            "coupons",
            |_| json!({ "op": "redeem" }),
            |_| json!({ "op": "restore" }),
        )
        .with_timeout(Duration::from_secs(9))
        .timeout(Duration::from_secs(5))
        .retry(
            RetryPolicy::exponential(Duration::from_millis(100), Duration::from_secs(1))
                .with_max_attempts(3),
        )
        .settle_retry(
            RetryPolicy::exponential(Duration::from_millis(100), Duration::from_secs(1))
                .with_max_attempts(2),
        );
    match mode {
        Mode::Sequential => definition.build().unwrap(),
        Mode::Parallel => definition.parallel().build().unwrap(),
    }
}

fn start() -> SagaInput {
    SagaInput::Start {
        input: order(),
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
}

/// Drives a saga through inputs, keeping the state.
struct Saga {
    definition: SagaDefinition,
    state: Option<SagaState>,
}

impl Saga {
    fn new(mode: Mode) -> Self {
        Saga {
            definition: definition(mode),
            state: None,
        }
    }

    fn started(mode: Mode) -> (Self, Decision) {
        let mut saga = Saga::new(mode);
        let decision = saga.input(start());
        (saga, decision)
    }

    fn input(&mut self, input: SagaInput) -> Decision {
        let decision = decide(&self.definition, self.state.as_ref(), &input, now());
        if !decision.events.is_empty() {
            self.state = decision.state.clone();
        }
        decision
    }

    fn reply(&mut self, step: &str, phase: Phase, attempt: u32, outcome: ReplyOutcome) -> Decision {
        self.input(SagaInput::Reply {
            step: step.into(),
            phase,
            attempt,
            outcome,
        })
    }

    fn ok(&mut self, step: &str, phase: Phase) -> Decision {
        self.reply(step, phase, 1, ReplyOutcome::ok())
    }

    fn status(&self) -> SagaStatus {
        self.state.as_ref().unwrap().status
    }
}

fn rejected(reason: &str) -> ReplyOutcome {
    ReplyOutcome::Rejected {
        reason: reason.into(),
    }
}

fn failed() -> ReplyOutcome {
    ReplyOutcome::Failed {
        error: "db down".into(),
    }
}

fn sent(decision: &Decision) -> Vec<(String, Phase, u32)> {
    decision
        .commands
        .iter()
        .map(|c| (c.step.clone(), c.phase, c.attempt))
        .collect()
}

fn cmd(step: &str, phase: Phase, attempt: u32) -> (String, Phase, u32) {
    (step.to_string(), phase, attempt)
}

#[test]
fn start_sends_the_first_step_with_its_body_and_a_timeout() {
    let (saga, decision) = Saga::started(Mode::Sequential);
    assert_eq!(saga.status(), SagaStatus::Running);
    assert_eq!(sent(&decision), [cmd("funds", Phase::Try, 1)]);
    assert_eq!(decision.commands[0].participant, "balance");
    assert_eq!(decision.commands[0].payload, json!({ "cents": 500 }));
    assert_eq!(decision.lifecycle, [Lifecycle::Started]);
    assert_eq!(
        decision.timers,
        [TimerChange::Set {
            step: "funds".into(),
            kind: TimerKind::Timeout,
            phase: Phase::Try,
            attempt: 1,
            fire_at: now() + chrono::Duration::seconds(5)
        }]
    );
    let names: Vec<_> = decision.events.iter().map(SagaEvent::name).collect();
    assert_eq!(names, ["Started", "CommandSent"]);
}

#[test]
fn a_second_trigger_for_the_same_saga_changes_nothing() {
    let (mut saga, _) = Saga::started(Mode::Sequential);
    let again = saga.input(start());
    assert!(again.events.is_empty() && again.commands.is_empty() && again.timers.is_empty());
}

#[test]
fn parallel_mode_sends_every_forward_step_at_once() {
    let (_, decision) = Saga::started(Mode::Parallel);
    assert_eq!(
        sent(&decision),
        [
            cmd("funds", Phase::Try, 1),
            cmd("points", Phase::Action, 1),
            cmd("coupon", Phase::Action, 1)
        ]
    );
}

#[test]
fn sequential_success_confirms_the_tcc_branch_then_completes() {
    let (mut saga, _) = Saga::started(Mode::Sequential);
    assert_eq!(
        sent(&saga.ok("funds", Phase::Try)),
        [cmd("points", Phase::Action, 1)]
    );
    assert_eq!(
        sent(&saga.ok("points", Phase::Action)),
        [cmd("coupon", Phase::Action, 1)]
    );
    let confirm = saga.ok("coupon", Phase::Action);
    assert_eq!(sent(&confirm), [cmd("funds", Phase::Confirm, 1)]);
    assert_eq!(saga.status(), SagaStatus::Running);
    let done = saga.ok("funds", Phase::Confirm);
    assert_eq!(saga.status(), SagaStatus::Completed);
    assert!(done.commands.is_empty());
    assert_eq!(
        done.lifecycle,
        [Lifecycle::Finished(SagaOutcome::Completed)]
    );
    assert_eq!(done.timers.last(), Some(&TimerChange::ClearAll));
}

#[test]
fn a_rejection_compensates_completed_steps_in_reverse_then_cancels() {
    let (mut saga, _) = Saga::started(Mode::Sequential);
    saga.ok("funds", Phase::Try);
    saga.ok("points", Phase::Action);
    let decision = saga.reply("coupon", Phase::Action, 1, rejected("coupon used"));
    assert_eq!(saga.status(), SagaStatus::Compensating);
    assert_eq!(
        saga.state.as_ref().unwrap().failure.as_deref(),
        Some("coupon used")
    );
    // The rejected step did nothing, so the last completed one is undone first.
    assert_eq!(sent(&decision), [cmd("points", Phase::Compensate, 1)]);
    assert_eq!(decision.commands[0].payload, json!({ "op": "refund" }));
    assert_eq!(
        sent(&saga.ok("points", Phase::Compensate)),
        [cmd("funds", Phase::Cancel, 1)]
    );
    let done = saga.ok("funds", Phase::Cancel);
    assert_eq!(saga.status(), SagaStatus::Compensated);
    assert_eq!(
        done.lifecycle,
        [Lifecycle::Finished(SagaOutcome::Compensated)]
    );
}

#[test]
fn a_rejected_first_step_compensates_to_nothing() {
    let (mut saga, _) = Saga::started(Mode::Sequential);
    let decision = saga.reply("funds", Phase::Try, 1, rejected("insufficient funds"));
    assert_eq!(saga.status(), SagaStatus::Compensated);
    assert!(decision.commands.is_empty());
    let names: Vec<_> = decision.events.iter().map(SagaEvent::name).collect();
    assert_eq!(
        names,
        ["ReplyReceived", "CompensationStarted", "Compensated"]
    );
}

#[test]
fn parallel_rejection_undoes_done_and_in_flight_steps_at_once() {
    let (mut saga, _) = Saga::started(Mode::Parallel);
    saga.ok("points", Phase::Action);
    let decision = saga.reply("coupon", Phase::Action, 1, rejected("expired"));
    // funds is still in flight: its cancel goes out too (the barrier makes it safe).
    assert_eq!(
        sent(&decision),
        [
            cmd("funds", Phase::Cancel, 1),
            cmd("points", Phase::Compensate, 1)
        ]
    );
    // The late try answer no longer matters.
    let late = saga.ok("funds", Phase::Try);
    assert!(late.events.is_empty());
    saga.ok("funds", Phase::Cancel);
    assert_eq!(saga.status(), SagaStatus::Compensating);
    saga.ok("points", Phase::Compensate);
    assert_eq!(saga.status(), SagaStatus::Compensated);
}

#[test]
fn parallel_success_waits_for_every_step() {
    let (mut saga, _) = Saga::started(Mode::Parallel);
    assert!(saga.ok("coupon", Phase::Action).commands.is_empty());
    assert!(saga.ok("funds", Phase::Try).commands.is_empty());
    assert_eq!(
        sent(&saga.ok("points", Phase::Action)),
        [cmd("funds", Phase::Confirm, 1)]
    );
}

#[test]
fn a_timeout_resends_the_same_command_as_the_next_attempt() {
    let (mut saga, _) = Saga::started(Mode::Sequential);
    let decision = saga.input(SagaInput::TimerFired {
        step: "funds".into(),
        phase: Phase::Try,
        attempt: 1,
    });
    assert_eq!(sent(&decision), [cmd("funds", Phase::Try, 2)]);
    assert_eq!(decision.commands[0].payload, json!({ "cents": 500 }));
    // A stale timer (an older attempt) does nothing.
    let stale = saga.input(SagaInput::TimerFired {
        step: "funds".into(),
        phase: Phase::Try,
        attempt: 1,
    });
    assert!(stale.events.is_empty());
    // The answer to the first attempt still counts: same barrier key, same effect.
    assert_eq!(
        sent(&saga.ok("funds", Phase::Try)),
        [cmd("points", Phase::Action, 1)]
    );
}

/// When the backoff timer set by a transient failure of `step`'s `phase` fires.
fn backoff_fire_at(decision: &Decision, step: &str, phase: Phase, attempt: u32) -> DateTime<Utc> {
    match decision.timers.as_slice() {
        [TimerChange::Set {
            step: s,
            kind: TimerKind::Backoff,
            phase: p,
            attempt: a,
            fire_at,
        }] if s == step && *p == phase && *a == attempt => *fire_at,
        other => panic!("expected one backoff timer, got {other:?}"),
    }
}

#[test]
fn a_transient_failure_retries_after_backoff() {
    let (mut saga, _) = Saga::started(Mode::Sequential);
    let before = saga.state.clone();
    let decision = saga.reply("funds", Phase::Try, 1, failed());
    assert!(decision.commands.is_empty());
    // Equal jitter (the default) on a 100 ms backoff: between 50 and 100 ms.
    let fire_at = backoff_fire_at(&decision, "funds", Phase::Try, 1);
    let wait = fire_at - now();
    assert!(
        (50..=100).contains(&wait.num_milliseconds()),
        "waits {wait}"
    );
    // Deciding the same input again chooses the same wait.
    let again = decide(
        &saga.definition,
        before.as_ref(),
        &SagaInput::Reply {
            step: "funds".into(),
            phase: Phase::Try,
            attempt: 1,
            outcome: failed(),
        },
        now(),
    );
    assert_eq!(backoff_fire_at(&again, "funds", Phase::Try, 1), fire_at);
    let retry = saga.input(SagaInput::TimerFired {
        step: "funds".into(),
        phase: Phase::Try,
        attempt: 1,
    });
    assert_eq!(sent(&retry), [cmd("funds", Phase::Try, 2)]);
    // A failure of an older attempt is stale.
    assert!(saga
        .reply("funds", Phase::Try, 1, failed())
        .events
        .is_empty());
}

#[test]
fn sagas_failing_together_retry_at_different_moments_within_the_backoff() {
    let waits: std::collections::BTreeSet<i64> = (0..20)
        .map(|n| {
            let mut saga = Saga::new(Mode::Sequential);
            saga.input(SagaInput::Start {
                input: json!({ "id": format!("o-{n}"), "cents": 500 }),
                trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            });
            let decision = saga.reply("funds", Phase::Try, 1, failed());
            (backoff_fire_at(&decision, "funds", Phase::Try, 1) - now())
                .num_microseconds()
                .unwrap()
        })
        .collect();
    assert!(
        waits.iter().all(|w| (50_000..=100_000).contains(w)),
        "{waits:?}"
    );
    assert!(waits.len() >= 15, "too few distinct waits: {waits:?}");
}

#[test]
fn a_step_retry_policy_without_jitter_waits_exactly_its_backoff() {
    let definition = Definition::<Order>::new("order", 3)
        .trigger("order.requested", |o| o.id.clone())
        .tcc("funds", "balance", |o| json!({ "cents": o.cents }))
        .with_retry(
            RetryPolicy::exponential(Duration::from_millis(100), Duration::from_secs(1))
                .with_jitter(Jitter::None),
        )
        .build()
        .unwrap();
    let mut saga = Saga {
        definition,
        state: None,
    };
    saga.input(start());
    saga.reply("funds", Phase::Try, 1, failed());
    saga.input(SagaInput::TimerFired {
        step: "funds".into(),
        phase: Phase::Try,
        attempt: 1,
    });
    let decision = saga.reply("funds", Phase::Try, 2, failed());
    assert_eq!(
        backoff_fire_at(&decision, "funds", Phase::Try, 2) - now(),
        chrono::Duration::milliseconds(200)
    );
}

#[test]
fn forward_retries_exhausted_compensate_including_the_uncertain_step() {
    let (mut saga, _) = Saga::started(Mode::Sequential);
    saga.ok("funds", Phase::Try);
    for attempt in 1..=2 {
        saga.input(SagaInput::TimerFired {
            step: "points".into(),
            phase: Phase::Action,
            attempt,
        });
    }
    let decision = saga.input(SagaInput::TimerFired {
        step: "points".into(),
        phase: Phase::Action,
        attempt: 3,
    });
    assert_eq!(saga.status(), SagaStatus::Compensating);
    assert!(saga
        .state
        .as_ref()
        .unwrap()
        .failure
        .as_deref()
        .unwrap()
        .contains("gave up after 3 attempts"));
    // Nobody knows whether the deduction happened: compensate it (null compensation if not).
    assert_eq!(sent(&decision), [cmd("points", Phase::Compensate, 1)]);
}

#[test]
fn undo_retries_exhausted_park_the_saga() {
    let (mut saga, _) = Saga::started(Mode::Sequential);
    saga.reply("funds", Phase::Try, 1, ReplyOutcome::ok());
    saga.reply("points", Phase::Action, 1, rejected("not enough points"));
    saga.reply("funds", Phase::Cancel, 1, failed());
    saga.input(SagaInput::TimerFired {
        step: "funds".into(),
        phase: Phase::Cancel,
        attempt: 1,
    });
    let parked = saga.reply("funds", Phase::Cancel, 2, failed());
    assert_eq!(saga.status(), SagaStatus::Parked);
    assert!(
        matches!(&parked.lifecycle[..], [Lifecycle::Parked(reason)] if reason.contains("cancel of `funds`"))
    );
    assert_eq!(parked.timers.last(), Some(&TimerChange::ClearAll));
    // A parked saga ignores further input.
    assert!(saga.ok("funds", Phase::Cancel).events.is_empty());
}

#[test]
fn a_failed_parallel_undo_parks_only_once_every_other_branch_settled() {
    let (mut saga, _) = Saga::started(Mode::Parallel);
    saga.ok("points", Phase::Action);
    saga.ok("coupon", Phase::Action);
    let compensating = saga.reply("funds", Phase::Try, 1, rejected("no funds"));
    assert_eq!(
        sent(&compensating),
        [
            cmd("points", Phase::Compensate, 1),
            cmd("coupon", Phase::Compensate, 1)
        ]
    );
    // The coupon's undo is refused for good while the others are still in flight.
    let refused = saga.reply("coupon", Phase::Compensate, 1, rejected("coupon deleted"));
    assert!(refused.lifecycle.is_empty(), "{:?}", refused.lifecycle);
    assert_eq!(saga.status(), SagaStatus::Compensating);
    let parked = saga.ok("points", Phase::Compensate);
    assert_eq!(saga.status(), SagaStatus::Parked);
    assert!(
        matches!(&parked.lifecycle[..], [Lifecycle::Parked(reason)] if reason.contains("coupon deleted")),
        "{:?}",
        parked.lifecycle
    );
}

#[test]
fn a_rejected_confirm_parks_the_saga() {
    let (mut saga, _) = Saga::started(Mode::Parallel);
    saga.ok("funds", Phase::Try);
    saga.ok("points", Phase::Action);
    saga.ok("coupon", Phase::Action);
    let decision = saga.reply("funds", Phase::Confirm, 1, rejected("account closed"));
    assert_eq!(saga.status(), SagaStatus::Parked);
    assert!(matches!(&decision.lifecycle[..], [Lifecycle::Parked(_)]));
}

#[test]
fn replies_for_unknown_or_finished_sagas_and_unexpected_phases_are_ignored() {
    let mut saga = Saga::new(Mode::Sequential);
    assert!(saga.ok("funds", Phase::Try).events.is_empty());
    let (mut saga, _) = Saga::started(Mode::Sequential);
    assert!(
        saga.ok("points", Phase::Action).events.is_empty(),
        "not sent yet"
    );
    assert!(
        saga.ok("funds", Phase::Confirm).events.is_empty(),
        "not sent yet"
    );
    assert!(saga.ok("nope", Phase::Try).events.is_empty());
    saga.reply("funds", Phase::Try, 1, rejected("no"));
    assert_eq!(saga.status(), SagaStatus::Compensated);
    assert!(saga.ok("funds", Phase::Try).events.is_empty());
}

/// The reason `why_ignored` gives for a reply, after checking that `decide` drops exactly
/// the replies that have one.
fn ignored(saga: &Saga, step: &str, phase: Phase, attempt: u32, outcome: ReplyOutcome) -> String {
    let reason = why_ignored(saga.state.as_ref(), step, phase, attempt, &outcome);
    let input = SagaInput::Reply {
        step: step.into(),
        phase,
        attempt,
        outcome,
    };
    let decision = decide(&saga.definition, saga.state.as_ref(), &input, now());
    assert_eq!(decision.events.is_empty(), reason.is_some(), "{reason:?}");
    reason.map_or("taken".into(), |r| r.label().to_string())
}

#[test]
fn every_ignored_reply_has_a_reason_and_every_reason_an_ignored_reply() {
    let unknown = Saga::new(Mode::Sequential);
    assert_eq!(
        ignored(&unknown, "funds", Phase::Try, 1, ReplyOutcome::ok()),
        "unknown_saga"
    );
    let (mut saga, _) = Saga::started(Mode::Sequential);
    let cases = [
        ("nope", Phase::Try, 1, ReplyOutcome::ok(), "unknown_step"),
        (
            "points",
            Phase::Action,
            1,
            ReplyOutcome::ok(),
            "not_awaited",
        ),
        (
            "funds",
            Phase::Confirm,
            1,
            ReplyOutcome::ok(),
            "not_awaited",
        ),
        ("funds", Phase::Try, 0, failed(), "stale_attempt"),
        ("funds", Phase::Try, 2, ReplyOutcome::ok(), "taken"),
        ("funds", Phase::Try, 1, failed(), "taken"),
    ];
    for (step, phase, attempt, outcome, label) in cases {
        assert_eq!(ignored(&saga, step, phase, attempt, outcome), label);
    }
    let stale = why_ignored(saga.state.as_ref(), "funds", Phase::Try, 0, &failed());
    assert_eq!(
        stale.unwrap().to_string(),
        "a failure of attempt 0, but attempt 1 is the latest sent"
    );

    let (mut parallel, _) = Saga::started(Mode::Parallel);
    parallel.reply("points", Phase::Action, 1, rejected("no points"));
    assert_eq!(parallel.status(), SagaStatus::Compensating);
    assert_eq!(
        ignored(&parallel, "coupon", Phase::Action, 1, ReplyOutcome::ok()),
        "undo_under_way"
    );

    saga.reply("funds", Phase::Try, 1, rejected("no"));
    assert_eq!(saga.status(), SagaStatus::Compensated);
    let ended = ignored(&saga, "funds", Phase::Try, 1, ReplyOutcome::ok());
    assert_eq!(ended, "saga_ended");
    assert_eq!(
        ignored(
            &parked_in_undo(),
            "funds",
            Phase::Cancel,
            1,
            ReplyOutcome::ok()
        ),
        "saga_parked"
    );
}

#[test]
fn a_duplicate_reply_changes_nothing() {
    let (mut saga, _) = Saga::started(Mode::Sequential);
    saga.ok("funds", Phase::Try);
    assert!(saga.ok("funds", Phase::Try).events.is_empty());
}

#[test]
fn the_state_is_the_fold_of_the_events() {
    let (mut saga, first) = Saga::started(Mode::Parallel);
    let mut events = first.events;
    events.extend(saga.ok("points", Phase::Action).events);
    events.extend(
        saga.reply("coupon", Phase::Action, 1, rejected("used"))
            .events,
    );
    let folded = events.iter().fold(None, SagaState::apply);
    assert_eq!(folded, saga.state);
    // Events survive a round trip through JSON, as they do through Postgres.
    for event in &events {
        let back: SagaEvent = serde_json::from_value(serde_json::to_value(event).unwrap()).unwrap();
        assert_eq!(&back, event);
    }
}

#[test]
fn triggers_map_to_one_saga_per_key_and_bad_input_is_refused() {
    let definition = definition(Mode::Sequential);
    let a = definition.accept_trigger(&order()).unwrap();
    let b = definition.accept_trigger(&order()).unwrap();
    assert_eq!(a.saga_id, b.saga_id);
    assert_eq!(a.key, "o-1");
    let other = definition
        .accept_trigger(&json!({ "id": "o-2", "cents": 1 }))
        .unwrap();
    assert_ne!(a.saga_id, other.saga_id);
    let bad = definition.accept_trigger(&json!({ "id": 5 })).unwrap_err();
    assert!(bad.contains("invalid input"), "{bad}");
}

#[test]
fn a_step_with_its_own_timeout_sets_its_timer_by_it() {
    let (mut saga, _) = Saga::started(Mode::Parallel);
    let coupon_timer = |decision: &Decision| {
        decision.timers.iter().find_map(|change| match change {
            TimerChange::Set { step, fire_at, .. } if step == "coupon" => Some(*fire_at),
            _ => None,
        })
    };
    let (_, started) = Saga::started(Mode::Parallel);
    assert_eq!(
        coupon_timer(&started),
        Some(now() + chrono::Duration::seconds(9))
    );
    let funds_failed = saga.reply("funds", Phase::Try, 1, rejected("no funds"));
    // Undoing the coupon step waits by the coupon step's own timeout too.
    assert_eq!(
        coupon_timer(&funds_failed),
        Some(now() + chrono::Duration::seconds(9))
    );
}

fn operator(action: OperatorAction) -> SagaInput {
    SagaInput::Operator(OperatorCommand {
        action,
        actor: "ana".into(),
        reason: "ticket 42".into(),
    })
}

/// A sequential saga parked because the cancel of `funds` failed twice.
fn parked_in_undo() -> Saga {
    let (mut saga, _) = Saga::started(Mode::Sequential);
    saga.ok("funds", Phase::Try);
    saga.reply("points", Phase::Action, 1, rejected("not enough points"));
    saga.reply("funds", Phase::Cancel, 1, failed());
    saga.input(SagaInput::TimerFired {
        step: "funds".into(),
        phase: Phase::Cancel,
        attempt: 1,
    });
    saga.reply("funds", Phase::Cancel, 2, failed());
    assert_eq!(saga.status(), SagaStatus::Parked);
    saga
}

fn names(decision: &Decision) -> Vec<&'static str> {
    decision.events.iter().map(SagaEvent::name).collect()
}

#[test]
fn resume_sends_the_failed_undo_again_with_a_fresh_budget() {
    let mut saga = parked_in_undo();
    let resumed = saga.input(operator(OperatorAction::Resume));
    assert_eq!(names(&resumed), ["OperatorActed", "CommandSent"]);
    assert_eq!(
        resumed.events[0],
        SagaEvent::OperatorActed {
            action: OperatorAction::Resume,
            actor: "ana".into(),
            reason: "ticket 42".into()
        }
    );
    assert_eq!(sent(&resumed), [cmd("funds", Phase::Cancel, 1)]);
    assert_eq!(saga.status(), SagaStatus::Compensating);
    assert_eq!(saga.state.as_ref().unwrap().parked_reason, None);
    let done = saga.ok("funds", Phase::Cancel);
    assert_eq!(saga.status(), SagaStatus::Compensated);
    assert_eq!(
        done.lifecycle,
        [Lifecycle::Finished(SagaOutcome::Compensated)]
    );
}

#[test]
fn resume_after_a_failed_confirm_confirms_again() {
    let (mut saga, _) = Saga::started(Mode::Parallel);
    saga.ok("funds", Phase::Try);
    saga.ok("points", Phase::Action);
    saga.ok("coupon", Phase::Action);
    saga.reply("funds", Phase::Confirm, 1, rejected("account locked"));
    assert_eq!(saga.status(), SagaStatus::Parked);
    let resumed = saga.input(operator(OperatorAction::Resume));
    assert_eq!(sent(&resumed), [cmd("funds", Phase::Confirm, 1)]);
    assert_eq!(saga.status(), SagaStatus::Running);
    saga.ok("funds", Phase::Confirm);
    assert_eq!(saga.status(), SagaStatus::Completed);
}

#[test]
fn resolve_ends_a_parked_saga_by_hand() {
    let mut saga = parked_in_undo();
    let resolved = saga.input(operator(OperatorAction::Resolve));
    assert_eq!(names(&resolved), ["OperatorActed"]);
    assert_eq!(saga.status(), SagaStatus::ResolvedManually);
    assert!(saga.status().is_terminal());
    assert_eq!(
        resolved.lifecycle,
        [Lifecycle::Finished(SagaOutcome::ResolvedManually)]
    );
    assert_eq!(resolved.timers, [TimerChange::ClearAll]);
    // Ended: further replies and actions change nothing.
    assert!(saga.ok("funds", Phase::Cancel).events.is_empty());
    assert!(saga
        .input(operator(OperatorAction::Resume))
        .events
        .is_empty());
}

#[test]
fn compensate_aborts_a_running_saga_and_undoes_what_is_in_flight() {
    let (mut saga, _) = Saga::started(Mode::Sequential);
    saga.ok("funds", Phase::Try);
    let aborted = saga.input(operator(OperatorAction::Compensate));
    assert_eq!(
        names(&aborted),
        ["OperatorActed", "CompensationStarted", "CommandSent"]
    );
    assert_eq!(saga.status(), SagaStatus::Compensating);
    assert_eq!(
        saga.state.as_ref().unwrap().failure.as_deref(),
        Some("compensation requested by ana: ticket 42")
    );
    // Sequential undo runs in reverse: points (in flight) first, then funds.
    assert_eq!(sent(&aborted), [cmd("points", Phase::Compensate, 1)]);
    assert_eq!(
        sent(&saga.ok("points", Phase::Compensate)),
        [cmd("funds", Phase::Cancel, 1)]
    );
    saga.ok("funds", Phase::Cancel);
    assert_eq!(saga.status(), SagaStatus::Compensated);
}

#[test]
fn retry_resends_what_the_saga_waits_for_as_the_next_attempt() {
    let (mut saga, _) = Saga::started(Mode::Parallel);
    saga.ok("points", Phase::Action);
    saga.reply("coupon", Phase::Action, 1, failed());
    let retried = saga.input(operator(OperatorAction::Retry));
    assert_eq!(
        sent(&retried),
        [cmd("funds", Phase::Try, 2), cmd("coupon", Phase::Action, 2)]
    );
    assert_eq!(names(&retried)[0], "OperatorActed");
    // The coupon's backoff timer becomes a reply timeout for the new attempt.
    assert!(retried.timers.contains(&TimerChange::Set {
        step: "coupon".into(),
        kind: TimerKind::Timeout,
        phase: Phase::Action,
        attempt: 2,
        fire_at: now() + chrono::Duration::seconds(9),
    }));
    assert_eq!(saga.status(), SagaStatus::Running);
}

#[test]
fn actions_the_state_does_not_allow_are_refused_and_change_nothing() {
    let (mut running, _) = Saga::started(Mode::Sequential);
    let parked = parked_in_undo();
    let cases = [
        (
            &parked,
            OperatorAction::Retry,
            "cannot retry a saga that is parked",
        ),
        (&parked, OperatorAction::Compensate, "it must be running"),
        (
            &running,
            OperatorAction::Resume,
            "cannot resume a saga that is running",
        ),
        (&running, OperatorAction::Resolve, "it must be parked"),
    ];
    for (saga, action, expected) in cases {
        let why = operator::refusal(saga.state.as_ref().unwrap(), action).unwrap();
        assert!(why.contains(expected), "{action}: {why}");
    }
    assert!(running
        .input(operator(OperatorAction::Resolve))
        .events
        .is_empty());
    // A sequential saga between steps waits for nothing: nothing to retry.
    running.ok("funds", Phase::Try);
    running.ok("points", Phase::Action);
    running.ok("coupon", Phase::Action);
    running.ok("funds", Phase::Confirm);
    assert_eq!(running.status(), SagaStatus::Completed);
    let why = operator::refusal(running.state.as_ref().unwrap(), OperatorAction::Retry).unwrap();
    assert!(why.contains("completed"), "{why}");
    for action in OperatorAction::all() {
        assert_eq!(action.as_str().parse::<OperatorAction>(), Ok(action));
    }
}

#[test]
fn an_idempotency_key_beyond_the_contract_is_refused() {
    let definition = definition(Mode::Sequential);
    let key = |id: String| json!({ "id": id, "cents": 500 });
    assert!(definition.accept_trigger(&key("k".repeat(256))).is_ok());
    let error = definition
        .accept_trigger(&key("k".repeat(257)))
        .unwrap_err();
    assert_eq!(error, "idempotency key must be 1..=256 characters, got 257");
    assert!(definition.accept_trigger(&key(String::new())).is_err());
}
