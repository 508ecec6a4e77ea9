//! The barrier decision (pure): given what the barrier table holds for a command, what to do.

use chrono::{DateTime, Utc};
use saga_core::DEADLINE_PASSED;
use schemas::{Phase, ReplyOutcome};

/// Reason stored on a forward phase that arrived after its undo phase.
pub(crate) const HANGING_REASON: &str = "rejected: its cancel or compensate arrived first";

/// What the barrier table says about the command's own `(saga_id, step, phase)` row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OwnRow {
    /// No row yet: the command is new.
    New,
    /// The row was there: a duplicate, answered before with this reply.
    Existing(ReplyOutcome),
}

/// What the barrier table says about the forward phase a confirm/cancel/compensate settles.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Origin {
    /// The phase is itself a forward phase (try, action).
    NotApplicable,
    /// An undo phase found no forward row and wrote a marker in its place (null compensation).
    MarkedNow,
    /// Confirm found no forward row.
    Missing,
    /// The forward phase ran and answered this.
    Answered(ReplyOutcome),
}

/// What the kit does with the command.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Plan {
    /// Send the stored reply again; touch nothing.
    Replay(ReplyOutcome),
    /// Answer without running the handler.
    Answer(ReplyOutcome),
    /// Run the handler and answer with its result.
    Run,
}

/// Decides what to do with a command of `phase`, from the barrier rows it found.
pub(crate) fn plan(phase: Phase, own: OwnRow, origin: Origin) -> Plan {
    match (own, origin) {
        (OwnRow::Existing(reply), _) => Plan::Replay(reply),
        (OwnRow::New, Origin::NotApplicable) => Plan::Run,
        // Nothing was reserved or done, so there is nothing to undo.
        (OwnRow::New, Origin::MarkedNow) => Plan::Answer(null_compensation()),
        (OwnRow::New, Origin::Answered(ReplyOutcome::Ok { .. })) => Plan::Run,
        (OwnRow::New, Origin::Answered(ReplyOutcome::Rejected { .. })) if phase.is_undo() => {
            Plan::Answer(null_compensation())
        }
        (OwnRow::New, Origin::Answered(ReplyOutcome::Rejected { reason })) => {
            Plan::Answer(ReplyOutcome::Rejected {
                reason: format!("cannot {phase}: the forward phase was {reason}"),
            })
        }
        (OwnRow::New, Origin::Answered(ReplyOutcome::Failed { .. }) | Origin::Missing) => {
            Plan::Answer(ReplyOutcome::Failed {
                error: "the forward phase of this step has not completed".into(),
            })
        }
    }
}

/// The answer to a new command of `phase` arriving at `now` for a saga that must finish
/// its forward work by `deadline`: a forward phase (try, action) past the deadline is
/// rejected without running; anything else runs (`None`). Confirm, cancel and compensate
/// settle the saga and are never refused.
pub(crate) fn deadline_refusal(
    phase: Phase,
    deadline: Option<DateTime<Utc>>,
    now: Option<DateTime<Utc>>,
) -> Option<ReplyOutcome> {
    let forward = phase.origin().is_none();
    match (deadline, now) {
        (Some(deadline), Some(now)) if forward && now >= deadline => Some(ReplyOutcome::Rejected {
            reason: DEADLINE_PASSED.into(),
        }),
        _ => None,
    }
}

fn null_compensation() -> ReplyOutcome {
    ReplyOutcome::Ok {
        output: serde_json::json!({ "null_compensation": true }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(reason: &str) -> ReplyOutcome {
        ReplyOutcome::Rejected {
            reason: reason.into(),
        }
    }

    #[test]
    fn a_duplicate_replays_its_stored_reply_whatever_else_is_there() {
        for origin in [Origin::NotApplicable, Origin::MarkedNow, Origin::Missing] {
            assert_eq!(
                plan(
                    Phase::Cancel,
                    OwnRow::Existing(rejected("no funds")),
                    origin
                ),
                Plan::Replay(rejected("no funds"))
            );
        }
    }

    #[test]
    fn forward_phases_past_the_deadline_are_refused_and_settling_phases_never() {
        let deadline = chrono::DateTime::parse_from_rfc3339("2026-11-24T09:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let before = deadline - chrono::Duration::milliseconds(1);
        for phase in [Phase::Try, Phase::Action] {
            assert_eq!(
                deadline_refusal(phase, Some(deadline), Some(deadline)),
                Some(rejected(DEADLINE_PASSED))
            );
            assert_eq!(deadline_refusal(phase, Some(deadline), Some(before)), None);
            assert_eq!(deadline_refusal(phase, None, Some(deadline)), None);
        }
        let late = deadline + chrono::Duration::hours(1);
        for phase in [Phase::Confirm, Phase::Cancel, Phase::Compensate] {
            assert_eq!(deadline_refusal(phase, Some(deadline), Some(late)), None);
        }
    }

    #[test]
    fn a_new_forward_phase_runs() {
        assert_eq!(
            plan(Phase::Try, OwnRow::New, Origin::NotApplicable),
            Plan::Run
        );
    }

    #[test]
    fn an_undo_before_its_forward_phase_is_a_null_compensation() {
        let Plan::Answer(reply) = plan(Phase::Cancel, OwnRow::New, Origin::MarkedNow) else {
            panic!("expected an answer without running the handler");
        };
        assert!(reply.is_ok());
    }

    #[test]
    fn a_settling_phase_after_success_runs() {
        assert_eq!(
            plan(
                Phase::Confirm,
                OwnRow::New,
                Origin::Answered(ReplyOutcome::ok())
            ),
            Plan::Run
        );
    }

    #[test]
    fn an_undo_after_a_rejected_forward_phase_has_nothing_to_do() {
        for phase in [Phase::Cancel, Phase::Compensate] {
            let origin = Origin::Answered(rejected("no funds"));
            let Plan::Answer(reply) = plan(phase, OwnRow::New, origin) else {
                panic!("expected an answer without running the handler");
            };
            assert!(reply.is_ok());
        }
    }

    #[test]
    fn confirm_after_a_rejected_try_is_refused() {
        let origin = Origin::Answered(rejected("no funds"));
        assert!(matches!(
            plan(Phase::Confirm, OwnRow::New, origin),
            Plan::Answer(ReplyOutcome::Rejected { .. })
        ));
    }

    #[test]
    fn confirm_without_a_forward_phase_is_retryable_not_run() {
        assert!(matches!(
            plan(Phase::Confirm, OwnRow::New, Origin::Missing),
            Plan::Answer(ReplyOutcome::Failed { .. })
        ));
    }
}
