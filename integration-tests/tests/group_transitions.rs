//! Group commit of the engine's own inputs: triggers and replies that queue up are decided
//! in memory and written with one statement per table, and the outcome is what applying
//! them one at a time gives — each saga once, exact balances, and histories that fold into
//! the stored state. This test has its process (and the global metrics recorder) to itself.

use integration_tests::checkout::{CheckoutWorld, START_CENTS, START_POINTS};
use integration_tests::eventually;
use saga_core::SagaStatus;
use saga_engine::history;
use sagas::checkout::TRIGGER_TOPIC;
use sagas::domains::Domain;

const SAGAS: usize = 40;
/// Small enough that every saga's funds and points can be held at once: only the
/// coupon decides which one completes.
const AMOUNT: i64 = 100;
const POINTS: i64 = 1;

/// The sum of the samples of `name` carrying the label `label`.
fn total(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(label))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn queued_triggers_and_replies_are_applied_whole_groups_at_a_time_with_the_same_outcome() {
    let metrics = saga_admin::metrics::handle();
    let mut world = CheckoutWorld::new(true).await;
    // One lane for every partition: what is queued for the lane forms its groups.
    world.settings.engine.consumer.lanes = 1;
    // Triggers are published before the engine starts, so its lanes find them queued
    // together. (Their topic is made here; a started and stopped engine would leave a
    // group member the broker waits out before the next one reads.)
    let deployment = world.deployment();
    let partitions = deployment.engine_settings().partitions;
    let trigger_topic = world.topics().trigger(TRIGGER_TOPIC);
    deployment
        .kafka()
        .ensure_topics(&[&trigger_topic], partitions)
        .await
        .unwrap();
    let requests: Vec<_> = (0..SAGAS)
        .map(|_| world.request(AMOUNT, POINTS, "WELCOME"))
        .collect();
    for request in &requests {
        world.trigger(request).await;
    }
    // Redeliveries of the same triggers in the same queue: each is a quiet duplicate.
    for request in &requests[..4] {
        world.trigger(request).await;
    }
    for domain in Domain::ALL {
        world.start_participant(domain).await;
    }
    world.start_engine().await;

    // One coupon for all: exactly one saga completes, every other one compensates.
    let pool = world.engine_pool.clone();
    let ended = eventually("every saga ended", || async {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, count(*) FROM sagas GROUP BY status ORDER BY 1")
                .fetch_all(&pool)
                .await
                .unwrap();
        let done: i64 = rows
            .iter()
            .filter(|(s, _)| s == "completed" || s == "compensated")
            .map(|(_, n)| n)
            .sum();
        (done == SAGAS as i64).then_some(rows)
    })
    .await;
    assert_eq!(
        ended,
        vec![
            ("compensated".to_string(), SAGAS as i64 - 1),
            ("completed".to_string(), 1)
        ]
    );
    let winner: uuid::Uuid =
        sqlx::query_scalar("SELECT (input->>'order_id')::uuid FROM sagas WHERE status = $1")
            .bind(SagaStatus::Completed.as_str())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(world.coupon_holder("WELCOME").await, Some(winner));
    assert_eq!(world.account().await, (START_CENTS - AMOUNT, 0, AMOUNT));
    assert_eq!(world.points().await, START_POINTS - POINTS);

    // Each saga started once, and its events fold into exactly the stored projection.
    let started: i64 =
        sqlx::query_scalar("SELECT count(*) FROM saga_events WHERE event_type = 'Started'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(started, SAGAS as i64);
    let report = history::verify(&pool).await.unwrap();
    assert_eq!(report.checked, SAGAS as u64);
    assert!(report.matches(), "{}", report.render());

    // The queued triggers and the replies went in groups written at once, never one by one.
    let text = metrics.render();
    for consumer in ["triggers", "replies"] {
        let groups = |applied: &str| {
            let labels = format!("consumer=\"{consumer}\",applied=\"{applied}\"");
            total(&text, "saga_consumer_groups_total", &labels)
        };
        assert!(groups("at_once") >= 1.0, "{consumer}: none at once\n{text}");
        assert_eq!(groups("one_by_one"), 0.0, "{consumer}: one by one\n{text}");
    }
    world.shutdown().await;
}
