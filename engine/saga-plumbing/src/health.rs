//! What a process's background parts say about themselves, for readiness checks: whether
//! each runs, and for a consumer how many partitions it holds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One background part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartState {
    /// Its name, e.g. `triggers` or `outbox relay`.
    pub name: String,
    /// Whether it runs.
    pub running: bool,
    /// For a consumer: the partitions assigned to it when it last looked.
    pub partitions: Option<usize>,
    /// Why the part keeps the process not ready although it runs (e.g. sagas in flight of
    /// definition versions this process lacks); `None` when nothing blocks it.
    pub blocked: Option<String>,
}

impl PartState {
    /// Why the part cannot do its work; `None` when it can.
    pub fn problem(&self) -> Option<String> {
        if let Some(reason) = &self.blocked {
            return Some(reason.clone());
        }
        match (self.running, self.partitions) {
            (false, _) => Some(format!("{} is not running", self.name)),
            (true, Some(0)) => Some(format!("{} has no partitions assigned (yet)", self.name)),
            _ => None,
        }
    }
}

/// The parts of one process. Clones share the same record.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<BTreeMap<String, PartState>>>);

impl Health {
    fn update(&self, name: &str, change: impl FnOnce(&mut PartState)) {
        let mut parts = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let part = parts.entry(name.to_string()).or_insert_with(|| PartState {
            name: name.to_string(),
            running: false,
            partitions: None,
            blocked: None,
        });
        change(part);
    }

    /// Records that `name` started or stopped.
    pub fn set_running(&self, name: &str, running: bool) {
        self.update(name, |part| part.running = running);
    }

    /// Records that `name` runs but keeps the process not ready for `reason`, or (with
    /// `None`) no longer does.
    pub fn set_blocked(&self, name: &str, reason: Option<String>) {
        self.update(name, |part| {
            part.running = true;
            part.blocked = reason;
        });
    }

    /// Records how many partitions consumer `name` holds.
    pub fn set_partitions(&self, name: &str, partitions: usize) {
        self.update(name, |part| part.partitions = Some(partitions));
    }

    /// Every part, by name.
    pub fn parts(&self) -> Vec<PartState> {
        let parts = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        parts.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_report_what_stops_them() {
        let health = Health::default();
        health.set_running("relay", true);
        health.set_running("triggers", true);
        health.set_partitions("triggers", 0);
        let problems: Vec<_> = health
            .parts()
            .iter()
            .filter_map(PartState::problem)
            .collect();
        assert_eq!(problems, ["triggers has no partitions assigned (yet)"]);
        health.set_partitions("triggers", 3);
        health.clone().set_running("relay", false);
        let problems: Vec<_> = health
            .parts()
            .iter()
            .filter_map(PartState::problem)
            .collect();
        assert_eq!(problems, ["relay is not running"]);
    }

    #[test]
    fn a_blocked_part_names_its_reason_until_unblocked() {
        let health = Health::default();
        health.set_blocked("definitions", Some("order@2 missing".into()));
        let problems: Vec<_> = health
            .parts()
            .iter()
            .filter_map(PartState::problem)
            .collect();
        assert_eq!(problems, ["order@2 missing"]);
        health.set_blocked("definitions", None);
        assert!(health.parts().iter().all(|p| p.problem().is_none()));
    }
}
