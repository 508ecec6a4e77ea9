//! Definition versions across deploys: the fingerprint stored per version (a binary whose
//! steps changed without a version bump does not start), and the versions that still have
//! sagas in flight (a process lacking one of them is not ready).
//!
//! During a rolling deploy old and new binaries run side by side; each must keep every
//! version that still has sagas in flight. A process that lacks one keeps running (its
//! consumers retry such sagas' messages, never dropping them, and its timer poller leaves
//! their timers alone) but reports not ready, naming what it lacks, so the deploy halts
//! there. It checks again every `version_check_interval` and becomes ready once no such
//! saga is left.

use std::time::Duration;

use saga_plumbing::health::Health;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::registry::Registry;
use crate::{Error, Result};

/// The health part that blocks readiness while versions are missing.
pub const HEALTH_PART: &str = "definition versions";

/// Stores the fingerprint of every version in `registry` that has none stored yet, and
/// fails when a stored one differs from this binary's: the version's steps changed without
/// a version bump, and the stored histories would be misread.
pub async fn register_fingerprints(pool: &PgPool, registry: &Registry) -> Result<()> {
    let mut definitions: Vec<_> = registry.all_versions().collect();
    definitions.sort_by(|a, b| (a.name(), a.version()).cmp(&(b.name(), b.version())));
    for definition in definitions {
        let (name, version) = (definition.name(), definition.version());
        let ours = definition.fingerprint();
        sqlx::query(
            "INSERT INTO definition_versions (name, version, fingerprint) VALUES ($1, $2, $3)
             ON CONFLICT (name, version) DO NOTHING",
        )
        .bind(name)
        .bind(version as i32)
        .bind(&ours)
        .execute(pool)
        .await?;
        let stored: String = sqlx::query_scalar(
            "SELECT fingerprint FROM definition_versions WHERE name = $1 AND version = $2",
        )
        .bind(name)
        .bind(version as i32)
        .fetch_one(pool)
        .await?;
        if let Some(problem) = fingerprint_problem(name, version, &stored, &ours) {
            return Err(Error::Config(problem));
        }
    }
    Ok(())
}

/// Why a binary with fingerprint `ours` must not run `name@version` stored as `stored`.
pub fn fingerprint_problem(name: &str, version: u32, stored: &str, ours: &str) -> Option<String> {
    (stored != ours).then(|| {
        format!(
            "definition {name}@{version} changed its steps without a version bump \
             (stored fingerprint {stored}, this binary {ours})"
        )
    })
}

/// A definition version with sagas that are not over yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    /// Definition name.
    pub name: String,
    /// Definition version.
    pub version: u32,
    /// Its sagas not in a terminal status (parked ones included: they wait for an operator
    /// acting through a process that knows their version).
    pub sagas: i64,
}

/// Every definition version with sagas in flight (in a status that is not
/// [`saga_core::SagaStatus::is_terminal`]), by name and version.
pub async fn in_flight(pool: &PgPool) -> Result<Vec<InFlight>> {
    let rows: Vec<(String, i32, i64)> = sqlx::query_as(
        "SELECT definition, definition_version, count(*) FROM sagas
         WHERE status <> ALL($1)
         GROUP BY definition, definition_version ORDER BY definition, definition_version",
    )
    .bind(crate::retention::ended_statuses())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, version, sagas)| InFlight {
            name,
            version: version as u32,
            sagas,
        })
        .collect())
}

/// The versions of `in_flight` that `registry` lacks, in the same order.
pub fn missing(registry: &Registry, in_flight: &[InFlight]) -> Vec<InFlight> {
    in_flight
        .iter()
        .filter(|v| registry.get(&v.name, v.version).is_none())
        .cloned()
        .collect()
}

/// The readiness problem of a process lacking `missing` (none when nothing is missing).
pub fn missing_problem(missing: &[InFlight]) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    let listed: Vec<String> = missing
        .iter()
        .map(|v| {
            let plural = if v.sagas == 1 { "" } else { "s" };
            format!("{}@{} ({} saga{plural})", v.name, v.version, v.sagas)
        })
        .collect();
    Some(format!(
        "definition versions with sagas in flight are not registered in this process: {}; \
         their messages wait until a process that registers them runs",
        listed.join(", ")
    ))
}

/// Checks the versions in flight against `registry` and records the outcome in `health`
/// under [`HEALTH_PART`]; logs when the outcome changed from `last`. Returns the problem.
pub async fn check(
    pool: &PgPool,
    registry: &Registry,
    health: &Health,
    last: Option<&str>,
) -> Result<Option<String>> {
    let problem = missing_problem(&missing(registry, &in_flight(pool).await?));
    if problem.as_deref() != last {
        match &problem {
            Some(problem) => error!("not ready: {problem}"),
            None if last.is_some() => info!("every definition version in flight is registered"),
            None => {}
        }
    }
    health.set_blocked(HEALTH_PART, problem.clone());
    Ok(problem)
}

/// Checks again every `interval` until `shutdown`, starting from `last` (the outcome of
/// the start-up check). A failed check keeps the previous outcome.
pub async fn watch(
    pool: PgPool,
    registry: Registry,
    health: Health,
    interval: Duration,
    mut last: Option<String>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        match check(&pool, &registry, &health, last.as_deref()).await {
            Ok(problem) => last = problem,
            Err(error) => warn!(%error, "checking the definition versions in flight failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use saga_core::Definition;
    use serde_json::json;

    use super::*;

    #[derive(serde::Deserialize)]
    struct Order {
        id: String,
    }

    fn order(version: u32) -> saga_core::SagaDefinition {
        Definition::<Order>::new("order", version)
            .trigger("order.requested", |o| o.id.clone())
            .tcc("funds", "wallet", |_| json!({}))
            .build()
            .unwrap()
    }

    fn flight(name: &str, version: u32, sagas: i64) -> InFlight {
        InFlight {
            name: name.into(),
            version,
            sagas,
        }
    }

    #[test]
    fn missing_versions_are_named_with_their_saga_counts() {
        let mut registry = Registry::default();
        registry.register(order(2));
        let in_flight = [
            flight("order", 1, 3),
            flight("order", 2, 5),
            flight("refund", 1, 1),
        ];
        let missing = missing(&registry, &in_flight);
        assert_eq!(missing, [flight("order", 1, 3), flight("refund", 1, 1)]);
        let problem = missing_problem(&missing).unwrap();
        assert!(
            problem.contains("order@1 (3 sagas), refund@1 (1 saga)"),
            "{problem}"
        );
        registry.register(order(1));
        assert_eq!(
            super::missing(&registry, &in_flight),
            [flight("refund", 1, 1)]
        );
        assert_eq!(missing_problem(&[]), None);
    }

    #[test]
    fn a_changed_fingerprint_is_named() {
        assert_eq!(fingerprint_problem("checkout", 1, "ab", "ab"), None);
        assert_eq!(
            fingerprint_problem("checkout", 1, "ab", "cd").unwrap(),
            "definition checkout@1 changed its steps without a version bump \
             (stored fingerprint ab, this binary cd)"
        );
    }
}
