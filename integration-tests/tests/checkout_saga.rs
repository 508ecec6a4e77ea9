//! The checkout saga end to end over real Postgres and the real broker.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use integration_tests::checkout::{publish, CheckoutWorld, START_CENTS, START_POINTS};
use integration_tests::{collect_until, consumer, eventually, group_lag, header, json_payload};
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use saga_core::SagaStatus;
use saga_engine::inputs::DEFINITION_HEADER;
use saga_plumbing::dlq;
use sagas::domains::Domain;
use schemas::{Envelope, MessageKind};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[tokio::test]
async fn the_happy_path_completes_with_exact_balances_points_and_coupon() {
    let world = CheckoutWorld::running(true).await;
    let request = world.request(2_500, 30, "WELCOME");
    let saga = world.saga_id(&request);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let envelope = Envelope::new(MessageKind::Trigger, &request);
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    world
        .publish_raw(
            &serde_json::to_vec(&envelope).unwrap(),
            &request.order_id.to_string(),
            &[("traceparent", traceparent.as_str())],
        )
        .await;
    world.wait_for_status(saga, SagaStatus::Completed).await;

    assert_eq!(world.account().await, (START_CENTS - 2_500, 0, 2_500));
    assert_eq!(world.points().await, START_POINTS - 30);
    assert_eq!(world.coupon_holder("WELCOME").await, Some(request.order_id));
    let events = world.events(saga).await;
    assert_eq!(events.first().map(String::as_str), Some("Started"));
    assert_eq!(events.last().map(String::as_str), Some("Completed"));

    // The trigger's trace follows the saga: commands out, replies back.
    let topics = world.topics();
    for topic in [topics.commands("balance"), topics.replies()] {
        let reader = consumer(&topic).await;
        let seen = collect_until(&reader, |m| m.len() >= 2).await;
        for message in &seen {
            let header = header(message, "traceparent").unwrap();
            assert!(
                header.starts_with(&format!("00-{trace}-")),
                "{topic}: {header}"
            );
        }
    }
    world.shutdown().await;
}

#[tokio::test]
async fn insufficient_funds_compensates_points_and_coupon_and_freezes_nothing() {
    let world = CheckoutWorld::running(true).await;
    let request = world.request(START_CENTS + 1, 40, "WELCOME");
    let saga = world.saga_id(&request);
    world.trigger(&request).await;
    world.wait_for_status(saga, SagaStatus::Compensated).await;

    assert_eq!(world.account().await, (START_CENTS, 0, 0));
    assert_eq!(world.points().await, START_POINTS);
    assert_eq!(world.coupon_holder("WELCOME").await, None);
    world.shutdown().await;
}

#[tokio::test]
async fn a_used_coupon_compensates_unfreezes_funds_and_refunds_points_in_sequence() {
    let world = CheckoutWorld::running(false).await;
    let request = world.request(1_000, 25, "TAKEN");
    let saga = world.saga_id(&request);
    world.trigger(&request).await;
    world.wait_for_status(saga, SagaStatus::Compensated).await;

    assert_eq!(world.account().await, (START_CENTS, 0, 0));
    assert_eq!(world.points().await, START_POINTS);
    assert_ne!(world.coupon_holder("TAKEN").await, Some(request.order_id));
    // Sequential: points refunded before the funds are released (reverse order).
    let events = world.events(saga).await;
    let sent: Vec<_> = sqlx::query_scalar::<_, String>(
        "SELECT data->>'step' || ':' || (data->>'phase') FROM saga_events
         WHERE saga_id = $1 AND event_type = 'CommandSent' ORDER BY seq",
    )
    .bind(saga)
    .fetch_all(&world.engine_pool)
    .await
    .unwrap();
    assert_eq!(
        sent,
        [
            "reserve_funds:try",
            "deduct_points:action",
            "redeem_coupon:action",
            "deduct_points:compensate",
            "reserve_funds:cancel"
        ]
    );
    assert!(events.contains(&"CompensationStarted".to_string()));
    world.shutdown().await;
}

