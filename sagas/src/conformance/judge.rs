//! Judging what came back against the protocol (`schemas/PROTOCOL.md`): pure functions of
//! the command sent and the message read.

use schemas::headers::{
    DLQ_ERROR, DLQ_SOURCE_OFFSET, DLQ_SOURCE_PARTITION, DLQ_SOURCE_SIZE, DLQ_SOURCE_TOPIC,
    DLQ_TRUNCATED, TRACEPARENT,
};
use schemas::{Envelope, MessageKind, Phase, ReplyOutcome};
use serde_json::Value;
use uuid::Uuid;

use super::wire::{Received, Sent};

/// The largest reply the engine reads (bytes).
const REPLY_LIMIT: usize = 256 * 1024;
/// The payload prefix a dead letter carries at most (bytes).
const DEAD_LETTER_PAYLOAD_LIMIT: usize = saga_plumbing::dlq::PAYLOAD_LIMIT;

/// The command a reply answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    /// Its saga.
    pub saga_id: Uuid,
    /// Its step.
    pub step: String,
    /// Its phase.
    pub phase: Phase,
    /// Its attempt.
    pub attempt: u32,
}

/// A reply that is well formed and addressed to the command it answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// What the participant answered.
    pub outcome: ReplyOutcome,
    /// The reply's `message_id`.
    pub message_id: Uuid,
    /// Its `traceparent` header.
    pub traceparent: Option<String>,
}

/// What a case expects a reply to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `ok`, any output.
    Ok,
    /// `ok` with the output `{"null_compensation": true}`: nothing was there to undo.
    NullCompensation,
    /// `rejected`, any reason.
    Rejected,
    /// `rejected` with this reason.
    RejectedBecause(&'static str),
    /// `failed`.
    Failed,
}

/// Reads `reply` as the answer to `asked`: a valid reply envelope, keyed by the saga id,
/// with `saga_id`, `step`, `phase` and `attempt` copied from the command.
pub fn read_answer(asked: &Asked, reply: &Received) -> Result<Answer, String> {
    let envelope = Envelope::parse(Some(&reply.payload), MessageKind::Reply, REPLY_LIMIT)
        .map_err(|e| format!("the reply is not a valid reply envelope: {e}"))?;
    let saga = asked.saga_id.hyphenated().to_string();
    if reply.key.as_deref() != Some(saga.as_str()) {
        return Err(format!(
            "the reply is keyed {:?}, not by the saga id {saga}",
            reply.key
        ));
    }
    let copied = [
        ("saga_id", envelope.saga_id.map(|id| id.to_string()), saga),
        ("step", envelope.step.clone(), asked.step.clone()),
        (
            "phase",
            envelope.phase.map(|p| p.to_string()),
            asked.phase.to_string(),
        ),
        (
            "attempt",
            Some(envelope.attempt.to_string()),
            asked.attempt.to_string(),
        ),
    ];
    for (field, got, sent) in copied {
        if got.as_deref() != Some(sent.as_str()) {
            return Err(format!(
                "the reply's {field} is {got:?}, the command's was {sent:?}"
            ));
        }
    }
    let outcome = serde_json::from_value(envelope.payload)
        .map_err(|e| format!("the reply's payload is not an outcome: {e}"))?;
    Ok(Answer {
        outcome,
        message_id: envelope.message_id,
        traceparent: reply.header(TRACEPARENT).map(str::to_string),
    })
}

/// Checks that `answer` says what `expect` asks for.
pub fn expect(answer: &Answer, expect: Expect) -> Result<(), String> {
    let fits = match (&answer.outcome, expect) {
        (ReplyOutcome::Ok { .. }, Expect::Ok) => true,
        (ReplyOutcome::Ok { output }, Expect::NullCompensation) => {
            output.get("null_compensation") == Some(&Value::Bool(true))
        }
        (ReplyOutcome::Rejected { .. }, Expect::Rejected) => true,
        (ReplyOutcome::Rejected { reason }, Expect::RejectedBecause(wanted)) => reason == wanted,
        (ReplyOutcome::Failed { .. }, Expect::Failed) => true,
        _ => false,
    };
    if fits {
        return Ok(());
    }
    let wanted = match expect {
        Expect::Ok => "ok".to_string(),
        Expect::NullCompensation => r#"ok with output {"null_compensation": true}"#.to_string(),
        Expect::Rejected => "rejected".to_string(),
        Expect::RejectedBecause(reason) => format!("rejected with reason `{reason}`"),
        Expect::Failed => "failed".to_string(),
    };
    Err(format!(
        "expected {wanted}, got {}",
        describe(&answer.outcome)
    ))
}

/// Checks that `again` repeats `first`: the same outcome and output (a stored reply).
pub fn same_answer(first: &Answer, again: &Answer) -> Result<(), String> {
    if first.outcome == again.outcome {
        return Ok(());
    }
    Err(format!(
        "the repeated command was answered {}, the first delivery {}",
        describe(&again.outcome),
        describe(&first.outcome)
    ))
}

