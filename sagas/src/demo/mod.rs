//! `sagas demo`: the checkout scenario end to end, with its invariants checked.
//!
//! Seeds accounts, points and coupons, starts the engine and the three domain services in
//! this process, publishes the workload's triggers (some twice), waits until every saga has
//! ended, checks the invariants against the tables and reports.

mod report;
pub mod verify;
mod workload;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use rdkafka::producer::FutureRecord;
use saga_core::SagaStatus;
use saga_plumbing::db;
use schemas::{Envelope, MessageKind};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use report::{quantile, Report, Tally};
pub use workload::{generate, Kind, Request, Workload};

use saga_admin::{AdminServer, AdminState};

use crate::checkout::{self, TRIGGER_TOPIC};
use crate::domains::{balance, coupons, points, Domain};
use crate::services::Deployment;

/// Runs the demo as `deployment.settings().demo` says and returns its report (the caller
/// prints it and sets the exit code).
pub async fn run(deployment: &Deployment) -> anyhow::Result<Report> {
    execute(deployment, None::<(CancellationToken, fn(&Report, &str))>).await
}

/// Runs the demo, then keeps the engine, the services and the admin API (with its
/// dashboard) up until `until`: `announce` gets the report and the admin URL first.
pub async fn run_and_serve(
    deployment: &Deployment,
    until: CancellationToken,
    announce: impl FnOnce(&Report, &str),
) -> anyhow::Result<Report> {
    execute(deployment, Some((until, announce))).await
}

async fn execute(
    deployment: &Deployment,
    serve: Option<(CancellationToken, impl FnOnce(&Report, &str))>,
) -> anyhow::Result<Report> {
    let options = &deployment.settings().demo;
    deployment.migrate().await.context("migrating")?;
    let workload = generate(options.requests, options.users);
    let settings = deployment.settings();
    let engine_db = settings
        .connections()
        .db(&settings.engine.schema, &settings.engine.pool);
    let engine_pool = db::connect(&engine_db).await?;
    reset_engine(&engine_pool).await?;

    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut pools = HashMap::new();
    let mut dead_letters = Vec::new();
    for domain in Domain::ALL {
        let running = deployment
            .start_participant(domain, shutdown.clone())
            .await?;
        pools.insert(domain, running.pool);
        tasks.extend(running.tasks);
        dead_letters.push(running.dead_letters);
    }
    seed(&pools, &workload).await.context("seeding")?;
    let engine = deployment.engine().await.context("starting the engine")?;
    dead_letters.push(engine.dead_letters());
    let admin = match &serve {
        Some(_) => {
            let state = AdminState::for_engine(&engine, &settings.admin)?;
            Some(AdminServer::bind(&settings.admin, state).await?)
        }
        None => None,
    };
    let definition = deployment.checkout()?;
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
    let mut violations = verify::violations(&pools_view, &workload, &saga_of_order).await?;
    let history = saga_engine::history::verify(&engine_pool).await?;
    violations.extend(history.differences.iter().map(|d| {
        format!(
            "saga {}: stored state is not the fold of its events: {}",
            d.saga_id,
            d.what.join("; ")
        )
    }));
    let mut rows: Vec<(Kind, Tally)> = Kind::ALL.iter().map(|k| (*k, Tally::default())).collect();
    let mut latencies = Vec::new();
    let mut last_end = started;
    for request in &workload.requests {
        let saga = sagas.get(&saga_of_order[&request.body.order_id]);
        let status = saga.map(|s| s.status);
        if let Some((_, tally)) = rows.iter_mut().find(|(k, _)| *k == request.kind) {
            tally.add(status);
        }
        if let (Some(saga), Some(sent)) = (saga, published.get(&request.body.order_id)) {
            if status.is_some_and(ended) {
                latencies.push((saga.updated_at - *sent).to_std().unwrap_or_default());
                last_end = last_end.max(saga.updated_at);
            }
        }
    }
    let report = Report {
        rows,
        duplicates: workload.requests.iter().filter(|r| r.duplicated).count(),
        dead_lettered: dead_letters.iter().map(|d| d.count()).sum(),
        violations,
        latencies,
        elapsed: (last_end - started).to_std().unwrap_or_default(),
    };
    if let (Some((until, announce)), Some(server)) = (serve, admin) {
        let url = format!("http://{}", server.local_addr());
        announce(&report, &url);
        let stop = until.clone();
        let admin_task = tokio::spawn(server.serve(stop));
        until.cancelled().await;
        admin_task.await?.context("admin API")?;
    }
    shutdown.cancel();
    engine_task.await?.context("engine")?;
    for task in tasks {
        task.await?;
    }

    Ok(report)
}

