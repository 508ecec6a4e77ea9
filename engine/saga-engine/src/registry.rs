//! The definitions a process knows, by name and version and by trigger topic.

use std::collections::HashMap;
use std::sync::Arc;

use saga_core::SagaDefinition;

/// Registered saga definitions.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    by_version: HashMap<(String, u32), Arc<SagaDefinition>>,
    latest: HashMap<String, Arc<SagaDefinition>>,
}

impl Registry {
    /// Adds `definition`; the highest version of a name starts new sagas.
    pub fn register(&mut self, definition: SagaDefinition) {
        let definition = Arc::new(definition);
        let key = (definition.name().to_string(), definition.version());
        let newer = self
            .latest
            .get(definition.name())
            .is_none_or(|current| current.version() < definition.version());
        if newer {
            self.latest
                .insert(definition.name().to_string(), definition.clone());
        }
        self.by_version.insert(key, definition);
    }

    /// The definition `name` at `version`, if this process knows it.
    pub fn get(&self, name: &str, version: u32) -> Option<&Arc<SagaDefinition>> {
        self.by_version.get(&(name.to_string(), version))
    }

    /// The newest version of `name`.
    pub fn latest(&self, name: &str) -> Option<&Arc<SagaDefinition>> {
        self.latest.get(name)
    }

    /// The newest version of every definition.
    pub fn definitions(&self) -> impl Iterator<Item = &Arc<SagaDefinition>> {
        self.latest.values()
    }

    /// Every registered version of every definition.
    pub fn all_versions(&self) -> impl Iterator<Item = &Arc<SagaDefinition>> {
        self.by_version.values()
    }

    /// Names and versions of every registered version, as two parallel lists (for SQL
    /// `UNNEST`).
    pub fn versions(&self) -> (Vec<String>, Vec<i32>) {
        self.by_version
            .keys()
            .map(|(name, version)| (name.clone(), *version as i32))
            .unzip()
    }

    /// The definition started by messages on (unprefixed) trigger topic `topic`.
    pub fn for_trigger_topic(&self, topic: &str) -> Option<&Arc<SagaDefinition>> {
        self.latest.values().find(|d| d.trigger_topic() == topic)
    }
}
