//! Saga state and the events that change it (pure). The state is the fold of the events.

use chrono::{DateTime, Utc};
use schemas::{Phase, ReplyOutcome};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::operator::OperatorAction;

/// Where a saga is in its life. Stored in `sagas.status` by its [`SagaStatus::as_str`]
/// name (a CHECK constraint lists the same names); read back with [`str::parse`].
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
pub enum SagaStatus {
    /// Forward steps (and then confirms) are under way.
    Running,
    /// A step failed; completed steps are being undone.
    Compensating,
    /// Every step succeeded and every TCC branch was confirmed.
    Completed,
    /// The saga failed cleanly: everything done was undone.
    Compensated,
    /// The engine stopped driving the saga; an operator must look at it.
    Parked,
    /// An operator resolved a parked saga by hand (terminal).
    ResolvedManually,
}

impl SagaStatus {
    /// The stored name: `running`, `compensating`, `completed`, `compensated`, `parked`,
    /// `resolved_manually`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether the saga has ended (parked sagas wait for an operator).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::ResolvedManually
        )
    }

    /// Every status, in life order.
    pub fn all() -> impl Iterator<Item = SagaStatus> {
        <SagaStatus as strum::IntoEnumIterator>::iter()
    }
}

/// What a durable timer waits for. Stored in `timers.kind` by its [`TimerKind::as_str`]
/// name. Step timers are one per step; the saga's deadline is one per saga.
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
pub enum TimerKind {
    /// A command was sent; no final reply has come yet. Firing re-sends it.
    Timeout,
    /// A reply said "failed, retry"; the wait before the next attempt. Firing re-sends it.
    Backoff,
    /// The participant's circuit breaker held a forward command back; firing sends the
    /// same attempt (no attempt is used up by the wait).
    Deferred,
    /// The saga's deadline; firing stops forward work and compensates (stored with the
    /// step [`DEADLINE_TIMER_STEP`] and no phase).
    Deadline,
}

/// The `timers.step` of a saga's deadline timer: a step name no definition can use
/// (step names are never empty).
pub const DEADLINE_TIMER_STEP: &str = "";

impl TimerKind {
    /// The stored name: `timeout`, `backoff`, `deferred` or `deadline`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

macro_rules! display_and_try_from_string {
    ($($ty:ty),*) => {$(
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        /// Reads a stored name back (used by `sqlx(try_from = "String")` at the edges).
        impl TryFrom<String> for $ty {
            type Error = String;

            fn try_from(name: String) -> Result<Self, Self::Error> {
                name.parse()
                    .map_err(|_| format!("unknown {} `{name}`", stringify!($ty)))
            }
        }
    )*};
}

display_and_try_from_string!(SagaStatus, TimerKind);

/// Progress of one phase slot of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Progress {
    /// Nothing sent yet.
    Idle,
    /// `phase` was sent, most recently as attempt `attempt`; no final reply yet.
    InFlight {
        /// The phase in flight.
        phase: Phase,
        /// Its latest attempt.
        attempt: u32,
    },
    /// The participant answered ok.
    Succeeded,
    /// The participant refused (business rejection).
    Rejected {
        /// Why.
        reason: String,
    },
    /// The engine stopped retrying without an answer; the effect may or may not exist.
    GaveUp {
        /// Why.
        reason: String,
    },
}

/// Progress of one step: its forward phase and the phase that settles it (confirm, or
/// cancel/compensate when undoing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepProgress {
    /// Step name.
    pub name: String,
    /// Try or action.
    pub forward: Progress,
    /// Confirm, cancel or compensate.
    pub settle: Progress,
}

/// A saga's state, rebuilt by applying its events in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaState {
    /// Definition name.
    pub definition: String,
    /// Definition version.
    pub version: u32,
    /// The input the saga was started with.
    pub input: Value,
    /// Life stage.
    pub status: SagaStatus,
    /// Per step, in definition order.
    pub steps: Vec<StepProgress>,
    /// Why the saga is compensating, if it is.
    pub failure: Option<String>,
    /// Why the saga is parked, if it is.
    pub parked_reason: Option<String>,
    /// W3C trace id every message of the saga carries.
    #[serde(default)]
    pub trace_id: String,
    /// When forward work must be done by (database clock), if its definition has a
    /// deadline; travels with each command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
}

