//! Replies the engine ignores are counted by reason, and a stale failure does not add a
//! retry. This test has its process (and so the global metrics recorder) to itself.

use std::time::Duration;

use integration_tests::checkout::{publish, CheckoutWorld};
use integration_tests::eventually;
use saga_admin::AdminSettings;
use schemas::{Envelope, MessageKind, Phase, ReplyOutcome};
use uuid::Uuid;

/// The value of the counter `name` with `reason`, 0 when it has no sample yet.
fn ignored(text: &str, reason: &str) -> f64 {
    let series = format!("saga_replies_ignored_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn ignored_replies_are_counted_by_reason_and_change_nothing() {
    saga_admin::metrics::handle();
    let mut world = CheckoutWorld::new(true).await;
    // No participant runs: the test answers for them. No reply timeout interferes.
    world.settings.checkout.step_timeout = Duration::from_secs(600);
    world.start_engine().await;
    let api = world.serve_admin(AdminSettings::default()).await;
    let request = world.request(1_000, 5, "WELCOME");
    world.trigger(&request).await;
    let saga_id = world.saga_id(&request);
    let pool = world.engine_pool.clone();
    let attempts_of_try = || {
        let pool = pool.clone();
        async move {
            let attempts: Vec<i64> = sqlx::query_scalar(
                "SELECT (data->>'attempt')::bigint FROM saga_events
                 WHERE saga_id = $1 AND event_type = 'CommandSent'
                   AND data->>'step' = 'reserve_funds' AND data->>'phase' = 'try' ORDER BY seq",
            )
            .bind(saga_id)
            .fetch_all(&pool)
            .await
            .unwrap();
            attempts
        }
    };
    eventually("the try sent once", || async {
        (attempts_of_try().await == [1]).then_some(())
    })
    .await;

    let producer = world.deployment().kafka().producer().unwrap();
    let replies = world.topics().replies();
    let reply = |saga: Uuid, step: &str, phase: Phase, attempt: u32, outcome: ReplyOutcome| {
        let envelope = Envelope::new(MessageKind::Reply, outcome)
            .for_saga(saga)
            .for_step(step, phase, attempt);
        serde_json::to_vec(&envelope).unwrap()
    };
    let failed = || ReplyOutcome::Failed {
        error: "database busy".into(),
    };
    let send = |bytes: Vec<u8>, key: Uuid| {
        let (producer, replies) = (producer.clone(), replies.clone());
        async move { publish(&producer, &replies, &key.to_string(), &bytes, &[]).await }
    };

    // A failure of the latest attempt counts: the try goes out again as attempt 2.
    let first_failure = reply(saga_id, "reserve_funds", Phase::Try, 1, failed());
    send(first_failure, saga_id).await;
    eventually("the try sent again as attempt 2", || async {
        (attempts_of_try().await == [1, 2]).then_some(())
    })
    .await;
    // Now each of these changes nothing, for its own reason.
    let stale = reply(saga_id, "reserve_funds", Phase::Try, 1, failed());
    send(stale, saga_id).await;
    let unknown = Uuid::new_v4();
    let for_nobody = reply(unknown, "reserve_funds", Phase::Try, 1, ReplyOutcome::ok());
    send(for_nobody, unknown).await;
    let not_sent = reply(
        saga_id,
        "reserve_funds",
        Phase::Confirm,
        1,
        ReplyOutcome::ok(),
    );
    send(not_sent, saga_id).await;
    let no_step = reply(saga_id, "ship_parcel", Phase::Action, 1, ReplyOutcome::ok());
    send(no_step, saga_id).await;

    let url = format!("{api}/metrics");
    let text = eventually("every ignored reply counted", || async {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        let counted = [
            "stale_attempt",
            "unknown_saga",
            "not_awaited",
            "unknown_step",
        ]
        .iter()
        .all(|reason| ignored(&text, reason) >= 1.0);
        counted.then_some(text)
    })
    .await;
    for reason in [
        "stale_attempt",
        "unknown_saga",
        "not_awaited",
        "unknown_step",
    ] {
        assert_eq!(ignored(&text, reason), 1.0, "{reason}");
    }
    assert_eq!(ignored(&text, "saga_ended"), 0.0);
    // The stale failure added no retry, and the saga still waits for attempt 2's answer.
    assert_eq!(attempts_of_try().await, [1, 2]);
    let status: String = sqlx::query_scalar("SELECT status FROM sagas WHERE id = $1")
        .bind(saga_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "running");
    world.shutdown().await;
}
