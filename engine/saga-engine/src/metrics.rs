//! The engine's metrics, recorded with the `metrics` facade (a process installs an exporter;
//! the admin server renders Prometheus text). Names follow Prometheus conventions.

use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use saga_core::{Decision, Lifecycle, SagaInput};

use crate::breaker::BreakerState;
use crate::transition::Applied;

/// Sagas started, by `definition`.
pub const SAGAS_STARTED: &str = "saga_started_total";
/// Sagas ended, by `definition` and `outcome`.
pub const SAGAS_ENDED: &str = "saga_ended_total";
/// Sagas parked, by `definition`.
pub const SAGAS_PARKED: &str = "saga_parked_total";
/// Start to end of a saga, by `definition`.
pub const SAGA_DURATION: &str = "saga_duration_seconds";
/// Commands sent, by `participant` and `phase`.
pub const COMMANDS_SENT: &str = "saga_commands_sent_total";
/// The attempt a command went out as, by `participant` (1 = first try).
pub const COMMAND_ATTEMPT: &str = "saga_command_attempt";
/// Time from sending a command to applying its reply, by `participant` and `phase`.
pub const STEP_DURATION: &str = "saga_step_seconds";
/// Inputs through the transition path, by `input` and `result`.
pub const TRANSITIONS: &str = "saga_transitions_total";
/// Time of one transition transaction, by `input`.
pub const TRANSITION_DURATION: &str = "saga_transition_seconds";
/// Duplicate deliveries the inbox stopped, by `consumer`.
pub const INBOX_DUPLICATES: &str = "saga_inbox_duplicates_total";
/// Replies that changed nothing, by `reason` (see `saga_core::IgnoredReply::label`).
pub const REPLIES_IGNORED: &str = "saga_replies_ignored_total";
/// Timers fired.
pub const TIMERS_FIRED: &str = "saga_timers_fired_total";
/// Timers whose firing failed and was put off, to be tried again on their own.
pub const TIMER_FAILURES: &str = "saga_timer_failures_total";
/// Triggers refused because their idempotency key already started a saga with another
/// payload, by `definition`.
pub const TRIGGER_CONFLICTS: &str = "saga_trigger_conflicts_total";
/// Current sagas, by `definition` and `status` (refreshed at scrape).
pub const SAGAS: &str = "saga_sagas";
/// Sagas waiting for an operator (refreshed at scrape).
pub const PARKED: &str = "saga_parked";
/// Outbox rows waiting for the broker (refreshed at scrape).
pub const OUTBOX_BACKLOG: &str = "saga_outbox_backlog";
/// Age of the oldest outbox row (refreshed at scrape).
pub const OUTBOX_OLDEST: &str = "saga_outbox_oldest_seconds";
/// Timers due and not yet fired (refreshed at scrape).
pub const TIMERS_DUE: &str = "saga_timers_due";
/// Messages not yet committed by an engine consumer group, per `group`, `topic` and
/// `partition` (refreshed at scrape).
pub const CONSUMER_LAG: &str = "saga_consumer_lag";
/// Dead letters kept and not discarded (refreshed at scrape).
pub const DEAD_LETTERS_OPEN: &str = "saga_dead_letters_open";
/// Each participant's circuit breaker in this engine process, by `participant`: 0 closed,
/// 1 half-open, 2 open.
pub const BREAKER_STATE: &str = "saga_breaker_state";
/// Forward commands held back by an open breaker, by `participant`.
pub const COMMANDS_DEFERRED: &str = "saga_commands_deferred_total";
/// Expired rows deleted by retention, by `table`.
pub const RETENTION_DELETED: &str = "saga_retention_deleted_total";

/// Describes every engine metric to the installed recorder.
pub fn describe() {
    describe_counter!(SAGAS_STARTED, "Sagas started");
    describe_counter!(SAGAS_ENDED, "Sagas ended, by outcome");
    describe_counter!(SAGAS_PARKED, "Sagas parked for an operator");
    describe_histogram!(SAGA_DURATION, Unit::Seconds, "Saga start to end");
    describe_counter!(COMMANDS_SENT, "Commands sent to participants");
    describe_histogram!(COMMAND_ATTEMPT, "Attempt number of each command sent");
    describe_histogram!(
        STEP_DURATION,
        Unit::Seconds,
        "Command sent to its reply applied, per participant"
    );
    describe_counter!(TRANSITIONS, "Inputs applied through the transition path");
    describe_histogram!(
        TRANSITION_DURATION,
        Unit::Seconds,
        "One transition transaction"
    );
    describe_counter!(
        INBOX_DUPLICATES,
        "Duplicate deliveries dropped by the inbox"
    );
    describe_counter!(TIMERS_FIRED, "Durable timers fired");
    describe_counter!(
        TIMER_FAILURES,
        "Timers whose firing failed and was put off with backoff"
    );
    describe_counter!(
        TRIGGER_CONFLICTS,
        "Triggers refused: idempotency key reused with a different payload"
    );
    describe_counter!(
        REPLIES_IGNORED,
        "Replies that changed nothing, by reason (stale attempt, unknown or ended saga, ...)"
    );
    describe_gauge!(SAGAS, "Sagas by definition and status");
    describe_gauge!(PARKED, "Sagas waiting for an operator");
    describe_gauge!(OUTBOX_BACKLOG, "Outbox rows waiting for the broker");
    describe_gauge!(OUTBOX_OLDEST, Unit::Seconds, "Age of the oldest outbox row");
    describe_gauge!(TIMERS_DUE, "Timers due and not yet fired");
    describe_gauge!(DEAD_LETTERS_OPEN, "Dead letters kept and not discarded");
    describe_gauge!(
        CONSUMER_LAG,
        "Messages an engine consumer group has not committed"
    );
    describe_counter!(RETENTION_DELETED, "Expired rows deleted by retention");
    describe_gauge!(
        BREAKER_STATE,
        "Circuit breaker per participant: 0 closed, 1 half-open, 2 open"
    );
    describe_counter!(
        COMMANDS_DEFERRED,
        "Forward commands held back by a participant's circuit breaker"
    );
    saga_plumbing::metrics::describe();
}