/// Something that happened to a saga; stored in `saga_events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SagaEvent {
    /// A trigger started the saga.
    Started {
        /// Definition name.
        definition: String,
        /// Definition version.
        version: u32,
        /// Input.
        input: Value,
        /// Step names, in order.
        steps: Vec<String>,
        /// W3C trace id of the saga.
        #[serde(default)]
        trace_id: String,
    },
    /// A command was handed to the outbox.
    CommandSent {
        /// Step.
        step: String,
        /// Phase.
        phase: Phase,
        /// Attempt, from 1.
        attempt: u32,
    },
    /// The saga's deadline was fixed (right after `Started`, when the definition has one).
    DeadlineSet {
        /// Start time plus the definition's deadline, on the database's clock.
        at: DateTime<Utc>,
    },
    /// A forward command was not sent because its participant's circuit breaker is open;
    /// the step waits (in flight, same attempt) and the command goes out at `until` if
    /// the breaker lets it.
    CommandDeferred {
        /// Step.
        step: String,
        /// Phase.
        phase: Phase,
        /// The attempt held back (sent later under the same number).
        attempt: u32,
        /// When the command is offered to the breaker again.
        until: DateTime<Utc>,
    },
    /// A participant replied.
    ReplyReceived {
        /// Step.
        step: String,
        /// Phase.
        phase: Phase,
        /// The attempt the reply answers.
        attempt: u32,
        /// What it said.
        outcome: ReplyOutcome,
    },
    /// Retries ran out for a phase.
    GaveUp {
        /// Step.
        step: String,
        /// Phase.
        phase: Phase,
        /// Why.
        reason: String,
    },
    /// The saga started undoing what it did.
    CompensationStarted {
        /// Why.
        reason: String,
    },
    /// The saga ended well.
    Completed,
    /// The saga ended undone.
    Compensated,
    /// The saga needs an operator.
    Parked {
        /// Why.
        reason: String,
    },
    /// An operator acted on the saga (the events that follow carry out the action).
    OperatorActed {
        /// What the operator did.
        action: OperatorAction,
        /// Who.
        actor: String,
        /// Why, in the operator's words.
        reason: String,
    },
}

impl SagaEvent {
    /// The event's name, stored in `saga_events.event_type`.
    pub fn name(&self) -> &'static str {
        match self {
            SagaEvent::Started { .. } => "Started",
            SagaEvent::CommandSent { .. } => "CommandSent",
            SagaEvent::DeadlineSet { .. } => "DeadlineSet",
            SagaEvent::CommandDeferred { .. } => "CommandDeferred",
            SagaEvent::ReplyReceived { .. } => "ReplyReceived",
            SagaEvent::GaveUp { .. } => "GaveUp",
            SagaEvent::CompensationStarted { .. } => "CompensationStarted",
            SagaEvent::Completed => "Completed",
            SagaEvent::Compensated => "Compensated",
            SagaEvent::Parked { .. } => "Parked",
            SagaEvent::OperatorActed { .. } => "OperatorActed",
        }
    }
}

impl SagaState {
    /// The state after `event`. `Started` creates it; other events need an existing state.
    pub fn apply(state: Option<SagaState>, event: &SagaEvent) -> Option<SagaState> {
        if let SagaEvent::Started {
            definition,
            version,
            input,
            steps,
            trace_id,
        } = event
        {
            return Some(SagaState {
                definition: definition.clone(),
                version: *version,
                input: input.clone(),
                status: SagaStatus::Running,
                steps: steps
                    .iter()
                    .map(|name| StepProgress {
                        name: name.clone(),
                        forward: Progress::Idle,
                        settle: Progress::Idle,
                    })
                    .collect(),
                failure: None,
                parked_reason: None,
                trace_id: trace_id.clone(),
                deadline: None,
            });
        }
        let mut state = state?;
        state.apply_change(event);
        Some(state)
    }

