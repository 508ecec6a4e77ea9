//! The points participant written in Python from `schemas/PROTOCOL.md` alone
//! (`integration-tests/participants/points-py/`): it passes the conformance kit, and it
//! serves the checkout saga end to end beside the Rust engine and the other two services.
//!
//! Its virtualenv comes from `scripts/python-participant.sh` (run here when
//! `POINTS_PY_PYTHON` does not name one already).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use integration_tests::checkout::{CheckoutWorld, START_CENTS, USER};
use integration_tests::{eventually, fresh_database, services};
use saga_core::SagaStatus;
use saga_plumbing::db::DatabaseUrl;
use saga_plumbing::kafka::KafkaSettings;
use saga_plumbing::topics::Topics;
use sagas::conformance::profile::{Profile, ProfileFlags};
use sagas::conformance::{self, Options};
use sagas::domains::Domain;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use uuid::Uuid;

/// The schema the Python participant keeps its tables in.
const SCHEMA: &str = "points_py";

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The virtualenv's python: `POINTS_PY_PYTHON`, else what the install script prints.
async fn python() -> String {
    if let Ok(python) = std::env::var("POINTS_PY_PYTHON") {
        return python;
    }
    let output = Command::new("bash")
        .arg(repository().join("scripts/python-participant.sh"))
        .stderr(Stdio::inherit())
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "scripts/python-participant.sh failed"
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout.lines().last().unwrap().trim().to_string()
}

/// Starts the Python participant and waits until it owns partitions of its command topic.
async fn start_points_py(database: &str, brokers: &str, prefix: &str) -> Child {
    let script = repository().join("integration-tests/participants/points-py/participant.py");
    // The tests' URLs carry sqlx options (`?statement-cache-capacity=…`) libpq does not know.
    let database = database.split('?').next().unwrap();
    let mut child = Command::new(python().await)
        .arg(script)
        .env("DATABASE_URL", database)
        .env("KAFKA_BROKERS", brokers)
        .env("TOPIC_PREFIX", prefix)
        .env("POINTS_SCHEMA", SCHEMA)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            eprintln!("points-py: {line}");
            if line.contains("assigned partitions [") && !line.contains("assigned partitions []") {
                return;
            }
        }
        panic!("the Python participant exited before consuming");
    })
    .await
    .expect("the Python participant is assigned its partitions");
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("points-py: {line}");
        }
    });
    child
}

async fn seed(pool: &PgPool, user: i64, points: i64) {
    sqlx::query(&format!(
        "INSERT INTO {SCHEMA}.points (user_id, balance) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET balance = EXCLUDED.balance"
    ))
    .bind(user)
    .bind(points)
    .execute(pool)
    .await
    .unwrap();
}

async fn points_of(pool: &PgPool, user: i64) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT balance FROM {SCHEMA}.points WHERE user_id = $1"
    ))
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_python_participant_passes_conformance() {
    let database = fresh_database().await;
    let brokers = services().await.kafka_brokers.clone();
    let prefix = format!("t{}.", Uuid::new_v4().simple());
    let _python = start_points_py(&database, &brokers, &prefix).await;
    let pool = PgPool::connect(&database).await.unwrap();
    seed(&pool, 1, 1_000).await;

    let options = Options {
        profile: Profile::resolve("points", ProfileFlags::default()).unwrap(),
        check_sql: Some(format!(
            "SELECT balance FROM {SCHEMA}.points WHERE user_id = 1"
        )),
        database: Some(DatabaseUrl::new(&database)),
        timeout: Duration::from_secs(15),
        partitions: 6,
    };
    let report = conformance::run(
        &KafkaSettings::new(&brokers),
        &Topics::with_prefix(&prefix),
        &options,
        |result| eprintln!("{}", result.render()),
    )
    .await
    .unwrap();
    let failures: Vec<String> = report
        .results
        .iter()
        .filter(|r| r.failure.is_some())
        .map(|r| r.render())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(
        report.summary(),
        "conformance: participant=points cases=15 passed=15 failed=0"
    );
    // Every case undid what it did.
    assert_eq!(points_of(&pool, 1).await, 1_000);
    let dead_letters: i64 =
        sqlx::query_scalar(&format!("SELECT count(*) FROM {SCHEMA}.dead_letters"))
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        dead_letters, 4,
        "two poison cases, the invalid body, the one before serving"
    );
}

#[tokio::test]
async fn a_checkout_runs_with_the_python_points_service() {
    let mut world = CheckoutWorld::new(true).await;
    let database = world.settings.database_url.expose().to_string();
    let brokers = world.settings.kafka.brokers.clone();
    let prefix = world.settings.topics.prefix.clone();
    let _python = start_points_py(&database, &brokers, &prefix).await;
    let pool = PgPool::connect(&database).await.unwrap();
    seed(&pool, USER, 100).await;
    world.start_participant(Domain::Balance).await;
    world.start_participant(Domain::Coupons).await;
    world.start_engine().await;

    let paid = world.request(2_500, 30, "WELCOME");
    let too_many_points = world.request(1_000, 500, "SPRING");
    let coupon_taken = world.request(1_000, 20, "TAKEN");
    for request in [&paid, &too_many_points, &coupon_taken] {
        world.trigger(request).await;
    }
    world
        .wait_for_status(world.saga_id(&paid), SagaStatus::Completed)
        .await;
    for request in [&too_many_points, &coupon_taken] {
        world
            .wait_for_status(world.saga_id(request), SagaStatus::Compensated)
            .await;
    }

    assert_eq!(points_of(&pool, USER).await, 100 - 30);
    assert_eq!(world.account().await, (START_CENTS - 2_500, 0, 2_500));
    assert_eq!(world.coupon_holder("WELCOME").await, Some(paid.order_id));
    assert_eq!(world.coupon_holder("SPRING").await, None);
    // The Python service's barrier: its answer to each saga, as the protocol says.
    let barrier = |saga: Uuid| {
        let pool = pool.clone();
        async move {
            let rows: Vec<(String, String)> = sqlx::query_as(&format!(
                "SELECT phase, reply->>'outcome' FROM {SCHEMA}.barrier
                 WHERE saga_id = $1 ORDER BY phase"
            ))
            .bind(saga)
            .fetch_all(&pool)
            .await
            .unwrap();
            rows
        }
    };
    let row = |phase: &str, outcome: &str| (phase.to_string(), outcome.to_string());
    assert_eq!(
        barrier(world.saga_id(&paid)).await,
        vec![row("action", "ok")]
    );
    assert_eq!(
        barrier(world.saga_id(&too_many_points)).await,
        vec![row("action", "rejected")]
    );
    // The coupon was refused; the points deducted for it were refunded.
    let refunded = world.saga_id(&coupon_taken);
    eventually(
        "the points of the refused coupon's saga to be refunded",
        || {
            let barrier = barrier(refunded);
            async move {
                let rows = barrier.await;
                (rows == vec![row("action", "ok"), row("compensate", "ok")]).then_some(())
            }
        },
    )
    .await;
    world.shutdown().await;
}