#[tokio::test]
async fn a_duplicate_trigger_starts_one_saga() {
    let world = CheckoutWorld::running(true).await;
    let request = world.request(500, 5, "WELCOME");
    let saga = world.saga_id(&request);
    // The same request three times: twice as new messages, once as the very same message.
    world.trigger(&request).await;
    world.trigger(&request).await;
    let envelope = Envelope::new(MessageKind::Trigger, &request);
    let bytes = serde_json::to_vec(&envelope).unwrap();
    world
        .publish_raw(&bytes, &request.order_id.to_string(), &[])
        .await;
    world
        .publish_raw(&bytes, &request.order_id.to_string(), &[])
        .await;
    world.wait_for_status(saga, SagaStatus::Completed).await;

    // Every copy was consumed once the trigger group has committed everything.
    let group = format!("{}saga-engine.triggers", world.settings.topics.prefix);
    let topic = world.topics().trigger(sagas::checkout::TRIGGER_TOPIC);
    eventually("every trigger copy to be consumed", || async {
        (group_lag(&group, &topic).await == 0).then_some(())
    })
    .await;

    let (sagas,): (i64,) = sqlx::query_as("SELECT count(*) FROM sagas")
        .fetch_one(&world.engine_pool)
        .await
        .unwrap();
    assert_eq!(sagas, 1);
    let started = world
        .events(saga)
        .await
        .iter()
        .filter(|e| *e == "Started")
        .count();
    assert_eq!(started, 1);
    assert_eq!(world.account().await, (START_CENTS - 500, 0, 500));
    world.shutdown().await;
}

/// Copies every message of `topics` back onto its topic once (copies carry a header, so
/// they are not copied again), counting the copies in `copied`.
fn redeliver_everything(
    world: &CheckoutWorld,
    topics: Vec<String>,
    copied: Arc<AtomicUsize>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let kafka = world.settings.kafka.clone();
    tokio::spawn(async move {
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        let tap = kafka
            .consumer(&format!("tap-{}", Uuid::new_v4().simple()), &refs)
            .unwrap();
        let producer = kafka.producer().unwrap();
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => return,
                message = tap.recv() => message.unwrap().detach(),
            };
            if header(&message, "test.copy").is_some() {
                continue;
            }
            let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
            publish(
                &producer,
                message.topic(),
                &key,
                message.payload().unwrap(),
                &[("test.copy", "1")],
            )
            .await;
            copied.fetch_add(1, Ordering::SeqCst);
        }
    })
}

#[tokio::test]
async fn every_command_and_reply_delivered_twice_has_no_double_effect() {
    let world = CheckoutWorld::running(true).await;
    let topics = world.topics();
    let mut tapped: Vec<String> = Domain::ALL
        .iter()
        .map(|d| topics.commands(d.name()))
        .collect();
    tapped.push(topics.replies());
    let stop = CancellationToken::new();
    let copied = Arc::new(AtomicUsize::new(0));
    let tap = redeliver_everything(&world, tapped, copied.clone(), stop.clone());

    let happy = world.request(1_200, 20, "WELCOME");
    let failing = world.request(800, 10, "OLD");
    world.trigger(&happy).await;
    world.trigger(&failing).await;
    world
        .wait_for_status(world.saga_id(&happy), SagaStatus::Completed)
        .await;
    world
        .wait_for_status(world.saga_id(&failing), SagaStatus::Compensated)
        .await;

    // Both sagas cause 18 commands and replies; wait until the tap copied them all, then
    // until every consumer has committed everything (copies included).
    eventually("the tap to copy every command and reply", || async {
        (copied.load(Ordering::SeqCst) >= 18).then_some(())
    })
    .await;
    let prefix = world.settings.topics.prefix.clone();
    let mut groups: Vec<(String, String)> = Domain::ALL
        .iter()
        .map(|d| {
            (
                format!("{prefix}participant-{}", d.name()),
                topics.commands(d.name()),
            )
        })
        .collect();
    groups.push((format!("{prefix}saga-engine.replies"), topics.replies()));
    for (group, topic) in &groups {
        eventually(&format!("{group} to consume all of {topic}"), || async {
            (group_lag(group, topic).await == 0).then_some(())
        })
        .await;
    }
    stop.cancel();
    tap.await.unwrap();

    assert_eq!(world.account().await, (START_CENTS - 1_200, 0, 1_200));
    assert_eq!(world.points().await, START_POINTS - 20);
    assert_eq!(world.coupon_holder("WELCOME").await, Some(happy.order_id));
    assert_eq!(world.coupon_holder("OLD").await, None);
    // Each service answered exactly the phases the two sagas needed, copies included.
    let (happy_saga, failing_saga) = (world.saga_id(&happy), world.saga_id(&failing));
    let phases = |domain: &'static str, saga: Uuid| {
        let pool = world.pools[domain].clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT phase FROM barrier WHERE saga_id = $1 ORDER BY phase",
            )
            .bind(saga)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(phases("balance", happy_saga).await, ["confirm", "try"]);
    assert_eq!(phases("balance", failing_saga).await, ["cancel", "try"]);
    assert_eq!(phases("points", happy_saga).await, ["action"]);
    assert_eq!(
        phases("points", failing_saga).await,
        ["action", "compensate"]
    );
    assert_eq!(phases("coupons", failing_saga).await, ["action"]);
    world.shutdown().await;
}