    fn apply_change(&mut self, event: &SagaEvent) {
        match event {
            SagaEvent::Started { .. } => {}
            SagaEvent::DeadlineSet { at } => self.deadline = Some(*at),
            SagaEvent::CommandSent {
                step,
                phase,
                attempt,
            }
            | SagaEvent::CommandDeferred {
                step,
                phase,
                attempt,
                ..
            } => {
                if let Some(slot) = self.slot_mut(step, *phase) {
                    *slot = Progress::InFlight {
                        phase: *phase,
                        attempt: *attempt,
                    };
                }
            }
            SagaEvent::ReplyReceived {
                step,
                phase,
                outcome,
                ..
            } => {
                let next = match outcome {
                    ReplyOutcome::Ok { .. } => Progress::Succeeded,
                    ReplyOutcome::Rejected { reason } => Progress::Rejected {
                        reason: reason.clone(),
                    },
                    ReplyOutcome::Failed { .. } => return,
                };
                if let Some(slot) = self.slot_mut(step, *phase) {
                    *slot = next;
                }
            }
            SagaEvent::GaveUp {
                step,
                phase,
                reason,
            } => {
                if let Some(slot) = self.slot_mut(step, *phase) {
                    *slot = Progress::GaveUp {
                        reason: reason.clone(),
                    };
                }
            }
            SagaEvent::CompensationStarted { reason } => {
                self.status = SagaStatus::Compensating;
                self.failure = Some(reason.clone());
            }
            SagaEvent::Completed => self.status = SagaStatus::Completed,
            SagaEvent::Compensated => self.status = SagaStatus::Compensated,
            SagaEvent::Parked { reason } => {
                self.status = SagaStatus::Parked;
                self.parked_reason = Some(reason.clone());
            }
            SagaEvent::OperatorActed { action, .. } => self.apply_operator(*action),
        }
    }

    /// What an operator action itself changes; the events after it do the rest.
    fn apply_operator(&mut self, action: OperatorAction) {
        match action {
            // The re-sent commands follow as their own events.
            OperatorAction::Retry => {}
            // Back to what the saga was doing when it parked, with the failed settle
            // phases idle again, so they are sent anew with a fresh retry budget.
            OperatorAction::Resume => {
                self.status = if self.failure.is_some() {
                    SagaStatus::Compensating
                } else {
                    SagaStatus::Running
                };
                self.parked_reason = None;
                for step in &mut self.steps {
                    if matches!(
                        step.settle,
                        Progress::GaveUp { .. } | Progress::Rejected { .. }
                    ) {
                        step.settle = Progress::Idle;
                    }
                }
            }
            // `CompensationStarted` follows.
            OperatorAction::Compensate => {}
            OperatorAction::Resolve => {
                self.status = SagaStatus::ResolvedManually;
                self.parked_reason = None;
            }
        }
    }

    /// The slot `phase` of step `step` lives in: forward for try/action, settle otherwise.
    pub fn slot(&self, step: &str, phase: Phase) -> Option<&Progress> {
        let progress = self.steps.iter().find(|s| s.name == step)?;
        Some(if phase.origin().is_none() {
            &progress.forward
        } else {
            &progress.settle
        })
    }

    fn slot_mut(&mut self, step: &str, phase: Phase) -> Option<&mut Progress> {
        let progress = self.steps.iter_mut().find(|s| s.name == step)?;
        Some(if phase.origin().is_none() {
            &mut progress.forward
        } else {
            &mut progress.settle
        })
    }

    /// The first step with a phase in flight, for the projection's `step` column.
    pub fn current_step(&self) -> Option<&str> {
        self.steps
            .iter()
            .find(|s| {
                matches!(s.settle, Progress::InFlight { .. })
                    || (matches!(s.forward, Progress::InFlight { .. })
                        && self.status == SagaStatus::Running)
            })
            .map(|s| s.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_read_back_and_unknown_ones_are_refused() {
        for status in SagaStatus::all() {
            assert_eq!(SagaStatus::try_from(status.to_string()), Ok(status));
        }
        assert_eq!(SagaStatus::Compensating.as_str(), "compensating");
        assert_eq!(
            TimerKind::try_from("backoff".to_string()),
            Ok(TimerKind::Backoff)
        );
        assert_eq!(TimerKind::Deferred.as_str(), "deferred");
        assert_eq!(TimerKind::Deadline.as_str(), "deadline");
        assert!(SagaStatus::try_from("done".to_string()).is_err());
    }
}
