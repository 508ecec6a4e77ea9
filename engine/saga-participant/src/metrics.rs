//! A participant's metrics: commands handled, barrier duplicates, null compensations,
//! rows deleted by retention.

use metrics::{counter, describe_counter};
use schemas::{Phase, ReplyOutcome};

use crate::kit::Handled;

/// Commands handled, by `topic`, `phase` and `outcome`.
pub const COMMANDS_HANDLED: &str = "saga_participant_commands_total";
/// Duplicate commands answered from the barrier, by `topic`.
pub const BARRIER_DUPLICATES: &str = "saga_participant_barrier_duplicates_total";
/// Undo phases that found no forward phase, by `topic`.
pub const NULL_COMPENSATIONS: &str = "saga_participant_null_compensations_total";
/// Forward commands refused because their saga's deadline had passed, by `step`.
pub const DEADLINE_REFUSALS: &str = "saga_participant_deadline_refusals_total";
/// Expired rows deleted by retention, by `schema` and `table`.
pub const RETENTION_DELETED: &str = "saga_participant_retention_deleted_total";

/// Describes the participant metrics to the installed recorder.
pub fn describe() {
    describe_counter!(COMMANDS_HANDLED, "Commands handled by a participant");
    describe_counter!(
        BARRIER_DUPLICATES,
        "Duplicate commands answered with the stored reply"
    );
    describe_counter!(
        NULL_COMPENSATIONS,
        "Undo phases that arrived before (or without) their forward phase"
    );
    describe_counter!(RETENTION_DELETED, "Expired rows deleted by retention");
    describe_counter!(
        DEADLINE_REFUSALS,
        "Forward commands refused without running: their saga's deadline had passed"
    );
}

/// Records a forward command of `step` refused past its saga's deadline.
pub fn deadline_refusal(step: &str) {
    counter!(DEADLINE_REFUSALS, "step" => step.to_string()).increment(1);
}

/// Records `rows` expired rows of `table` in `schema` deleted by retention.
pub fn retention_deleted(schema: &str, table: &'static str, rows: u64) {
    counter!(RETENTION_DELETED, "schema" => schema.to_string(), "table" => table).increment(rows);
}

/// Records one handled command from `topic`.
pub fn handled(topic: &str, phase: Phase, handled: &Handled) {
    let outcome = match handled.reply() {
        ReplyOutcome::Ok { .. } => "ok",
        ReplyOutcome::Rejected { .. } => "rejected",
        ReplyOutcome::Failed { .. } => "failed",
    };
    counter!(COMMANDS_HANDLED, "topic" => topic.to_string(), "phase" => phase.as_str(),
        "outcome" => outcome)
    .increment(1);
    match handled {
        Handled::Replayed(_) => {
            counter!(BARRIER_DUPLICATES, "topic" => topic.to_string()).increment(1)
        }
        Handled::Answered(ReplyOutcome::Ok { output })
            if output["null_compensation"] == serde_json::Value::Bool(true) =>
        {
            counter!(NULL_COMPENSATIONS, "topic" => topic.to_string()).increment(1)
        }
        Handled::Answered(_) => {}
    }
}
