//! Public saga lifecycle events, published on `saga.lifecycle`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::limits::{
    self, DEFINITION_NAME_MAX_CHARS, DEFINITION_NAME_MIN_CHARS, DEFINITION_NAME_PATTERN,
    DEFINITION_VERSION_MIN, IDEMPOTENCY_KEY_MAX_CHARS, IDEMPOTENCY_KEY_MIN_CHARS,
    PAYLOAD_HASH_PATTERN, REASON_MAX_CHARS,
};

/// How a saga ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SagaOutcome {
    /// Every step succeeded and every TCC branch was confirmed.
    Completed,
    /// A step was rejected; completed steps were compensated and TCC branches cancelled.
    Compensated,
    /// A parked saga was resolved by hand; an operator said how.
    ResolvedManually,
}

/// The payload of a lifecycle envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum LifecycleEvent {
    /// A saga was started by a trigger.
    Started {
        /// Definition name: 1 to 64 characters of `a-z`, `0-9`, `_`, `-`, `.`.
        #[schemars(
            length(min = DEFINITION_NAME_MIN_CHARS, max = DEFINITION_NAME_MAX_CHARS),
            pattern(DEFINITION_NAME_PATTERN)
        )]
        definition: String,
        /// Definition version, from 1.
        #[schemars(range(min = DEFINITION_VERSION_MIN))]
        version: u32,
    },
    /// A saga reached a terminal state.
    Finished {
        /// Definition name: 1 to 64 characters of `a-z`, `0-9`, `_`, `-`, `.`.
        #[schemars(
            length(min = DEFINITION_NAME_MIN_CHARS, max = DEFINITION_NAME_MAX_CHARS),
            pattern(DEFINITION_NAME_PATTERN)
        )]
        definition: String,
        /// How it ended.
        outcome: SagaOutcome,
    },
    /// A saga needs an operator.
    Parked {
        /// Definition name: 1 to 64 characters of `a-z`, `0-9`, `_`, `-`, `.`.
        #[schemars(
            length(min = DEFINITION_NAME_MIN_CHARS, max = DEFINITION_NAME_MAX_CHARS),
            pattern(DEFINITION_NAME_PATTERN)
        )]
        definition: String,
        /// Why the engine stopped driving it: at most 1,000 characters (longer reasons are
        /// cut to that when sent).
        #[serde(serialize_with = "limits::wire::reason")]
        #[schemars(length(max = REASON_MAX_CHARS))]
        reason: String,
    },
    /// A trigger reused the idempotency key of the envelope's saga with a different payload:
    /// it started nothing and was dead-lettered; the saga goes on with its first payload.
    TriggerConflict {
        /// Definition name: 1 to 64 characters of `a-z`, `0-9`, `_`, `-`, `.`.
        #[schemars(
            length(min = DEFINITION_NAME_MIN_CHARS, max = DEFINITION_NAME_MAX_CHARS),
            pattern(DEFINITION_NAME_PATTERN)
        )]
        definition: String,
        /// The idempotency key both triggers carry: 1 to 256 characters.
        #[schemars(length(min = IDEMPOTENCY_KEY_MIN_CHARS, max = IDEMPOTENCY_KEY_MAX_CHARS))]
        idempotency_key: String,
        /// The refused trigger's envelope `message_id` (a hyphenated UUID).
        #[serde(deserialize_with = "limits::wire::uuid")]
        message_id: Uuid,
        /// SHA-256 (64 lowercase hex digits) of the canonical JSON of the payload the saga
        /// started with.
        #[schemars(pattern(PAYLOAD_HASH_PATTERN))]
        stored_payload_hash: String,
        /// SHA-256 (64 lowercase hex digits) of the canonical JSON of the refused trigger's
        /// payload.
        #[schemars(pattern(PAYLOAD_HASH_PATTERN))]
        payload_hash: String,
    },
}

impl LifecycleEvent {
    /// Checks the fields against [`crate::limits`] (what `Envelope::parse` applies to
    /// lifecycle events).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            LifecycleEvent::Started {
                definition,
                version,
            } => {
                limits::check_definition_name("definition", definition)?;
                limits::check_range("version", *version, DEFINITION_VERSION_MIN, u32::MAX)
            }
            LifecycleEvent::Finished { definition, .. } => {
                limits::check_definition_name("definition", definition)
            }
            LifecycleEvent::Parked { definition, reason } => {
                limits::check_definition_name("definition", definition)?;
                limits::check_length("reason", reason, 0, REASON_MAX_CHARS)
            }
            LifecycleEvent::TriggerConflict {
                definition,
                idempotency_key,
                stored_payload_hash,
                payload_hash,
                ..
            } => {
                limits::check_definition_name("definition", definition)?;
                limits::check_length(
                    "idempotency_key",
                    idempotency_key,
                    IDEMPOTENCY_KEY_MIN_CHARS,
                    IDEMPOTENCY_KEY_MAX_CHARS,
                )?;
                for (field, hash) in [
                    ("stored_payload_hash", stored_payload_hash),
                    ("payload_hash", payload_hash),
                ] {
                    let hex = hash.len() == 64
                        && hash
                            .chars()
                            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
                    if !hex {
                        return Err(format!(
                            "`{field}` must be 64 lowercase hex digits (SHA-256)"
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}
