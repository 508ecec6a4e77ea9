//! Metrics of the shared plumbing: dead letters and the outbox relay.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_histogram, histogram, Unit};

/// Messages dead-lettered, by source `topic` and `reason`.
pub const DEAD_LETTERS: &str = "saga_dead_letters_total";
/// Dead letters the DLQ topic refused, kept in Postgres only, by source `topic`.
pub const DEAD_LETTERS_UNPUBLISHED: &str = "saga_dead_letters_unpublished_total";
/// Outbox rows the broker refused for good, set aside, by `topic`.
pub const SET_ASIDE: &str = "saga_outbox_set_aside_total";
/// Attempts at a message that failed on Postgres or Kafka and will be retried, by `consumer`.
pub const HANDLE_RETRIES: &str = "saga_consumer_retries_total";
/// Messages a consumer lane applied per transaction (group commit), by `consumer`.
pub const GROUP_SIZE: &str = "saga_consumer_group_messages";
/// Groups of several messages a consumer lane applied, by `consumer` and by `applied`:
/// `at_once` (the handler wrote the whole group together) or `one_by_one` (a savepoint
/// per message).
pub const GROUPS: &str = "saga_consumer_groups_total";
/// Time from an outbox row's commit to the broker's acknowledgement.
pub const RELAY_LATENCY: &str = "saga_outbox_relay_seconds";
/// Outbox rows published.
pub const RELAYED: &str = "saga_outbox_published_total";
/// Outbox row publishes that failed for a passing reason (the row stays and goes again).
pub const PUBLISH_FAILURES: &str = "saga_outbox_publish_failures_total";

/// Describes the plumbing's metrics to the installed recorder.
pub fn describe() {
    describe_counter!(DEAD_LETTERS, "Messages sent to the dead-letter queue");
    describe_histogram!(
        RELAY_LATENCY,
        Unit::Seconds,
        "Outbox row committed to broker acknowledgement"
    );
    describe_counter!(RELAYED, "Outbox rows published and acknowledged");
    describe_histogram!(
        GROUP_SIZE,
        Unit::Count,
        "Messages a consumer lane applied in one transaction"
    );
    describe_counter!(
        GROUPS,
        "Groups of messages a consumer lane applied, at once or one by one"
    );
    describe_counter!(
        PUBLISH_FAILURES,
        "Outbox row publishes that failed and will be retried"
    );
    describe_counter!(
        DEAD_LETTERS_UNPUBLISHED,
        "Dead letters the DLQ topic refused, kept in Postgres only"
    );
    describe_counter!(
        SET_ASIDE,
        "Outbox rows the broker refused for good, set aside"
    );
}

/// A dead-lettering error's kind, a label of few values.
pub fn dead_letter_reason(error: &str) -> &'static str {
    let known = [
        ("not a valid envelope", "invalid_envelope"),
        ("empty message", "empty"),
        ("exceeds the limit", "too_large"),
        ("expected a", "wrong_kind"),
        ("unknown definition", "unknown_definition"),
        ("no definition is triggered", "unknown_definition"),
        ("trigger rejected by", "invalid_input"),
        ("reply payload", "invalid_reply"),
        ("NUL character", "unstorable"),
    ];
    known
        .iter()
        .find(|(text, _)| error.contains(text))
        .map_or("other", |(_, reason)| reason)
}

/// Records one dead-lettered message.
pub fn dead_lettered(topic: &str, error: &str) {
    counter!(DEAD_LETTERS, "topic" => topic.to_string(), "reason" => dead_letter_reason(error))
        .increment(1);
}

/// Records one dead letter that only Postgres keeps.
pub fn dead_letter_unpublished(topic: &str) {
    counter!(DEAD_LETTERS_UNPUBLISHED, "topic" => topic.to_string()).increment(1);
}

/// Records one failed attempt at a message that will be retried.
pub fn handle_retried(consumer: &str) {
    counter!(HANDLE_RETRIES, "consumer" => consumer.to_string()).increment(1);
}

/// Records how a lane of `consumer` applied a group of several messages: `at_once`,
/// `one_by_one` (in one transaction) or `alone` (each in its own, after the group failed).
pub fn group_applied(consumer: &str, applied: &'static str) {
    counter!(GROUPS, "consumer" => consumer.to_string(), "applied" => applied).increment(1);
}

/// Records a group of `messages` committed by a lane of `consumer`.
pub fn group_committed(consumer: &str, messages: usize) {
    histogram!(GROUP_SIZE, "consumer" => consumer.to_string()).record(messages as f64);
}

/// Records one outbox row set aside.
pub fn set_aside(topic: &str) {
    counter!(SET_ASIDE, "topic" => topic.to_string()).increment(1);
}

/// Records `rows` outbox rows whose publish failed and will be retried.
pub fn publish_failed(rows: usize) {
    counter!(PUBLISH_FAILURES).increment(rows as u64);
}

/// Records rows published by the relay, each with its wait since commit.
pub fn relayed(waits: impl Iterator<Item = Duration>) {
    let latency = histogram!(RELAY_LATENCY);
    let mut count = 0;
    for wait in waits {
        latency.record(wait.as_secs_f64());
        count += 1;
    }
    counter!(RELAYED).increment(count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_reasons_are_few() {
        assert_eq!(
            dead_letter_reason("not a valid envelope: expected value at line 1"),
            "invalid_envelope"
        );
        assert_eq!(
            dead_letter_reason("trigger names unknown definition `refund`"),
            "unknown_definition"
        );
        assert_eq!(dead_letter_reason("something new"), "other");
    }
}
