//! Why a participant's reply changes nothing. [`decide`](crate::decide()) drops such a reply;
//! [`why_ignored`] names the reason, so the engine can count it and say so in its log.
//! The fields that decide it are the reply's `saga_id`, `step`, `phase`, `attempt` and its
//! outcome (a `failed` outcome counts only for the latest attempt).

use std::fmt;

use schemas::{Phase, ReplyOutcome};

use crate::state::{Progress, SagaState, SagaStatus};

/// Why the engine ignored a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoredReply {
    /// No saga has the reply's `saga_id`.
    UnknownSaga,
    /// The saga has ended (completed, compensated or resolved by hand).
    SagaEnded(SagaStatus),
    /// The saga is parked: only an operator moves it on.
    SagaParked,
    /// The saga's definition has no step of that name.
    UnknownStep,
    /// A forward phase's reply while the saga is compensating: its undo is on its way.
    UndoUnderWay,
    /// The saga does not wait for that phase of the step: it was never sent, was already
    /// answered, or another phase of the step is in flight.
    NotAwaited,
    /// A `failed` reply to an attempt older than the latest one sent.
    StaleAttempt {
        /// The attempt the reply names.
        attempt: u32,
        /// The latest attempt sent.
        latest: u32,
    },
}

impl IgnoredReply {
    /// The metric label: `unknown_saga`, `saga_ended`, `saga_parked`, `unknown_step`,
    /// `undo_under_way`, `not_awaited` or `stale_attempt`.
    pub fn label(&self) -> &'static str {
        match self {
            IgnoredReply::UnknownSaga => "unknown_saga",
            IgnoredReply::SagaEnded(_) => "saga_ended",
            IgnoredReply::SagaParked => "saga_parked",
            IgnoredReply::UnknownStep => "unknown_step",
            IgnoredReply::UndoUnderWay => "undo_under_way",
            IgnoredReply::NotAwaited => "not_awaited",
            IgnoredReply::StaleAttempt { .. } => "stale_attempt",
        }
    }
}

impl fmt::Display for IgnoredReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IgnoredReply::UnknownSaga => write!(f, "no saga has this id"),
            IgnoredReply::SagaEnded(status) => write!(f, "the saga has ended ({status})"),
            IgnoredReply::SagaParked => write!(f, "the saga is parked for an operator"),
            IgnoredReply::UnknownStep => write!(f, "the saga's definition has no such step"),
            IgnoredReply::UndoUnderWay => {
                write!(
                    f,
                    "the saga is compensating; this step's undo is on its way"
                )
            }
            IgnoredReply::NotAwaited => {
                write!(f, "the saga does not wait for this phase of the step")
            }
            IgnoredReply::StaleAttempt { attempt, latest } => write!(
                f,
                "a failure of attempt {attempt}, but attempt {latest} is the latest sent"
            ),
        }
    }
}

/// Why a reply to `phase` of `step` at `attempt` with `outcome` changes nothing for the saga
/// in `state` (`None`: no such saga), or `None` when the saga takes it.
pub fn why_ignored(
    state: Option<&SagaState>,
    step: &str,
    phase: Phase,
    attempt: u32,
    outcome: &ReplyOutcome,
) -> Option<IgnoredReply> {
    let Some(state) = state else {
        return Some(IgnoredReply::UnknownSaga);
    };
    if state.status.is_terminal() {
        return Some(IgnoredReply::SagaEnded(state.status));
    }
    if state.status == SagaStatus::Parked {
        return Some(IgnoredReply::SagaParked);
    }
    // A final answer to any attempt counts (every attempt shares one barrier key); a
    // transient failure counts only for the latest attempt, or stale failures would
    // multiply the retries.
    let latest_only = matches!(outcome, ReplyOutcome::Failed { .. });
    not_awaited(state, step, phase, latest_only.then_some(attempt))
}

/// Why the saga in `state` does not wait for `phase` of `step` (at `attempt`, when given),
/// or `None` when it does. Once compensating, it no longer waits for forward phases.
pub(crate) fn not_awaited(
    state: &SagaState,
    step: &str,
    phase: Phase,
    attempt: Option<u32>,
) -> Option<IgnoredReply> {
    let forward = phase.origin().is_none();
    let Some(slot) = state.slot(step, phase) else {
        return Some(IgnoredReply::UnknownStep);
    };
    if forward && state.status == SagaStatus::Compensating {
        return Some(IgnoredReply::UndoUnderWay);
    }
    match slot {
        Progress::InFlight {
            phase: in_flight,
            attempt: latest,
        } if *in_flight == phase => match attempt {
            Some(attempt) if attempt != *latest => Some(IgnoredReply::StaleAttempt {
                attempt,
                latest: *latest,
            }),
            _ => None,
        },
        _ => Some(IgnoredReply::NotAwaited),
    }
}
