//! Reading an envelope off the wire: the one place that turns bytes into a checked
//! [`Envelope`], and a command's or reply's address into a [`StepAddress`].

use serde::Deserialize;
use uuid::Uuid;

use crate::envelope::{Envelope, MessageKind, Phase};
use crate::limits::{self, ATTEMPT_MAX, STEP_NAME_MAX_CHARS, STEP_NAME_MIN_CHARS};
use crate::{LifecycleEvent, ReplyOutcome};

/// Why bytes are not a usable envelope. The message says exactly what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The message has no body.
    #[error("empty message")]
    Empty,
    /// The body is larger than the consumer accepts.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Body size in bytes.
        size: usize,
        /// The consumer's limit in bytes.
        limit: usize,
    },
    /// The body is not an envelope (bad JSON, missing or unknown fields).
    #[error("not a valid envelope: {0}")]
    Invalid(String),
    /// The envelope is of another kind than the topic carries.
    #[error("expected a {expected} message, got a {got} message")]
    WrongKind {
        /// What the topic carries.
        expected: MessageKind,
        /// What arrived.
        got: MessageKind,
    },
    /// A text holds a character Postgres cannot store (the NUL character, `\u0000`).
    #[error("{0} holds a NUL character (\\u0000), which Postgres cannot store")]
    Unstorable(String),
    /// A field is outside its documented limit (see [`crate::limits`]).
    #[error("out of bounds: {0}")]
    OutOfBounds(String),
    /// A command or reply whose `attempt` is missing or 0: attempts count from 1.
    #[error("{0} envelope without `attempt` (attempts count from 1; 0 is for triggers and lifecycle events)")]
    NoAttempt(MessageKind),
    /// A command or reply without a field it needs.
    #[error("{kind} envelope without `{field}`")]
    Missing {
        /// The envelope's kind.
        kind: MessageKind,
        /// The missing field.
        field: &'static str,
    },
}

/// Which phase of which step of which saga a command or reply is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepAddress {
    /// The saga.
    pub saga_id: Uuid,
    /// The step within the saga.
    pub step: String,
    /// The phase of the step.
    pub phase: Phase,
    /// The delivery attempt of the command (1 for the first).
    pub attempt: u32,
}

impl Envelope {
    /// Reads an envelope of kind `expected` from `payload`, refusing bodies over `limit`
    /// bytes.
    pub fn parse(
        payload: Option<&[u8]>,
        expected: MessageKind,
        limit: usize,
    ) -> Result<Envelope, EnvelopeError> {
        let payload = payload.ok_or(EnvelopeError::Empty)?;
        if payload.len() > limit {
            return Err(EnvelopeError::TooLarge {
                size: payload.len(),
                limit,
            });
        }
        let envelope: Envelope =
            serde_json::from_slice(payload).map_err(|e| EnvelopeError::Invalid(e.to_string()))?;
        if envelope.kind != expected {
            return Err(EnvelopeError::WrongKind {
                expected,
                got: envelope.kind,
            });
        }
        if envelope
            .step
            .as_deref()
            .is_some_and(|step| step.contains('\0'))
        {
            return Err(EnvelopeError::Unstorable("`step`".into()));
        }
        if let Some(path) = nul_path(&envelope.payload, "payload") {
            return Err(EnvelopeError::Unstorable(format!("`{path}`")));
        }
        envelope.check_bounds()?;
        Ok(envelope)
    }

    /// Checks the envelope's own fields against [`crate::limits`], and the payload of the
    /// kinds whose payload type the contract fixes (replies, lifecycle events). Triggers
    /// and commands are checked by their definition and participant.
    fn check_bounds(&self) -> Result<(), EnvelopeError> {
        let bounds = EnvelopeError::OutOfBounds;
        limits::check_range("attempt", self.attempt, 0, ATTEMPT_MAX).map_err(bounds)?;
        if let Some(step) = &self.step {
            limits::check_length("step", step, STEP_NAME_MIN_CHARS, STEP_NAME_MAX_CHARS)
                .map_err(bounds)?;
        }
        let invalid = |what: &str, e: serde_json::Error| {
            EnvelopeError::Invalid(format!("{what} payload: {e}"))
        };
        match self.kind {
            MessageKind::Reply => ReplyOutcome::deserialize(&self.payload)
                .map_err(|e| invalid("reply", e))?
                .validate()
                .map_err(bounds),
            MessageKind::Lifecycle => LifecycleEvent::deserialize(&self.payload)
                .map_err(|e| invalid("lifecycle", e))?
                .validate()
                .map_err(bounds),
            MessageKind::Trigger | MessageKind::Command => Ok(()),
        }
    }

