//! A saga-level deadline: a checkout whose coupons service is down compensates when its
//! deadline passes (not at its step timeout), and the redeem command that reaches the
//! coupons service after the deadline is refused by the kit without touching the coupon.

use std::time::Duration;

use integration_tests::checkout::{CheckoutWorld, START_CENTS, START_POINTS};
use integration_tests::eventually;
use saga_core::SagaStatus;
use sagas::domains::Domain;
use serde_json::Value;
use uuid::Uuid;

/// Seconds from the saga's `Started` event to its first event of type `event_type`.
async fn seconds_to(world: &CheckoutWorld, saga_id: Uuid, event_type: &str) -> Option<f64> {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM e.recorded_at - s.recorded_at)::float8
         FROM saga_events e JOIN saga_events s ON s.saga_id = e.saga_id AND s.seq = 1
         WHERE e.saga_id = $1 AND e.event_type = $2 ORDER BY e.seq LIMIT 1",
    )
    .bind(saga_id)
    .bind(event_type)
    .fetch_optional(&world.engine_pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_saga_compensates_at_its_deadline_and_late_forward_work_is_refused() {
    let mut world = CheckoutWorld::new(false).await;
    world.settings.checkout.deadline = Some(Duration::from_secs(3));
    // Far longer than the deadline: only the deadline can stop the saga in time.
    world.settings.checkout.step_timeout = Duration::from_secs(60);
    world.start_participant(Domain::Balance).await;
    world.start_participant(Domain::Points).await;
    world.start_engine().await;

    let request = world.request(700, 10, "WELCOME");
    world.trigger(&request).await;
    let saga_id = world.saga_id(&request);
    // Funds and points done; the coupon's command waits for a service that is down.
    world
        .wait_for_status(saga_id, SagaStatus::Compensating)
        .await;
    let failure: Option<String> =
        sqlx::query_scalar("SELECT state->>'failure' FROM sagas WHERE id = $1")
            .bind(saga_id)
            .fetch_one(&world.engine_pool)
            .await
            .unwrap();
    assert_eq!(failure.as_deref(), Some("deadline passed"));
    let after = seconds_to(&world, saga_id, "CompensationStarted")
        .await
        .unwrap();
    assert!(
        (3.0..30.0).contains(&after),
        "compensation started {after}s after the start, not at the 3 s deadline"
    );
    let events = world.events(saga_id).await;
    assert_eq!(events[1], "DeadlineSet", "{events:?}");
    assert!(world.coupon_holder("WELCOME").await.is_none());

    // The coupons service comes back after the deadline: the redeem waiting for it is
    // refused unrun, its compensate is a null compensation, the saga ends compensated.
    world.start_participant(Domain::Coupons).await;
    world
        .wait_for_status(saga_id, SagaStatus::Compensated)
        .await;
    let refusal: Value = eventually("the refused redeem in the coupons barrier", || async {
        sqlx::query_scalar(
            "SELECT reply FROM barrier WHERE saga_id = $1 AND step = 'redeem_coupon'
             AND phase = 'action'",
        )
        .bind(saga_id)
        .fetch_optional(&world.pools["coupons"])
        .await
        .unwrap()
        .flatten()
    })
    .await;
    assert_eq!(
        refusal,
        serde_json::json!({ "outcome": "rejected", "reason": "deadline passed" }),
        "the redeem carried the saga's deadline, which had passed when the service read it"
    );
    assert!(
        world.coupon_holder("WELCOME").await.is_none(),
        "the coupon was never redeemed"
    );
    assert_eq!(world.account().await, (START_CENTS, 0, 0));
    assert_eq!(world.points().await, START_POINTS);
    world.shutdown().await;
}
