//! What a participant answers.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::limits::{self, REASON_MAX_CHARS};

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
        /// Why the participant refused, for people: at most 1,000 characters (longer reasons
        /// are cut to that when sent).
        #[serde(serialize_with = "limits::wire::reason")]
        #[schemars(length(max = REASON_MAX_CHARS))]
        reason: String,
    },
    /// A transient failure: the engine retries the same command.
    Failed {
        /// What went wrong, for people: at most 1,000 characters (longer errors are cut to
        /// that when sent).
        #[serde(serialize_with = "limits::wire::reason")]
        #[schemars(length(max = REASON_MAX_CHARS))]
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

    /// Checks the texts against [`crate::limits`] (what `Envelope::parse` applies to
    /// replies).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            ReplyOutcome::Ok { .. } => Ok(()),
            ReplyOutcome::Rejected { reason } => {
                limits::check_length("reason", reason, 0, REASON_MAX_CHARS)
            }
            ReplyOutcome::Failed { error } => {
                limits::check_length("error", error, 0, REASON_MAX_CHARS)
            }
        }
    }

    /// Whether the phase took effect.
    pub fn is_ok(&self) -> bool {
        matches!(self, ReplyOutcome::Ok { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_when_sent() {
        let long = ReplyOutcome::Rejected {
            reason: "x".repeat(REASON_MAX_CHARS + 5),
        };
        assert!(long.validate().is_err());
        let sent: ReplyOutcome =
            serde_json::from_value(serde_json::to_value(&long).unwrap()).unwrap();
        assert_eq!(
            sent,
            ReplyOutcome::Rejected {
                reason: "x".repeat(REASON_MAX_CHARS)
            }
        );
        assert!(sent.validate().is_ok());
    }
}
