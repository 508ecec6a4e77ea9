//! The one envelope every message travels in.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::limits::{
    self, ATTEMPT_MAX, STEP_NAME_MAX_CHARS, STEP_NAME_MIN_CHARS, STEP_NAME_PATTERN,
};

/// What a message is, which decides the topic family it travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Starts a saga; the payload is the definition's input.
    Trigger,
    /// Asks a participant to run one phase of one step.
    Command,
    /// A participant's answer to a command.
    Reply,
    /// A public saga lifecycle event.
    Lifecycle,
}

/// The phase of a step a command or reply belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// TCC: reserve resources.
    Try,
    /// TCC: make the reservation final.
    Confirm,
    /// TCC: release the reservation.
    Cancel,
    /// Compensable step: the forward action.
    Action,
    /// Compensable step: undo the forward action.
    Compensate,
}

impl Phase {
    /// Every phase, for iteration in tests and tools.
    pub const ALL: [Phase; 5] = [
        Phase::Try,
        Phase::Confirm,
        Phase::Cancel,
        Phase::Action,
        Phase::Compensate,
    ];

    /// The wire name of the phase (`try`, `confirm`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Try => "try",
            Phase::Confirm => "confirm",
            Phase::Cancel => "cancel",
            Phase::Action => "action",
            Phase::Compensate => "compensate",
        }
    }

    /// The forward phase this phase settles or undoes (`try` for confirm and cancel,
    /// `action` for compensate); `None` for the forward phases themselves.
    pub fn origin(self) -> Option<Phase> {
        match self {
            Phase::Confirm | Phase::Cancel => Some(Phase::Try),
            Phase::Compensate => Some(Phase::Action),
            Phase::Try | Phase::Action => None,
        }
    }

    /// Whether this phase undoes a forward phase (cancel, compensate).
    pub fn is_undo(self) -> bool {
        matches!(self, Phase::Cancel | Phase::Compensate)
    }
}

impl MessageKind {
    /// The wire name: `trigger`, `command`, `reply` or `lifecycle`.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Trigger => "trigger",
            MessageKind::Command => "command",
            MessageKind::Reply => "reply",
            MessageKind::Lifecycle => "lifecycle",
        }
    }
}

impl std::fmt::Display for MessageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Phase {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown phase `{s}`"))
    }
}

/// Reads a stored phase name back (used by `sqlx(try_from = "String")` at the edges).
impl TryFrom<String> for Phase {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

/// The JSON envelope of every message on every topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Envelope<P = serde_json::Value> {
    /// Unique per message; consumers deduplicate on it. A UUID in its hyphenated form.
    #[serde(deserialize_with = "limits::wire::uuid")]
    pub message_id: Uuid,
    /// What the message is.
    pub kind: MessageKind,
    /// The saga the message belongs to (a hyphenated UUID); absent on triggers, required on
    /// commands and replies.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "limits::wire::option_uuid"
    )]
    pub saga_id: Option<Uuid>,
    /// The step the command or reply is about (required on both): 1 to 64 characters, no
    /// NUL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = STEP_NAME_MIN_CHARS, max = STEP_NAME_MAX_CHARS),
        pattern(STEP_NAME_PATTERN)
    )]
    pub step: Option<String>,
    /// The phase of the step the command or reply is about (required on both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Delivery attempt of the command this message is or answers (1 for the first, 0 on
    /// triggers and lifecycle events): 0 to 1,000,000.
    #[serde(default)]
    #[schemars(range(max = ATTEMPT_MAX))]
    pub attempt: u32,
    /// The message body; its type depends on `kind` (and for commands, on the step).
    pub payload: P,
    /// When the sender created the message.
    pub occurred_at: DateTime<Utc>,
}

impl<P> Envelope<P> {
    /// A message of `kind` with a fresh id, stamped now.
    pub fn new(kind: MessageKind, payload: P) -> Self {
        Envelope {
            message_id: Uuid::new_v4(),
            kind,
            saga_id: None,
            step: None,
            phase: None,
            attempt: 0,
            payload,
            occurred_at: Utc::now(),
        }
    }

    /// The same message about `saga_id`.
    pub fn for_saga(mut self, saga_id: Uuid) -> Self {
        self.saga_id = Some(saga_id);
        self
    }

    /// The same message about `phase` of `step`, at `attempt`.
    pub fn for_step(mut self, step: impl Into<String>, phase: Phase, attempt: u32) -> Self {
        self.step = Some(step.into());
        self.phase = Some(phase);
        self.attempt = attempt;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_envelope_has_the_documented_wire_shape() {
        let saga_id = Uuid::new_v4();
        let envelope = Envelope::new(MessageKind::Command, serde_json::json!({"cents": 500}))
            .for_saga(saga_id)
            .for_step("reserve_funds", Phase::Try, 1);
        let json = serde_json::to_value(&envelope).unwrap();
        assert_eq!(json["kind"], "command");
        assert_eq!(json["phase"], "try");
        assert_eq!(json["saga_id"], saga_id.to_string());
        assert_eq!(json["step"], "reserve_funds");
        assert_eq!(json["attempt"], 1);
        assert_eq!(json["payload"]["cents"], 500);
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, envelope);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut json = serde_json::to_value(Envelope::new(MessageKind::Trigger, 1)).unwrap();
        json["surprise"] = serde_json::json!(true);
        assert!(serde_json::from_value::<Envelope>(json).is_err());
    }

    #[test]
    fn phases_know_their_origin() {
        assert_eq!(Phase::Cancel.origin(), Some(Phase::Try));
        assert_eq!(Phase::Confirm.origin(), Some(Phase::Try));
        assert_eq!(Phase::Compensate.origin(), Some(Phase::Action));
        assert_eq!(Phase::Try.origin(), None);
        for phase in Phase::ALL {
            assert_eq!(phase.as_str().parse::<Phase>().unwrap(), phase);
        }
    }
}
