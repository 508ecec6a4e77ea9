//! A timer that cannot fire is put off on its own: the timers behind it still fire.

use std::time::Duration;

use integration_tests::checkout::CheckoutWorld;
use integration_tests::eventually;
use uuid::Uuid;

/// Commands of `saga_id` sent again after a timeout.
async fn resent(world: &CheckoutWorld, saga_id: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM saga_events
         WHERE saga_id = $1 AND event_type = 'CommandSent' AND (data->>'attempt')::int > 1",
    )
    .bind(saga_id)
    .fetch_one(&world.engine_pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_timer_that_fails_does_not_hold_up_the_others() {
    let mut world = CheckoutWorld::new(true).await;
    world.settings.checkout.step_timeout = Duration::from_secs(1);
    world.start_engine().await;
    // No participant runs: every command times out and is sent again.
    let broken = world.request(500, 0, "WELCOME");
    let healthy = world.request(700, 0, "SPRING");
    let (broken_id, healthy_id) = (world.saga_id(&broken), world.saga_id(&healthy));
    world.trigger(&broken).await;
    eventually("the first saga's timers to start", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT count(*) > 0 AND bool_and(fire_at IS NOT NULL) FROM timers WHERE saga_id = $1",
        )
        .bind(broken_id)
        .fetch_one(&world.engine_pool)
        .await
        .unwrap()
        .then_some(())
    })
    .await;
    // Its state can no longer be read, and its timers are due before any other.
    sqlx::query("UPDATE sagas SET state = '\"unreadable\"'::jsonb WHERE id = $1")
        .bind(broken_id)
        .execute(&world.engine_pool)
        .await
        .unwrap();
    sqlx::query("UPDATE timers SET fire_at = now() - interval '1 hour' WHERE saga_id = $1")
        .bind(broken_id)
        .execute(&world.engine_pool)
        .await
        .unwrap();
    world.trigger(&healthy).await;

    eventually("the healthy saga's timeouts to fire", || async {
        (resent(&world, healthy_id).await > 0).then_some(())
    })
    .await;
    let (failures, error): (i32, Option<String>) =
        sqlx::query_as("SELECT max(failures), max(last_error) FROM timers WHERE saga_id = $1")
            .bind(broken_id)
            .fetch_one(&world.engine_pool)
            .await
            .unwrap();
    assert!(failures >= 1, "{failures}");
    assert!(error.unwrap().contains("json"));
    assert_eq!(resent(&world, broken_id).await, 0);
    world.shutdown().await;
}
