//! Checking the invariants of the checkout scenario against the tables after a run.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use saga_core::SagaStatus;
use sqlx::PgPool;
use uuid::Uuid;

use super::workload::Workload;
use crate::checkout;

/// A saga as the demo reads it back.
#[derive(Debug, Clone)]
pub struct SagaOutcome {
    /// Where the saga is.
    pub status: SagaStatus,
    /// Last change (the terminal moment for finished sagas).
    pub updated_at: DateTime<Utc>,
}

/// The checkout sagas of the run, by saga id.
pub async fn sagas(engine: &PgPool) -> sqlx::Result<HashMap<Uuid, SagaOutcome>> {
    let rows: Vec<(Uuid, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT id, status, updated_at FROM sagas WHERE definition = $1")
            .bind(checkout::NAME)
            .fetch_all(engine)
            .await?;
    rows.into_iter()
        .map(|(id, status, updated_at)| {
            let status = SagaStatus::try_from(status).map_err(|e| sqlx::Error::Decode(e.into()))?;
            Ok((id, SagaOutcome { status, updated_at }))
        })
        .collect()
}

/// The pools of the four schemas.
pub struct Pools<'a> {
    /// Engine schema.
    pub engine: &'a PgPool,
    /// Balance schema.
    pub balance: &'a PgPool,
    /// Points schema.
    pub points: &'a PgPool,
    /// Coupons schema.
    pub coupons: &'a PgPool,
}

/// Every invariant violation found; empty when all hold.
pub async fn violations(
    pools: &Pools<'_>,
    workload: &Workload,
    saga_of_order: &HashMap<Uuid, Uuid>,
) -> sqlx::Result<Vec<String>> {
    let mut problems = Vec::new();
    let sagas = sagas(pools.engine).await?;
    if sagas.len() != workload.requests.len() {
        problems.push(format!(
            "{} sagas for {} distinct orders (duplicate triggers must not start sagas)",
            sagas.len(),
            workload.requests.len()
        ));
    }
    let mut spent: BTreeMap<i64, i64> = BTreeMap::new();
    let mut points_used: BTreeMap<i64, i64> = BTreeMap::new();
    let mut completed_orders = HashMap::new();
    for request in &workload.requests {
        let status = sagas
            .get(&saga_of_order[&request.body.order_id])
            .map(|s| s.status);
        if status != Some(request.kind.expected_status()) {
            let ended = status.map_or("missing".to_string(), |s| s.to_string());
            problems.push(format!(
                "order {} ({}) ended {ended}, expected {}",
                request.body.order_id,
                request.kind.label(),
                request.kind.expected_status()
            ));
        }
        if status == Some(SagaStatus::Completed) {
            *spent.entry(request.body.user_id).or_default() += request.body.amount_cents;
            *points_used.entry(request.body.user_id).or_default() += request.body.points;
            completed_orders.insert(request.body.coupon_code.clone(), request.body.order_id);
        }
    }

    let accounts: Vec<(i64, i64, i64, i64)> =
        sqlx::query_as("SELECT user_id, available, frozen, spent FROM accounts")
            .fetch_all(pools.balance)
            .await?;
    for (user, available, frozen, spent_cents) in accounts {
        let seeded = workload.balances.get(&user).copied().unwrap_or_default();
        if available + frozen + spent_cents != seeded {
            problems.push(format!(
                "user {user}: available {available} + frozen {frozen} + spent {spent_cents} != seeded {seeded}"
            ));
        }
        if frozen != 0 {
            problems.push(format!("user {user}: {frozen} cents still frozen"));
        }
        let expected = spent.get(&user).copied().unwrap_or_default();
        if spent_cents != expected {
            problems.push(format!(
                "user {user}: spent {spent_cents}, but completed orders add up to {expected}"
            ));
        }
    }

    let balances: Vec<(i64, i64)> = sqlx::query_as("SELECT user_id, balance FROM points")
        .fetch_all(pools.points)
        .await?;
    for (user, balance) in balances {
        let expected = workload.points.get(&user).copied().unwrap_or_default()
            - points_used.get(&user).copied().unwrap_or_default();
        if balance < 0 || balance != expected {
            problems.push(format!(
                "user {user}: {balance} points, expected {expected}"
            ));
        }
    }

    let coupons: Vec<(String, Option<Uuid>)> =
        sqlx::query_as("SELECT code, used_by_order FROM coupons")
            .fetch_all(pools.coupons)
            .await?;
    for (code, used_by) in coupons {
        if workload.used_coupons.contains(&code) {
            continue; // used before the run by an order outside it
        }
        let expected = completed_orders.get(&code).copied();
        if used_by != expected {
            problems.push(format!(
                "coupon {code}: used by {used_by:?}, expected {expected:?}"
            ));
        }
    }
    Ok(problems)
}
