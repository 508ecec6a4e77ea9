//! Public saga lifecycle events, published on `saga.lifecycle`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
}
