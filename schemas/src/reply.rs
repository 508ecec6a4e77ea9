//! What a participant answers.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A participant's answer to one command: the payload of every reply envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReplyOutcome {
    /// The phase took effect (or had nothing to do); `output` is the step's result.
    Ok {
        /// Step output, `null` when the step has none.
        #[serde(default)]
        output: serde_json::Value,
    },
    /// A business rejection: never retried; the saga compensates.
    Rejected {
        /// Why the participant refused, for people.
        reason: String,
    },
    /// A transient failure: the engine retries the same command.
    Failed {
        /// What went wrong, for people.
        error: String,
    },
}

impl ReplyOutcome {
    /// An `Ok` outcome with no output.
    pub fn ok() -> Self {
        ReplyOutcome::Ok {
            output: serde_json::Value::Null,
        }
    }

    /// Whether the phase took effect.
    pub fn is_ok(&self) -> bool {
        matches!(self, ReplyOutcome::Ok { .. })
    }
}
