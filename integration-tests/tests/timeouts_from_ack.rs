//! A reply timeout starts when the broker acknowledges the command, on the database's
//! clock: a command that waited in the outbox (relay lag, broker outage) is not timed out
//! the moment it finally goes out.

use std::time::Duration;

use integration_tests::checkout::CheckoutWorld;
use integration_tests::eventually;
use saga_admin::AdminSettings;
use saga_core::{SagaInput, SagaStatus};
use sagas::checkout::NAME;
use sagas::domains::Domain;
use uuid::Uuid;

/// (timers, timers with a `fire_at`, timers waiting for their command's acknowledgement)
async fn timers(world: &CheckoutWorld, saga_id: Uuid) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(fire_at), count(*) FILTER (WHERE wait = interval '5 s')
         FROM timers WHERE saga_id = $1 AND kind = 'timeout'",
    )
    .bind(saga_id)
    .fetch_one(&world.engine_pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_command_that_waited_in_the_outbox_gets_its_whole_timeout() {
    let mut world = CheckoutWorld::new(true).await;
    world.settings.checkout.step_timeout = Duration::from_secs(5);
    // The saga starts while no relay runs: its commands wait in the outbox.
    let state = world.admin_state(&AdminSettings::default());
    let definition = state.registry.latest(NAME).unwrap().clone();
    let request = world.request(500, 0, "WELCOME");
    let trigger = definition
        .accept_trigger(&serde_json::to_value(&request).unwrap())
        .unwrap();
    let start = SagaInput::Start {
        input: trigger.input,
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
    };
    state
        .transitions
        .apply(None, trigger.saga_id, &start, Some(&definition))
        .await
        .unwrap();
    let saga_id = trigger.saga_id;
    let (count, started, waiting) = timers(&world, saga_id).await;
    assert!(count > 0);
    assert_eq!((started, waiting), (0, count));

    // Three timeouts' worth of lag.
    eventually("the lag to pass", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT now() > max(armed_at) + interval '15 s' FROM timers WHERE saga_id = $1",
        )
        .bind(saga_id)
        .fetch_one(&world.engine_pool)
        .await
        .unwrap()
        .then_some(())
    })
    .await;

    world.start_engine().await;
    eventually("every command to be acknowledged", || async {
        let (count, started, _) = timers(&world, saga_id).await;
        (started == count).then_some(())
    })
    .await;
    // Each timeout runs from its acknowledgement, in full.
    let from_ack: bool = sqlx::query_scalar(
        "SELECT bool_and(fire_at - armed_at BETWEEN interval '4.99 s' AND interval '5.01 s' AND fire_at > now())
         FROM timers WHERE saga_id = $1 AND kind = 'timeout'",
    )
    .bind(saga_id)
    .fetch_one(&world.engine_pool)
    .await
    .unwrap();
    let rows: Vec<(String, Option<String>, String, bool)> = sqlx::query_as(
        "SELECT step, (fire_at - armed_at)::text, armed_at::text, fire_at > now()
         FROM timers WHERE saga_id = $1",
    )
    .bind(saga_id)
    .fetch_all(&world.engine_pool)
    .await
    .unwrap();
    assert!(from_ack, "{rows:?}");

    for domain in Domain::ALL {
        world.start_participant(domain).await;
    }
    world.wait_for_status(saga_id, SagaStatus::Completed).await;
    let resent: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM saga_events
         WHERE saga_id = $1 AND event_type = 'CommandSent' AND (data->>'attempt')::int > 1",
    )
    .bind(saga_id)
    .fetch_one(&world.engine_pool)
    .await
    .unwrap();
    assert_eq!(resent, 0, "no command was timed out");
    world.shutdown().await;
}
