//! `sagas demo`: the checkout scenario end to end, with its invariants checked.
//!
//! Seeds accounts, points and coupons, starts the engine and the three domain services in
//! this process, publishes the workload's triggers (some twice), waits until every saga has
//! ended, checks the invariants against the tables and reports.

mod report;
mod verify;
mod workload;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use rdkafka::producer::FutureRecord;
use saga_engine::db::{self, DbSettings};
use saga_schemas::{Envelope, MessageKind};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use report::{quantile, Report, Tally};
pub use workload::{generate, Kind, Request, Workload};

use crate::checkout::{self, TRIGGER_TOPIC};
use crate::domains::{balance, coupons, points, Domain};
use crate::services::Deployment;

/// How big a run is.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Checkout requests (distinct orders).
    pub requests: usize,
    /// Users they are spread over.
    pub users: usize,
    /// How long to wait for every saga to end.
    pub deadline: Duration,
}

/// Runs the demo and returns its report (the caller prints it and sets the exit code).
pub async fn run(deployment: &Deployment, options: &DemoOptions) -> anyhow::Result<Report> {
    deployment.migrate().await.context("migrating")?;
    let workload = generate(options.requests, options.users);
    let engine_pool =
        db::connect(&DbSettings::new(deployment.database_url.clone(), "engine")).await?;
    reset_engine(&engine_pool).await?;

    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut pools = HashMap::new();
    for domain in Domain::ALL {
        let (pool, handles) = deployment
            .start_participant(domain, shutdown.clone())
            .await?;
        pools.insert(domain, pool);
        tasks.extend(handles);
    }
    seed(&pools, &workload).await.context("seeding")?;
    let engine = deployment.engine().await.context("starting the engine")?;
    let definition = checkout::checkout(deployment.parallel);
    let engine_shutdown = shutdown.clone();
    let engine_task = tokio::spawn(engine.run(engine_shutdown));

    let started = Utc::now();
    let published = publish(deployment, &workload)
        .await
        .context("publishing triggers")?;
    let saga_of_order: HashMap<Uuid, Uuid> = workload
        .requests
        .iter()
        .map(|r| {
            (
                r.body.order_id,
                definition.saga_id(&r.body.order_id.to_string()),
            )
        })
        .collect();
    wait_until_ended(&engine_pool, workload.requests.len(), options.deadline).await?;

    let sagas = verify::sagas(&engine_pool).await?;
    let pools_view = verify::Pools {
        engine: &engine_pool,
        balance: &pools[&Domain::Balance],
        points: &pools[&Domain::Points],
        coupons: &pools[&Domain::Coupons],
    };
    let violations = verify::violations(&pools_view, &workload, &saga_of_order).await?;
    shutdown.cancel();
    engine_task.await?.context("engine")?;
    for task in tasks {
        task.await?;
    }

    let mut rows: Vec<(Kind, Tally)> = Kind::ALL.iter().map(|k| (*k, Tally::default())).collect();
    let mut latencies = Vec::new();
    let mut last_end = started;
    for request in &workload.requests {
        let saga = sagas.get(&saga_of_order[&request.body.order_id]);
        let status = saga.map_or("missing", |s| s.status.as_str());
        if let Some((_, tally)) = rows.iter_mut().find(|(k, _)| *k == request.kind) {
            tally.add(status);
        }
        if let (Some(saga), Some(sent)) = (saga, published.get(&request.body.order_id)) {
            if matches!(status, "completed" | "compensated" | "parked") {
                latencies.push((saga.updated_at - *sent).to_std().unwrap_or_default());
                last_end = last_end.max(saga.updated_at);
            }
        }
    }
    Ok(Report {
        rows,
        duplicates: workload.requests.iter().filter(|r| r.duplicated).count(),
        dead_lettered: saga_engine::dlq::dead_lettered(),
        violations,
        latencies,
        elapsed: (last_end - started).to_std().unwrap_or_default(),
    })
}