#[tokio::test]
async fn a_cancel_delivered_before_its_try_is_a_null_compensation_and_the_late_try_is_rejected() {
    let mut world = CheckoutWorld::new(true).await;
    // The engine sends balance commands to a holding topic; this test forwards them to the
    // real one, holding each Try back until its Cancel has been delivered.
    let topics = world.topics();
    let holding = format!("{}balance.held", world.settings.topics.prefix);
    world
        .settings
        .kafka
        .ensure_topics(&[holding.as_str()], 1)
        .await
        .unwrap();
    world
        .command_overrides
        .insert("balance".into(), holding.clone());
    for domain in Domain::ALL {
        world.start_participant(domain).await;
    }
    world.start_engine().await;
    let replies = consumer(&topics.replies()).await;

    let request = world.request(700, 10, "NO-SUCH-COUPON");
    let saga = world.saga_id(&request);
    let held = consumer(&holding).await;
    world.trigger(&request).await;
    let both = collect_until(&held, |m| m.len() >= 2).await;
    let phase = |m: &OwnedMessage| json_payload(m)["phase"].as_str().unwrap().to_string();
    assert_eq!(
        both.iter().map(phase).collect::<Vec<_>>(),
        ["try", "cancel"]
    );
    let producer = world.settings.kafka.producer().unwrap();
    let real = topics.commands("balance");
    for message in [&both[1], &both[0]] {
        publish(
            &producer,
            &real,
            &saga.to_string(),
            message.payload().unwrap(),
            &[],
        )
        .await;
    }

    world.wait_for_status(saga, SagaStatus::Compensated).await;
    let answers = collect_until(&replies, |m| {
        m.iter()
            .any(|r| json_payload(r)["phase"] == "try" && json_payload(r)["saga_id"] == json!(saga))
    })
    .await;
    let late_try = answers
        .iter()
        .map(json_payload)
        .find(|r| r["phase"] == "try" && r["saga_id"] == json!(saga))
        .unwrap();
    assert_eq!(late_try["payload"]["outcome"], "rejected");
    assert_eq!(world.account().await, (START_CENTS, 0, 0));
    let ops: Vec<String> =
        sqlx::query_scalar("SELECT phase FROM barrier WHERE saga_id = $1 ORDER BY phase")
            .bind(saga)
            .fetch_all(&world.pools["balance"])
            .await
            .unwrap();
    assert_eq!(ops, ["cancel", "try"]);
    world.shutdown().await;
}

#[tokio::test]
async fn an_engine_stopped_mid_saga_finishes_it_after_a_restart() {
    let mut world = CheckoutWorld::new(false).await;
    world.start_participant(Domain::Balance).await;
    world.start_participant(Domain::Coupons).await;
    world.start_engine().await;

    let request = world.request(3_000, 15, "SPRING");
    let saga = world.saga_id(&request);
    world.trigger(&request).await;
    // The points service is down: the saga waits at its second step.
    let engine_pool = world.engine_pool.clone();
    eventually("the saga to wait at deduct_points", || async {
        let step: Option<String> = sqlx::query_scalar("SELECT step FROM sagas WHERE id = $1")
            .bind(saga)
            .fetch_optional(&engine_pool)
            .await
            .unwrap()
            .flatten();
        (step.as_deref() == Some("deduct_points")).then_some(())
    })
    .await;
    // Its command has left the outbox (published and acknowledged) before the engine stops.
    eventually("the points command to be published", || async {
        let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE key = $1")
            .bind(saga.to_string())
            .fetch_one(&engine_pool)
            .await
            .unwrap();
        (waiting == 0).then_some(())
    })
    .await;
    world.stop_engine().await;
    assert_eq!(world.account().await, (START_CENTS - 3_000, 3_000, 0));

    // Points answers while the engine is down; the reply waits in Kafka.
    world.start_participant(Domain::Points).await;
    let points_pool = world.pools["points"].clone();
    eventually("points to answer", || async {
        let answered: i64 = sqlx::query_scalar("SELECT count(*) FROM barrier WHERE saga_id = $1")
            .bind(saga)
            .fetch_one(&points_pool)
            .await
            .unwrap();
        (answered > 0).then_some(())
    })
    .await;
    world.start_engine().await;
    world.wait_for_status(saga, SagaStatus::Completed).await;

    assert_eq!(world.account().await, (START_CENTS - 3_000, 0, 3_000));
    assert_eq!(world.points().await, START_POINTS - 15);
    assert_eq!(world.coupon_holder("SPRING").await, Some(request.order_id));
    world.shutdown().await;
}

