//! Holding forward commands back (pure): the engine's circuit breaker decides which
//! participant may not get new forward work now; [`defer_commands`] rewrites a decision so
//! each held command waits at its step instead of being sent.
//!
//! A held command keeps its attempt number: its `CommandSent` becomes `CommandDeferred`
//! (the step stays in flight, as if sent) and its reply timeout becomes a
//! [`TimerKind::Deferred`] timer. When that timer fires, [`SagaInput::DeferralEnded`]
//! sends the same attempt, so waiting never uses up the step's retries.
//!
//! [`SagaInput::DeferralEnded`]: crate::SagaInput::DeferralEnded

use chrono::{DateTime, Utc};

use crate::decide::{Decision, OutgoingCommand, TimerChange};
use crate::state::{SagaEvent, TimerKind};

/// Offers each forward command (try, action) of `decision` to `hold`; a command for which
/// it returns `Some(until)` is not sent but deferred until then. Confirm, cancel and
/// compensate are never offered: they settle sagas and must not wait. Returns how many
/// commands were held back.
pub fn defer_commands(
    decision: &mut Decision,
    mut hold: impl FnMut(&OutgoingCommand) -> Option<DateTime<Utc>>,
) -> usize {
    let mut held = Vec::new();
    decision.commands.retain(|command| {
        let forward = command.phase.origin().is_none();
        match forward.then(|| hold(command)).flatten() {
            Some(until) => {
                held.push((command.clone(), until));
                false
            }
            None => true,
        }
    });
    for (command, until) in &held {
        let same = |step: &str, phase, attempt| {
            step == command.step && phase == command.phase && attempt == command.attempt
        };
        for event in &mut decision.events {
            if let SagaEvent::CommandSent {
                step,
                phase,
                attempt,
            } = event
            {
                if same(step, *phase, *attempt) {
                    *event = SagaEvent::CommandDeferred {
                        step: step.clone(),
                        phase: *phase,
                        attempt: *attempt,
                        until: *until,
                    };
                }
            }
        }
        for timer in &mut decision.timers {
            if let TimerChange::Set {
                step,
                kind,
                phase,
                attempt,
                fire_at,
            } = timer
            {
                if *kind == TimerKind::Timeout && same(step, *phase, *attempt) {
                    *kind = TimerKind::Deferred;
                    *fire_at = *until;
                }
            }
        }
    }
    held.len()
}
