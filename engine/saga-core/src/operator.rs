//! What an operator may do to a saga, and when (pure). Each action enters the saga's
//! history as an `OperatorActed` event through the same `decide` as every other input.

use serde::{Deserialize, Serialize};

use crate::state::{Progress, SagaState, SagaStatus};

/// An operator's action on one saga.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum OperatorAction {
    /// Re-send every phase the saga waits for now, as its next attempt, without waiting
    /// for the timeout or the backoff.
    Retry,
    /// A parked saga continues its undo or its confirms, each with a fresh retry budget.
    Resume,
    /// Abort a running saga: undo what may have been done.
    Compensate,
    /// A parked saga was fixed by hand: it ends as `resolved_manually`.
    Resolve,
}

impl OperatorAction {
    /// `retry`, `resume`, `compensate` or `resolve`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Every action.
    pub fn all() -> impl Iterator<Item = OperatorAction> {
        <OperatorAction as strum::IntoEnumIterator>::iter()
    }
}

impl std::fmt::Display for OperatorAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operator action with who did it and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorCommand {
    /// The action.
    pub action: OperatorAction,
    /// Who (a name, an account, a ticket).
    pub actor: String,
    /// Why, in the operator's words.
    pub reason: String,
}

/// Why `action` is not allowed on a saga in `state`; `None` when it is.
pub fn refusal(state: &SagaState, action: OperatorAction) -> Option<String> {
    let status = state.status;
    let allowed = match action {
        OperatorAction::Retry => {
            if !matches!(status, SagaStatus::Running | SagaStatus::Compensating) {
                false
            } else if waiting_phases(state).is_empty() {
                return Some(format!(
                    "the saga is {status} but waits for no reply; nothing to retry"
                ));
            } else {
                true
            }
        }
        OperatorAction::Resume | OperatorAction::Resolve => status == SagaStatus::Parked,
        OperatorAction::Compensate => status == SagaStatus::Running,
    };
    (!allowed).then(|| {
        let needs = match action {
            OperatorAction::Retry => "running or compensating",
            OperatorAction::Resume | OperatorAction::Resolve => "parked",
            OperatorAction::Compensate => "running",
        };
        format!("cannot {action} a saga that is {status}; it must be {needs}")
    })
}

/// The (step, phase, attempt) the saga waits for a reply to. While compensating, forward
/// phases are no longer waited for (their undo is on its way).
pub fn waiting_phases(state: &SagaState) -> Vec<(String, schemas::Phase, u32)> {
    let mut waiting = Vec::new();
    for step in &state.steps {
        let slots = [
            (&step.forward, state.status == SagaStatus::Running),
            (&step.settle, true),
        ];
        for (slot, counts) in slots {
            if let (Progress::InFlight { phase, attempt }, true) = (slot, counts) {
                waiting.push((step.name.clone(), *phase, *attempt));
            }
        }
    }
    waiting
}
