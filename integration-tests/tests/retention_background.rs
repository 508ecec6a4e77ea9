//! Retention in the background: the engine (as `sagas run` builds it) and the domain
//! services sweep on their own, every `retention.interval`, when the settings say so.

use std::time::Duration;

use integration_tests::checkout::CheckoutWorld;
use integration_tests::eventually;
use saga_core::SagaStatus;
use sagas::domains::Domain;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn count_of(pool: &PgPool, sql: &str, ids: &[Uuid]) -> i64 {
    sqlx::query_scalar(sql)
        .bind(ids)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn execute(pool: &PgPool, sql: &str) {
    sqlx::query(sql).execute(pool).await.unwrap();
}

#[tokio::test]
async fn the_engine_and_the_services_sweep_in_the_background() {
    let mut world = CheckoutWorld::new(true).await;
    world.settings.retention.interval = Duration::from_millis(200);
    for domain in Domain::ALL {
        world.start_participant(domain).await;
    }
    // The engine as `sagas run` builds it, retention included.
    let engine = world.deployment().engine().await.unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(engine.run(shutdown.clone()));
    let request = world.request(1_000, 10, "WELCOME");
    let saga = world.saga_id(&request);
    world.trigger(&request).await;
    world.wait_for_status(saga, SagaStatus::Completed).await;
    let balance = world.pools["balance"].clone();
    let barrier = "SELECT count(*) FROM barrier WHERE saga_id = ANY($1)";
    assert_eq!(count_of(&balance, barrier, &[saga]).await, 2);

    execute(
        &world.engine_pool,
        "UPDATE sagas SET updated_at = now() - interval '31 days'",
    )
    .await;
    execute(
        &balance,
        "UPDATE barrier SET created_at = now() - interval '31 days'",
    )
    .await;
    let engine_pool = world.engine_pool.clone();
    eventually("the aged saga and barrier rows swept", || {
        let (engine_pool, balance) = (&engine_pool, &balance);
        async move {
            let sagas = count(engine_pool, "SELECT count(*) FROM sagas").await;
            let barrier = count_of(balance, barrier, &[saga]).await;
            (sagas == 0 && barrier == 0).then_some(())
        }
    })
    .await;
    shutdown.cancel();
    running.await.unwrap().unwrap();
    world.shutdown().await;
}