/// The `input` label of an input.
pub fn input_label(input: &SagaInput) -> &'static str {
    match input {
        SagaInput::Start { .. } => "start",
        SagaInput::Reply { .. } => "reply",
        SagaInput::TimerFired { .. } => "timer",
        SagaInput::Operator(_) => "operator",
        SagaInput::DeadlinePassed => "deadline",
        SagaInput::DeferralEnded { .. } => "deferral",
    }
}

/// Records one applied input and how long its transaction took.
pub fn transition(input: &SagaInput, applied: &Applied, consumer: Option<&str>, took: Duration) {
    let result = match applied {
        Applied::Duplicate => "duplicate",
        Applied::Unchanged => "unchanged",
        Applied::Changed { .. } => "changed",
        Applied::Refused { .. } => "refused",
        Applied::UnknownDefinition { .. } => "unknown_definition",
    };
    let input = input_label(input);
    counter!(TRANSITIONS, "input" => input, "result" => result).increment(1);
    histogram!(TRANSITION_DURATION, "input" => input).record(took.as_secs_f64());
    if let (Applied::Duplicate, Some(consumer)) = (applied, consumer) {
        counter!(INBOX_DUPLICATES, "consumer" => consumer.to_string()).increment(1);
    }
}

/// Records what a committed decision did to a saga of `definition` that has lived `age`.
pub fn decision(definition: &str, decision: &Decision, age: Duration) {
    for command in &decision.commands {
        counter!(COMMANDS_SENT, "participant" => command.participant.clone(),
            "phase" => command.phase.as_str())
        .increment(1);
        histogram!(COMMAND_ATTEMPT, "participant" => command.participant.clone())
            .record(f64::from(command.attempt));
    }
    for news in &decision.lifecycle {
        match news {
            Lifecycle::Started => {
                counter!(SAGAS_STARTED, "definition" => definition.to_string()).increment(1)
            }
            Lifecycle::Finished(outcome) => {
                let outcome = serde_json::to_value(outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                counter!(SAGAS_ENDED, "definition" => definition.to_string(), "outcome" => outcome)
                    .increment(1);
                histogram!(SAGA_DURATION, "definition" => definition.to_string())
                    .record(age.as_secs_f64());
            }
            Lifecycle::Parked(_) => {
                counter!(SAGAS_PARKED, "definition" => definition.to_string()).increment(1)
            }
        }
    }
}

/// Records a participant's answer that took `seconds` since its command was sent.
pub fn step_answered(participant: &str, phase: schemas::Phase, seconds: f64) {
    histogram!(STEP_DURATION, "participant" => participant.to_string(), "phase" => phase.as_str())
        .record(seconds);
}

/// Records `rows` expired rows of `table` deleted by retention.
pub fn retention_deleted(table: &'static str, rows: u64) {
    counter!(RETENTION_DELETED, "table" => table).increment(rows);
}

/// Records a trigger refused for reusing an idempotency key of `definition`.
pub fn trigger_conflict(definition: &str) {
    counter!(TRIGGER_CONFLICTS, "definition" => definition.to_string()).increment(1);
}

/// Records a reply ignored for `reason`.
pub fn reply_ignored(reason: &'static str) {
    counter!(REPLIES_IGNORED, "reason" => reason).increment(1);
}

/// Records a timer whose firing failed and was put off.
pub fn timer_failed() {
    counter!(TIMER_FAILURES).increment(1);
}

/// Records a fired timer.
pub fn timer_fired() {
    counter!(TIMERS_FIRED).increment(1);
}

/// Records the state of `participant`'s circuit breaker.
pub fn breaker_state(participant: &str, state: BreakerState) {
    gauge!(BREAKER_STATE, "participant" => participant.to_string()).set(state.gauge_value());
}

/// Records a forward command to `participant` held back by its breaker.
pub fn command_deferred(participant: &str) {
    counter!(COMMANDS_DEFERRED, "participant" => participant.to_string()).increment(1);
}