/// Checks that `letter` dead-letters the command `original` the kit sent to `topic` with
/// `key` and that the broker stored at `sent` (PROTOCOL §7).
pub fn dead_letter(
    letter: &Received,
    sent: Sent,
    topic: &str,
    key: &str,
    original: &[u8],
) -> Result<(), String> {
    let truncated = original.len() > DEAD_LETTER_PAYLOAD_LIMIT;
    let kept = &original[..original.len().min(DEAD_LETTER_PAYLOAD_LIMIT)];
    let headers = [
        (DLQ_SOURCE_TOPIC, topic.to_string()),
        (DLQ_SOURCE_PARTITION, sent.partition.to_string()),
        (DLQ_SOURCE_OFFSET, sent.offset.to_string()),
        (DLQ_SOURCE_SIZE, original.len().to_string()),
        (DLQ_TRUNCATED, truncated.to_string()),
    ];
    for (name, wanted) in headers {
        if letter.header(name) != Some(wanted.as_str()) {
            return Err(format!(
                "the dead letter's {name} header is {:?}, expected {wanted:?}",
                letter.header(name)
            ));
        }
    }
    if letter.header(DLQ_ERROR).is_none_or(str::is_empty) {
        return Err(format!("the dead letter has no {DLQ_ERROR} header"));
    }
    if letter.key.as_deref() != Some(key) {
        return Err(format!(
            "the dead letter is keyed {:?}, the command was keyed {key:?}",
            letter.key
        ));
    }
    if letter.payload != kept {
        return Err("the dead letter's payload is not the command's bytes".into());
    }
    Ok(())
}

/// An outcome in a few words, for a failure line.
pub fn describe(outcome: &ReplyOutcome) -> String {
    match outcome {
        ReplyOutcome::Ok { output } => format!("ok (output {output})"),
        ReplyOutcome::Rejected { reason } => format!("rejected ({reason})"),
        ReplyOutcome::Failed { error } => format!("failed ({error})"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn asked() -> Asked {
        Asked {
            saga_id: Uuid::new_v4(),
            step: "deduct_points".into(),
            phase: Phase::Action,
            attempt: 2,
        }
    }

    fn reply_to(asked: &Asked, body: Value, key: Option<String>) -> Received {
        let mut envelope = json!({
            "message_id": Uuid::new_v4(), "kind": "reply", "saga_id": asked.saga_id,
            "step": asked.step, "phase": asked.phase, "attempt": asked.attempt,
            "payload": {"outcome": "ok", "output": null},
            "occurred_at": "2026-12-04T10:00:00Z"
        });
        for (field, value) in body.as_object().unwrap() {
            envelope[field] = value.clone();
        }
        Received {
            key,
            payload: serde_json::to_vec(&envelope).unwrap(),
            headers: BTreeMap::new(),
        }
    }

    #[test]
    fn a_well_addressed_reply_is_read() {
        let asked = asked();
        let key = Some(asked.saga_id.to_string());
        let answer = read_answer(&asked, &reply_to(&asked, json!({}), key)).unwrap();
        assert!(expect(&answer, Expect::Ok).is_ok());
        let error = expect(&answer, Expect::NullCompensation).unwrap_err();
        assert_eq!(
            error,
            r#"expected ok with output {"null_compensation": true}, got ok (output null)"#
        );
    }

    #[test]
    fn a_reply_with_another_attempt_or_key_is_refused() {
        let asked = asked();
        let key = Some(asked.saga_id.to_string());
        let error = read_answer(&asked, &reply_to(&asked, json!({"attempt": 1}), key)).unwrap_err();
        assert_eq!(
            error,
            r#"the reply's attempt is Some("1"), the command's was "2""#
        );
        let error = read_answer(&asked, &reply_to(&asked, json!({}), None)).unwrap_err();
        assert!(error.starts_with("the reply is keyed None"), "{error}");
    }

    #[test]
    fn a_reply_without_its_step_is_refused() {
        let asked = asked();
        let mut reply = reply_to(&asked, json!({}), Some(asked.saga_id.to_string()));
        let mut body: Value = serde_json::from_slice(&reply.payload).unwrap();
        body.as_object_mut().unwrap().remove("step");
        reply.payload = serde_json::to_vec(&body).unwrap();
        let error = read_answer(&asked, &reply).unwrap_err();
        assert_eq!(
            error,
            r#"the reply's step is None, the command's was "deduct_points""#
        );
    }

    #[test]
    fn a_dead_letter_must_name_where_the_command_was_read() {
        let sent = Sent {
            partition: 3,
            offset: 41,
        };
        let mut letter = Received {
            key: Some("k".into()),
            payload: b"{oops".to_vec(),
            headers: [
                (DLQ_ERROR, "not JSON"),
                (DLQ_SOURCE_TOPIC, "points.commands"),
                (DLQ_SOURCE_PARTITION, "3"),
                (DLQ_SOURCE_OFFSET, "41"),
                (DLQ_SOURCE_SIZE, "5"),
                (DLQ_TRUNCATED, "false"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        };
        assert!(dead_letter(&letter, sent, "points.commands", "k", b"{oops").is_ok());
        letter.headers.remove(DLQ_ERROR);
        assert_eq!(
            dead_letter(&letter, sent, "points.commands", "k", b"{oops").unwrap_err(),
            "the dead letter has no dlq.error header"
        );
    }
}
