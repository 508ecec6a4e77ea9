//! Public saga lifecycle events, published on `saga.lifecycle`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
        /// Definition name.
        definition: String,
        /// Definition version.
        version: u32,
    },
    /// A saga reached a terminal state.
    Finished {
        /// Definition name.
        definition: String,
        /// How it ended.
        outcome: SagaOutcome,
    },
    /// A saga needs an operator.
    Parked {
        /// Definition name.
        definition: String,
        /// Why the engine stopped driving it.
        reason: String,
    },
    /// A trigger reused the idempotency key of the envelope's saga with a different payload:
    /// it started nothing and was dead-lettered; the saga goes on with its first payload.
    TriggerConflict {
        /// Definition name.
        definition: String,
        /// The idempotency key both triggers carry.
        idempotency_key: String,
        /// The refused trigger's envelope `message_id`.
        message_id: Uuid,
        /// SHA-256 (hex) of the canonical JSON of the payload the saga started with.
        stored_payload_hash: String,
        /// SHA-256 (hex) of the canonical JSON of the refused trigger's payload.
        payload_hash: String,
    },
}