#[tokio::test]
async fn bad_triggers_go_to_the_dlq_and_later_ones_still_complete() {
    let world = CheckoutWorld::running(true).await;
    let dlq_reader = consumer(&world.topics().dlq()).await;

    world.publish_raw(b"{ this is not json", "k1", &[]).await;
    let wrong_shape = json!({
        "message_id": Uuid::new_v4(), "kind": "trigger", "occurred_at": "2026-11-22T00:00:00Z",
        "payload": { "order_id": "not-a-uuid", "user_id": 1 }
    });
    world
        .publish_raw(wrong_shape.to_string().as_bytes(), "k2", &[])
        .await;
    let negative = world.request(-5, 0, "WELCOME");
    let envelope = Envelope::new(MessageKind::Trigger, &negative);
    world
        .publish_raw(&serde_json::to_vec(&envelope).unwrap(), "k3", &[])
        .await;
    let valid = world.request(400, 4, "WELCOME");
    let unknown = Envelope::new(MessageKind::Trigger, &valid);
    world
        .publish_raw(
            &serde_json::to_vec(&unknown).unwrap(),
            "k4",
            &[(DEFINITION_HEADER, "refund")],
        )
        .await;
    world.trigger(&valid).await;

    world
        .wait_for_status(world.saga_id(&valid), SagaStatus::Completed)
        .await;
    // At least once: a rebalance may dead-letter a message twice; four distinct errors.
    let distinct_errors = |m: &[OwnedMessage]| {
        m.iter()
            .filter_map(|m| header(m, dlq::ERROR_HEADER))
            .collect::<HashSet<_>>()
            .len()
    };
    let dead = collect_until(&dlq_reader, |m| distinct_errors(m) >= 4).await;
    let errors: HashSet<String> = dead
        .iter()
        .map(|m| header(m, dlq::ERROR_HEADER).unwrap())
        .collect();
    let has = |needle: &str| errors.iter().any(|e| e.contains(needle));
    assert!(has("not a valid envelope"), "{errors:?}");
    assert!(has("invalid input"), "{errors:?}");
    assert!(
        has("`amount_cents` must be within 1..=10000000000, got -5"),
        "{errors:?}"
    );
    assert!(has("unknown definition `refund`"), "{errors:?}");
    assert!(dead
        .iter()
        .all(|m| header(m, dlq::SOURCE_TOPIC_HEADER).is_some()));
    assert!(
        world.dead_lettered() >= 4,
        "this world's engine counted {} dead letters",
        world.dead_lettered()
    );
    assert_eq!(world.account().await, (START_CENTS - 400, 0, 400));
    let (sagas,): (i64,) = sqlx::query_as("SELECT count(*) FROM sagas")
        .fetch_one(&world.engine_pool)
        .await
        .unwrap();
    assert_eq!(sagas, 1);
    world.shutdown().await;
}

#[tokio::test]
async fn a_step_timeout_resends_the_same_command_and_the_effect_happens_once() {
    let mut world = CheckoutWorld::new(false).await;
    world.settings.checkout.step_timeout = std::time::Duration::from_millis(300);
    world.settings.checkout.forward_attempts = 1_000;
    world.start_participant(Domain::Points).await;
    world.start_participant(Domain::Coupons).await;
    world.start_engine().await;

    // The balance service is down: its Try times out and is sent again.
    let request = world.request(1_500, 5, "SPRING");
    let saga = world.saga_id(&request);
    world.trigger(&request).await;
    let engine_pool = world.engine_pool.clone();
    eventually("the try to be sent a third time", || async {
        let attempts: Option<i64> = sqlx::query_scalar(
            "SELECT max((data->>'attempt')::bigint) FROM saga_events
             WHERE saga_id = $1 AND event_type = 'CommandSent' AND data->>'phase' = 'try'",
        )
        .bind(saga)
        .fetch_one(&engine_pool)
        .await
        .unwrap();
        (attempts >= Some(3)).then_some(())
    })
    .await;

    // Every copy reaches the service at once; the barrier lets one of them act.
    world.start_participant(Domain::Balance).await;
    world.wait_for_status(saga, SagaStatus::Completed).await;
    assert_eq!(world.account().await, (START_CENTS - 1_500, 0, 1_500));
    assert_eq!(world.points().await, START_POINTS - 5);
    let tries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM barrier WHERE saga_id = $1 AND phase = 'try'")
            .bind(saga)
            .fetch_one(&world.pools["balance"])
            .await
            .unwrap();
    assert_eq!(tries, 1);
    world.shutdown().await;
}
