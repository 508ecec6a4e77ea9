//! A database that is there but cannot write for a while (read-only after a failover,
//! connections killed by an administrator) holds messages back; it never dead-letters them.
//! Its own test binary: it reads a process-wide retry counter.

use integration_tests::checkout::CheckoutWorld;
use integration_tests::eventually;
use saga_core::SagaStatus;
use sqlx::PgPool;

/// Sets or resets read-only for new sessions of the world's database, and ends the current
/// ones so every pool reconnects under the new setting.
async fn read_only(pool: &PgPool, on: bool) {
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    let setting = if on { "on" } else { "off" };
    sqlx::query(&format!(
        "ALTER DATABASE \"{database}\" SET default_transaction_read_only = {setting}"
    ))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// Retries of the engine's trigger consumer so far.
fn trigger_retries() -> f64 {
    let text = saga_admin::metrics::handle().render();
    text.lines()
        .filter(|line| line.starts_with("saga_consumer_retries_total{consumer=\"triggers\"}"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_read_only_database_holds_the_trigger_until_it_can_write() {
    saga_admin::metrics::handle();
    let world = CheckoutWorld::running(true).await;
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(world.settings.database_url.expose())
        .await
        .unwrap();
    read_only(&admin, true).await;
    let request = world.request(500, 0, "WELCOME");
    let saga_id = world.saga_id(&request);
    world.trigger(&request).await;
    eventually("the trigger to be retried", || async {
        (trigger_retries() >= 3.0).then_some(())
    })
    .await;

    read_only(&admin, false).await;
    world.wait_for_status(saga_id, SagaStatus::Completed).await;
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&world.engine_pool)
        .await
        .unwrap();
    assert_eq!(dead, 0);
    assert_eq!(world.dead_lettered(), 0);
    world.shutdown().await;
}