/// Empties the engine's tables so the run's counts are its own.
async fn reset_engine(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query("TRUNCATE sagas, saga_events, inbox, outbox, timers")
        .execute(pool)
        .await?;
    Ok(())
}

async fn seed(pools: &HashMap<Domain, PgPool>, workload: &Workload) -> anyhow::Result<()> {
    for pool in pools.values() {
        sqlx::query("TRUNCATE barrier, outbox")
            .execute(pool)
            .await?;
    }
    let balance_pool = &pools[&Domain::Balance];
    sqlx::query("TRUNCATE accounts")
        .execute(balance_pool)
        .await?;
    let accounts: Vec<(i64, i64)> = workload.balances.iter().map(|(u, c)| (*u, *c)).collect();
    balance::seed_accounts(balance_pool, &accounts).await?;

    let points_pool = &pools[&Domain::Points];
    sqlx::query("TRUNCATE points").execute(points_pool).await?;
    let balances: Vec<(i64, i64)> = workload.points.iter().map(|(u, p)| (*u, *p)).collect();
    points::seed_points(points_pool, &balances).await?;

    let coupons_pool = &pools[&Domain::Coupons];
    sqlx::query("TRUNCATE coupons")
        .execute(coupons_pool)
        .await?;
    let valid_until = Utc::now() + chrono::Duration::days(30);
    let expired_at = Utc::now() - chrono::Duration::days(1);
    let mut all: Vec<(&str, chrono::DateTime<Utc>)> = Vec::new();
    all.extend(
        workload
            .valid_coupons
            .iter()
            .map(|c| (c.as_str(), valid_until)),
    );
    all.extend(
        workload
            .used_coupons
            .iter()
            .map(|c| (c.as_str(), valid_until)),
    );
    all.extend(
        workload
            .expired_coupons
            .iter()
            .map(|c| (c.as_str(), expired_at)),
    );
    coupons::seed_coupons(coupons_pool, &all).await?;
    sqlx::query("UPDATE coupons SET used_by_order = $1, used_at = now() WHERE code = ANY($2)")
        .bind(Uuid::from_u128(0xdead_beef))
        .bind(&workload.used_coupons)
        .execute(coupons_pool)
        .await?;
    Ok(())
}

/// Publishes every trigger (duplicates twice); returns when each was first sent, by order.
async fn publish(
    deployment: &Deployment,
    workload: &Workload,
) -> anyhow::Result<HashMap<Uuid, chrono::DateTime<Utc>>> {
    let producer = deployment.kafka().producer()?;
    let topic = deployment.topics().trigger(TRIGGER_TOPIC);
    let mut sent_at = HashMap::with_capacity(workload.requests.len());
    let mut deliveries = Vec::new();
    for request in &workload.requests {
        let copies = if request.duplicated { 2 } else { 1 };
        let key = request.body.order_id.to_string();
        sent_at.insert(request.body.order_id, Utc::now());
        for _ in 0..copies {
            let payload = serde_json::to_vec(&Envelope::new(MessageKind::Trigger, &request.body))?;
            let record = FutureRecord::to(&topic).key(&key).payload(&payload);
            let delivery = producer
                .send_result(record)
                .map_err(|(error, _)| anyhow::anyhow!("enqueue trigger: {error}"))?;
            deliveries.push(delivery);
        }
    }
    for delivery in deliveries {
        delivery
            .await
            .context("producer dropped")?
            .map_err(|(error, _)| anyhow::anyhow!("publish trigger: {error}"))?;
    }
    Ok(sent_at)
}

/// Polls until `expected` checkout sagas have ended (or parked), or the deadline passes.
async fn wait_until_ended(pool: &PgPool, expected: usize, deadline: Duration) -> sqlx::Result<()> {
    let until = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < until {
        let (ended,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM sagas
             WHERE definition = $1 AND status IN ('completed', 'compensated', 'parked')",
        )
        .bind(checkout::NAME)
        .fetch_one(pool)
        .await?;
        if ended as usize >= expected {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
