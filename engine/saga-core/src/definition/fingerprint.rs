//! A definition's fingerprint: a digest of what gives a stored saga history its meaning.
//!
//! A saga's state keeps one progress record per step, matched to the definition's steps by
//! position, and its events name steps and phases; a binary that reads a stored history
//! with other steps under the same name and version misreads it. The fingerprint covers
//! each step, in order: its name, kind, participant and phases. It leaves out what can
//! change safely under one version: the mode (sequential or parallel: the per-step
//! progress reads the same either way, only what is sent next differs), timeouts, retry
//! policies, the trigger topic, and the bodies the step functions build (code, which no
//! digest can see).

use serde_json::{json, Value};

use super::SagaDefinition;
use crate::digest;

impl SagaDefinition {
    /// SHA-256 hex over the steps (names, kinds, participants, phases, order); equal for
    /// two builds of the same definition, different when any of those changed.
    pub fn fingerprint(&self) -> String {
        digest::sha256_hex(&digest::canonical_json(&self.shape()))
    }

    /// What the fingerprint covers, as JSON.
    fn shape(&self) -> Value {
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|step| {
                let mut phases = vec![step.forward_phase().as_str()];
                if step.kind == super::StepKind::Tcc {
                    phases.push(schemas::Phase::Confirm.as_str());
                }
                phases.push(step.undo_phase().as_str());
                json!({
                    "name": step.name,
                    "kind": step.kind.as_str(),
                    "participant": step.participant,
                    "phases": phases,
                })
            })
            .collect();
        json!({ "format": 1, "steps": steps })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::Deserialize;
    use serde_json::json;

    use crate::{Definition, RetryPolicy, SagaDefinition};

    #[derive(Deserialize)]
    struct Order {
        id: String,
    }

    /// The reference shape: a TCC step and a compensable step, sequential.
    fn base() -> Definition<Order, super::super::Trigger, super::super::Steps> {
        Definition::<Order>::new("order", 1)
            .trigger("order.requested", |o| o.id.clone())
            .tcc("funds", "wallet", |_| json!({}))
            .step("points", "loyalty", |_| json!({}), |_| json!({}))
    }

    fn fingerprint(definition: Result<SagaDefinition, crate::DefinitionError>) -> String {
        definition.unwrap().fingerprint()
    }

    #[test]
    fn stable_across_builds_and_safe_changes() {
        let reference = fingerprint(base().build());
        assert_eq!(reference.len(), 64);
        assert_eq!(reference, fingerprint(base().build()));
        let tuned = base()
            .with_timeout(Duration::from_secs(99))
            .timeout(Duration::from_secs(3))
            .retry(RetryPolicy::exponential(
                Duration::from_millis(1),
                Duration::from_secs(1),
            ))
            .build();
        assert_eq!(
            reference,
            fingerprint(tuned),
            "timeouts and retries are safe"
        );
        let parallel = base().parallel().build();
        assert_eq!(reference, fingerprint(parallel), "the mode is safe");
        let other_topic = Definition::<Order>::new("order", 1)
            .trigger("orders.v2", |o| o.id.clone())
            .tcc("funds", "wallet", |_| json!({"changed": true}))
            .step("points", "loyalty", |_| json!({}), |_| json!({}))
            .build();
        assert_eq!(
            reference,
            fingerprint(other_topic),
            "topic and bodies are safe"
        );
        let next_version = Definition::<Order>::new("order", 2)
            .trigger("order.requested", |o| o.id.clone())
            .tcc("funds", "wallet", |_| json!({}))
            .step("points", "loyalty", |_| json!({}), |_| json!({}))
            .build();
        assert_eq!(
            reference,
            fingerprint(next_version),
            "the key is not hashed"
        );
    }

    #[test]
    fn changes_with_every_part_of_the_steps() {
        let reference = fingerprint(base().build());
        let new = |f: fn() -> Result<SagaDefinition, crate::DefinitionError>| fingerprint(f());
        let changed = [
            (
                "a step added",
                new(|| base().tcc("extra", "wallet", |_| json!({})).build()),
            ),
            (
                "steps reordered",
                new(|| {
                    Definition::<Order>::new("order", 1)
                        .trigger("order.requested", |o| o.id.clone())
                        .step("points", "loyalty", |_| json!({}), |_| json!({}))
                        .tcc("funds", "wallet", |_| json!({}))
                        .build()
                }),
            ),
            (
                "a step renamed",
                new(|| {
                    Definition::<Order>::new("order", 1)
                        .trigger("order.requested", |o| o.id.clone())
                        .tcc("reserve", "wallet", |_| json!({}))
                        .step("points", "loyalty", |_| json!({}), |_| json!({}))
                        .build()
                }),
            ),
            (
                "another participant",
                new(|| {
                    Definition::<Order>::new("order", 1)
                        .trigger("order.requested", |o| o.id.clone())
                        .tcc("funds", "bank", |_| json!({}))
                        .step("points", "loyalty", |_| json!({}), |_| json!({}))
                        .build()
                }),
            ),
            (
                "another kind",
                new(|| {
                    Definition::<Order>::new("order", 1)
                        .trigger("order.requested", |o| o.id.clone())
                        .step("funds", "wallet", |_| json!({}), |_| json!({}))
                        .step("points", "loyalty", |_| json!({}), |_| json!({}))
                        .build()
                }),
            ),
        ];
        for (what, fingerprint) in changed {
            assert_ne!(reference, fingerprint, "{what} must change the fingerprint");
        }
    }
}
