//! Topic names of a deployment: an optional prefix before the standard names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Names every topic the engine and the participants read or write.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topics {
    /// Put before every name (e.g. `staging.`); empty by default.
    pub prefix: String,
    /// Participant name → commands topic, for participants whose topic is not the default.
    pub command_overrides: BTreeMap<String, String>,
}

impl Topics {
    /// Topics with `prefix` before every standard name.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Topics {
            prefix: prefix.into(),
            command_overrides: BTreeMap::new(),
        }
    }

    /// The trigger topic of a definition whose unprefixed trigger topic is `name`.
    pub fn trigger(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Where commands for `participant` go: `<participant>.commands`.
    pub fn commands(&self, participant: &str) -> String {
        match self.command_overrides.get(participant) {
            Some(topic) => topic.clone(),
            None => format!("{}{participant}.commands", self.prefix),
        }
    }

    /// Where participants reply: `saga.replies`.
    pub fn replies(&self) -> String {
        format!("{}saga.replies", self.prefix)
    }

    /// Public lifecycle events: `saga.lifecycle`.
    pub fn lifecycle(&self) -> String {
        format!("{}saga.lifecycle", self.prefix)
    }

    /// Poison messages: `saga.dlq`.
    pub fn dlq(&self) -> String {
        format!("{}saga.dlq", self.prefix)
    }
}
