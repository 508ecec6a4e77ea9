//! `/healthz` (the process answers) and `/readyz` (it can do its work).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rdkafka::producer::Producer;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::server::AdminState;
use crate::store;

/// How long one readiness check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The process is alive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alive {
    /// Always `ok`.
    pub status: String,
}

/// One readiness check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Check {
    /// `database`, `migrations`, `broker` or `engine`.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// Whether the engine can do its work, and what stops it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// All checks passed.
    pub ready: bool,
    /// Each check.
    pub checks: Vec<Check>,
}

/// Liveness: answers while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = Alive)))]
pub async fn live() -> Json<Alive> {
    Json(Alive {
        status: "ok".into(),
    })
}

/// Readiness: the database answers and is migrated, the broker answers, and the engine's
/// consumers (with partitions assigned), outbox relay and timer poller run.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready; the failing checks say why", body = Readiness),
    ))]
pub async fn ready(State(state): State<AdminState>) -> (StatusCode, Json<Readiness>) {
    let (database, migrations) = database_checks(&state).await;
    let mut checks = vec![database, migrations, broker_check(&state).await];
    if let Some(health) = &state.health {
        checks.push(engine_check(health));
    }
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Readiness { ready, checks }))
}

fn check(name: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok,
        detail: detail.into(),
    }
}

async fn database_checks(state: &AdminState) -> (Check, Check) {
    let answers = tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(&state.pool));
    match answers.await {
        Err(_) => {
            return (
                check("database", false, "no answer within 2 s"),
                check("migrations", false, "unknown: the database did not answer"),
            )
        }
        Ok(Err(error)) => {
            return (
                check("database", false, format!("no connection: {error}")),
                check("migrations", false, "unknown: the database did not answer"),
            )
        }
        Ok(Ok(_)) => {}
    }
    let database = check("database", true, "answers");
    let expected = state.migrations as i64;
    let migrations = match store::applied_migrations(&state.pool).await {
        Err(error) => check(
            "migrations",
            false,
            format!("not migrated ({error}); run `sagas migrate`"),
        ),
        Ok((_, true)) => check("migrations", false, "a migration failed part-way"),
        Ok((applied, false)) if applied < expected => check(
            "migrations",
            false,
            format!("{applied} of {expected} applied; run `sagas migrate`"),
        ),
        Ok((applied, false)) => check("migrations", true, format!("{applied} applied")),
    };
    (database, migrations)
}

async fn broker_check(state: &AdminState) -> Check {
    let producer = state.producer.clone();
    let brokers = state.brokers.clone();
    let metadata = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(None, CHECK_TIMEOUT)
            .map(|m| m.brokers().len())
    })
    .await;
    match metadata {
        Ok(Ok(count)) => check("broker", true, format!("{count} broker(s) at {brokers}")),
        Ok(Err(error)) => check(
            "broker",
            false,
            format!("no metadata from {brokers}: {error}"),
        ),
        Err(error) => check("broker", false, format!("metadata task failed: {error}")),
    }
}

fn engine_check(health: &saga_plumbing::health::Health) -> Check {
    let parts = health.parts();
    let problems: Vec<String> = parts.iter().filter_map(|p| p.problem()).collect();
    if parts.is_empty() {
        return check("engine", false, "not started yet");
    }
    if problems.is_empty() {
        let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
        check("engine", true, format!("running: {}", names.join(", ")))
    } else {
        check("engine", false, problems.join("; "))
    }
}