/// Coupons `HAND-1` … `HAND-10` are seeded for checkouts started by hand.
pub const HAND_COUPONS: usize = 10;

/// Empties the engine's tables so the run's counts are its own.
async fn reset_engine(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query(
        "TRUNCATE sagas, saga_events, inbox, outbox, timers, dead_letter_actions, dead_letters",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Empties the domains' kit tables and seeds accounts, points and coupons for `workload`.
pub(crate) async fn seed(
    pools: &HashMap<Domain, PgPool>,
    workload: &Workload,
) -> anyhow::Result<()> {
    for pool in pools.values() {
        sqlx::query("TRUNCATE barrier, outbox, dead_letter_actions, dead_letters")
            .execute(pool)
            .await?;
    }
    sqlx::query("TRUNCATE accounts")
        .execute(&pools[&Domain::Balance])
        .await?;
    sqlx::query("TRUNCATE points")
        .execute(&pools[&Domain::Points])
        .await?;
    let coupons_pool = &pools[&Domain::Coupons];
    sqlx::query("TRUNCATE coupons")
        .execute(coupons_pool)
        .await?;
    seed_workload(pools, workload).await?;
    // Spare coupons no request uses, for checkouts started by hand (`sagas admin start`).
    let valid_until = Utc::now() + chrono::Duration::days(30);
    let spare: Vec<String> = (1..=HAND_COUPONS).map(|i| format!("HAND-{i}")).collect();
    let spare: Vec<(&str, chrono::DateTime<Utc>)> =
        spare.iter().map(|c| (c.as_str(), valid_until)).collect();
    coupons::seed_coupons(coupons_pool, &spare).await?;
    Ok(())
}

/// Adds the accounts, points and coupons of `workload` to what the domain tables hold; its
/// used coupons are marked used by an order outside the run.
pub(crate) async fn seed_workload(
    pools: &HashMap<Domain, PgPool>,
    workload: &Workload,
) -> anyhow::Result<()> {
    let accounts: Vec<(i64, i64)> = workload.balances.iter().map(|(u, c)| (*u, *c)).collect();
    balance::seed_accounts(&pools[&Domain::Balance], &accounts).await?;
    let balances: Vec<(i64, i64)> = workload.points.iter().map(|(u, p)| (*u, *p)).collect();
    points::seed_points(&pools[&Domain::Points], &balances).await?;

    let valid_until = Utc::now() + chrono::Duration::days(30);
    let expired_at = Utc::now() - chrono::Duration::days(1);
    let valid = workload.valid_coupons.iter().chain(&workload.used_coupons);
    let mut all: Vec<(&str, chrono::DateTime<Utc>)> =
        valid.map(|c| (c.as_str(), valid_until)).collect();
    all.extend(
        workload
            .expired_coupons
            .iter()
            .map(|c| (c.as_str(), expired_at)),
    );
    let coupons_pool = &pools[&Domain::Coupons];
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

/// Whether a saga in `status` is done as far as the demo is concerned: ended, or parked
/// for an operator.
fn ended(status: SagaStatus) -> bool {
    status.is_terminal() || status == SagaStatus::Parked
}

/// Polls until `expected` checkout sagas have ended (or parked), or the deadline passes.
async fn wait_until_ended(pool: &PgPool, expected: usize, deadline: Duration) -> sqlx::Result<()> {
    let until = tokio::time::Instant::now() + deadline;
    let done: Vec<&str> = SagaStatus::all()
        .filter(|s| ended(*s))
        .map(SagaStatus::as_str)
        .collect();
    while tokio::time::Instant::now() < until {
        let (ended,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM sagas WHERE definition = $1 AND status = ANY($2)")
                .bind(checkout::NAME)
                .bind(&done)
                .fetch_one(pool)
                .await?;
        if ended as usize >= expected {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
