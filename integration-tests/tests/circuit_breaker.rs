//! The circuit breaker of a participant: a coupons service that does not answer opens its
//! breaker (seen in `/v1/stats` and the `saga_breaker_state` gauge); while it is open, a new
//! saga waits at that step with its command held back, without using up attempts; when the
//! service comes back a probe closes the breaker and every saga completes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use integration_tests::checkout::CheckoutWorld;
use integration_tests::eventually;
use saga_admin::AdminSettings;
use saga_core::SagaStatus;
use saga_engine::breaker::BreakerSettings;
use sagas::domains::Domain;
use serde_json::Value;
use uuid::Uuid;

/// The coupons breaker's state in `/v1/stats`.
async fn stats_state(api: &str) -> String {
    let stats: Value = reqwest::get(format!("{api}/v1/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["participant"] == "coupons")
        .map(|b| b["state"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The `saga_breaker_state{participant="coupons"}` sample in `/metrics`.
async fn gauge(api: &str) -> Option<f64> {
    let text = reqwest::get(format!("{api}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("saga_breaker_state{") && l.contains("participant=\"coupons\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Of a saga's `redeem_coupon`: (`CommandDeferred` events, attempts among them,
/// `CommandSent` events, highest attempt sent or deferred). Only a command really sent (a
/// probe, here) can time out and so move the attempt on.
async fn coupon_step(world: &CheckoutWorld, saga_id: Uuid) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE event_type = 'CommandDeferred'),
                count(DISTINCT data->>'attempt') FILTER (WHERE event_type = 'CommandDeferred'),
                count(*) FILTER (WHERE event_type = 'CommandSent'),
                coalesce(max((data->>'attempt')::int), 0)::int8
         FROM saga_events WHERE saga_id = $1 AND data->>'step' = 'redeem_coupon'
           AND event_type IN ('CommandSent', 'CommandDeferred')",
    )
    .bind(saga_id)
    .fetch_one(&world.engine_pool)
    .await
    .unwrap()
}

/// When the held `redeem_coupon` of a saga was last held back (its deferral timer armed).
async fn held_since(world: &CheckoutWorld, saga_id: Uuid) -> Option<DateTime<Utc>> {
    sqlx::query_scalar(
        "SELECT armed_at FROM timers
         WHERE saga_id = $1 AND step = 'redeem_coupon' AND kind = 'deferred'",
    )
    .bind(saga_id)
    .fetch_optional(&world.engine_pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_participant_that_keeps_timing_out_opens_its_breaker_and_sagas_wait_for_it() {
    let mut world = CheckoutWorld::new(true).await;
    world.settings.checkout.step_timeout = Duration::from_secs(1);
    // Plenty of attempts: the probes' timeouts must not end the sagas during the test.
    world.settings.checkout.forward_attempts = 100;
    world.settings.engine.breaker = BreakerSettings {
        enabled: true,
        failure_threshold: 2,
        window: Duration::from_secs(60),
        cool_down: Duration::from_secs(2),
        recheck: Duration::from_millis(300),
    };
    world.start_participant(Domain::Balance).await;
    world.start_participant(Domain::Points).await;
    world.start_engine().await;
    let api = world.serve_admin(AdminSettings::default()).await;
    assert_eq!(stats_state(&api).await, "closed");

    // The coupons service is down: the first saga's redeem times out until the breaker
    // opens.
    let first = world.request(100, 1, "WELCOME");
    world.trigger(&first).await;
    let first_id = world.saga_id(&first);
    eventually("the coupons breaker to open", || async {
        (stats_state(&api).await == "open").then_some(())
    })
    .await;
    eventually("the gauge to say open (2)", || async {
        (gauge(&api).await == Some(2.0)).then_some(())
    })
    .await;

    // A new saga while the breaker is open or probing: its redeem is held back, asks
    // again whenever the breaker might let it through and is held again, without using up
    // attempts and without a new event each time.
    let second = world.request(200, 2, "SPRING");
    world.trigger(&second).await;
    let second_id = world.saga_id(&second);
    let holds = std::cell::RefCell::new(Vec::new());
    eventually("the second saga's redeem held back three times", || async {
        let at = held_since(&world, second_id).await;
        let mut holds = holds.borrow_mut();
        if at.is_some() && holds.last() != at.as_ref() {
            holds.extend(at);
        }
        (holds.len() >= 3).then_some(())
    })
    .await;
    let (deferred, deferred_attempts, sent, attempt) = coupon_step(&world, second_id).await;
    assert!(deferred >= 1, "the history says the command waits");
    assert_eq!(
        deferred,
        deferred_attempts,
        "held back {} times, yet {deferred} CommandDeferred events for {deferred_attempts} \
         attempts: each attempt's deferral is recorded once",
        holds.borrow().len()
    );
    assert!(
        attempt <= sent + 1,
        "deferred {deferred} times and sent {sent} times, yet at attempt {attempt}: \
         waiting used up attempts"
    );
    for saga in [first_id, second_id] {
        let status: String = sqlx::query_scalar("SELECT status FROM sagas WHERE id = $1")
            .bind(saga)
            .fetch_one(&world.engine_pool)
            .await
            .unwrap();
        assert_eq!(status, "running", "nothing fails because of the breaker");
    }
    assert!(world.coupon_holder("SPRING").await.is_none());

    // The service comes back: a probe gets through, the breaker closes, both complete.
    world.start_participant(Domain::Coupons).await;
    world.wait_for_status(first_id, SagaStatus::Completed).await;
    world
        .wait_for_status(second_id, SagaStatus::Completed)
        .await;
    // Sagas that ended on answers to commands sent before the breaker opened leave it as
    // it was; the next command to coupons is its probe (an expired coupon: answered, refused).
    let third = world.request(100, 0, "OLD");
    let third_id = world.saga_id(&third);
    world.trigger(&third).await;
    world
        .wait_for_status(third_id, SagaStatus::Compensated)
        .await;
    eventually("the coupons breaker to close", || async {
        (stats_state(&api).await == "closed").then_some(())
    })
    .await;
    assert_eq!(gauge(&api).await, Some(0.0));
    assert_eq!(world.coupon_holder("SPRING").await, Some(second.order_id));
    assert_eq!(world.coupon_holder("WELCOME").await, Some(first.order_id));
    world.shutdown().await;
}