    /// The step address a command or reply must carry, with its payload: `saga_id`,
    /// `step`, `phase` and an `attempt` of 1 or more.
    pub fn into_step_message(self) -> Result<(StepAddress, serde_json::Value), EnvelopeError> {
        let kind = self.kind;
        let missing = |field| EnvelopeError::Missing { kind, field };
        let address = StepAddress {
            saga_id: self.saga_id.ok_or_else(|| missing("saga_id"))?,
            step: self.step.ok_or_else(|| missing("step"))?,
            phase: self.phase.ok_or_else(|| missing("phase"))?,
            attempt: match self.attempt {
                0 => return Err(EnvelopeError::NoAttempt(kind)),
                attempt => attempt,
            },
        };
        Ok((address, self.payload))
    }
}

/// The path of the first text (a string or an object key) in `value` that holds a NUL.
fn nul_path(value: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(text) if text.contains('\0') => Some(path.to_string()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, &format!("{path}[{i}]"))),
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            let inner = format!("{path}.{key}");
            if key.contains('\0') {
                Some(inner)
            } else {
                nul_path(item, &inner)
            }
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    #[test]
    fn a_complete_command_parses_into_its_address() {
        let saga_id = Uuid::new_v4();
        let envelope = Envelope::new(MessageKind::Command, serde_json::json!({"cents": 5}))
            .for_saga(saga_id)
            .for_step("reserve_funds", Phase::Try, 2);
        let bytes = serde_json::to_vec(&envelope).unwrap();
        let parsed = Envelope::parse(Some(&bytes), MessageKind::Command, LIMIT).unwrap();
        let (address, payload) = parsed.into_step_message().unwrap();
        assert_eq!(
            address,
            StepAddress {
                saga_id,
                step: "reserve_funds".into(),
                phase: Phase::Try,
                attempt: 2
            }
        );
        assert_eq!(payload["cents"], 5);
    }

    #[test]
    fn bad_bytes_say_what_is_wrong() {
        let parse = |bytes: Option<&[u8]>| Envelope::parse(bytes, MessageKind::Command, 64);
        assert_eq!(parse(None).unwrap_err(), EnvelopeError::Empty);
        assert!(matches!(
            parse(Some(b"{nope")).unwrap_err(),
            EnvelopeError::Invalid(_)
        ));
        assert_eq!(
            parse(Some(&[b' '; 65])).unwrap_err(),
            EnvelopeError::TooLarge {
                size: 65,
                limit: 64
            }
        );
        let reply = serde_json::to_vec(&Envelope::new(MessageKind::Reply, 0)).unwrap();
        let error = Envelope::parse(Some(&reply), MessageKind::Command, LIMIT).unwrap_err();
        assert_eq!(
            error.to_string(),
            "expected a command message, got a reply message"
        );
        let nul = br#"{"message_id":"00000000-0000-0000-0000-000000000001","kind":"trigger",
            "payload":{"order":{"note":"a\u0000b"}},"occurred_at":"2026-11-23T00:00:00Z"}"#;
        let error = Envelope::parse(Some(nul), MessageKind::Trigger, LIMIT).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`payload.order.note` holds a NUL character (\\u0000), which Postgres cannot store"
        );
        let no_step =
            Envelope::new(MessageKind::Command, serde_json::Value::Null).for_saga(Uuid::new_v4());
        let error = no_step.into_step_message().unwrap_err();
        assert_eq!(error.to_string(), "command envelope without `step`");
        let no_attempt = Envelope::new(MessageKind::Reply, serde_json::Value::Null)
            .for_saga(Uuid::new_v4())
            .for_step("reserve_funds", Phase::Try, 0);
        let error = no_attempt.into_step_message().unwrap_err();
        assert_eq!(error, EnvelopeError::NoAttempt(MessageKind::Reply));
        assert!(error
            .to_string()
            .starts_with("reply envelope without `attempt`"));
    }
}
