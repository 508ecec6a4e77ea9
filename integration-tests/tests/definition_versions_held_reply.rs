//! A process that lacks a saga's definition version never drops the saga's reply (it
//! retries it without storing its offset) and leaves its timers alone; a process that
//! registers the version later finishes the saga with that very reply.
//!
//! The only test in this binary: it counts the retries in the process-wide metrics
//! recorder (`saga_admin::metrics::handle`), which another test in the same process
//! would add to.

use integration_tests::versions::{saga_row, Deployment, Process};
use integration_tests::{eventually, group_lag};
use saga_core::SagaStatus;
use schemas::Phase;

/// How often this test process applied a reply to a saga of a version it lacks, read
/// from its rendered Prometheus text.
fn unknown_version_replies(rendered: &str) -> u64 {
    rendered
        .lines()
        .find(|line| {
            line.starts_with(
                "saga_transitions_total{input=\"reply\",result=\"unknown_definition\"}",
            )
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_reply_for_a_version_this_process_lacks_waits_for_a_process_that_has_it() {
    let metrics = saga_admin::metrics::handle();
    let deployment = Deployment::new().await;
    // A witness saga of version 1, and the saga under test, of version 2.
    let [witness] = deployment.started_by(&[1], &["w-1"]).await[..] else {
        unreachable!()
    };
    let [saga] = deployment.started_by(&[1, 2], &["a-1"]).await[..] else {
        unreachable!()
    };

    // Only version 1 runs now. The reply to the version-2 saga's try comes: it is tried,
    // and tried again, never applied and never recorded.
    let v1 = Process::start(&deployment, &[1], false).await;
    let before = unknown_version_replies(&metrics.render());
    let held = deployment.reply(saga, Phase::Try, 1).await;
    eventually("the version-1 process to retry the reply", || async {
        (unknown_version_replies(&metrics.render()) >= before + 2).then_some(())
    })
    .await;
    let replies_group = format!("{}.replies", deployment.settings.group);
    let replies_topic = deployment.connections.topics.replies();
    assert!(
        group_lag(&replies_group, &replies_topic).await >= 1,
        "the held reply's offset must not be committed"
    );
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE message_id = $1")
        .bind(held)
        .fetch_one(&deployment.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "a held reply stays unseen for the inbox");

    // Both sagas' step timeouts come due, the version-2 one first. The poller fires the
    // witness's (its try goes out again) and leaves the other exactly as it was.
    let due: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "UPDATE timers SET fire_at = date_trunc('second', now()) - interval '10 seconds'
         WHERE saga_id = $1 RETURNING fire_at",
    )
    .bind(saga)
    .fetch_one(&deployment.pool)
    .await
    .unwrap();
    let witnessed = saga_row(&deployment.pool, witness).await.unwrap().1;
    sqlx::query("UPDATE timers SET fire_at = now() - interval '1 second' WHERE saga_id = $1")
        .bind(witness)
        .execute(&deployment.pool)
        .await
        .unwrap();
    deployment
        .wait_for("the witness's timer to fire", witness, |_, version, _| {
            version > witnessed
        })
        .await;
    let timer: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT fire_at FROM timers WHERE saga_id = $1")
            .bind(saga)
            .fetch_optional(&deployment.pool)
            .await
            .unwrap();
    assert_eq!(
        timer,
        Some(due),
        "the version-2 timer is neither fired nor moved"
    );
    assert_eq!(
        saga_row(&deployment.pool, saga).await,
        Some((2, 2, "running".into()))
    );
    // Keep the timeout out of the way: what follows is about the held reply.
    sqlx::query("UPDATE timers SET fire_at = now() + interval '1 hour' WHERE saga_id = $1")
        .bind(saga)
        .execute(&deployment.pool)
        .await
        .unwrap();
    v1.stop().await;

    // A process that knows both versions takes over and applies the held reply itself:
    // the confirm goes out without the try being sent again, and the saga completes.
    let both = Process::start(&deployment, &[1, 2], false).await;
    deployment
        .wait_for("the held reply to be applied", saga, |_, version, _| {
            version == 4
        })
        .await;
    deployment.reply(saga, Phase::Confirm, 1).await;
    deployment
        .wait_for("a-1 to complete", saga, |definition, _, status| {
            definition == 2 && status == SagaStatus::Completed.as_str()
        })
        .await;
    let sent: Vec<String> = sqlx::query_scalar(
        "SELECT (data->>'phase') || ':' || (data->>'attempt') FROM saga_events
         WHERE saga_id = $1 AND event_type = 'CommandSent' ORDER BY seq",
    )
    .bind(saga)
    .fetch_all(&deployment.pool)
    .await
    .unwrap();
    assert_eq!(sent, ["try:1", "confirm:1"]);
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE message_id = $1")
        .bind(held)
        .fetch_one(&deployment.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 1, "the held reply was applied once");
    both.stop().await;
}
