//! Retention over real sagas: one pass deletes exactly the expired rows of the engine and
//! of a participant schema, never a live saga, and counts what it deleted.
//!
//! The only test in this binary: it reads the process-wide metrics recorder
//! (`saga_admin::metrics::handle`), to which any other test that sweeps would add (the
//! background sweeps are in `retention_background.rs`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use integration_tests::checkout::{publish, CheckoutWorld, START_CENTS};
use integration_tests::eventually;
use saga_core::SagaStatus;
use sagas::domains::{coupons, Domain};
use sqlx::PgPool;
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

async fn count_before(pool: &PgPool, sql: &str, mark: DateTime<Utc>) -> i64 {
    sqlx::query_scalar(sql)
        .bind(mark)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn db_now(pool: &PgPool) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn execute(pool: &PgPool, sql: &str) {
    sqlx::query(sql).execute(pool).await.unwrap();
}

/// Two set-aside outbox rows, one set aside 31 days ago.
async fn set_aside_rows(pool: &PgPool) {
    execute(
        pool,
        "INSERT INTO outbox_set_aside (id, topic, key, payload, headers, created_at, error,
                                       set_aside_at)
         VALUES (1, 't', 'k', '{}', '{}', now() - interval '31 days', 'too large',
                 now() - interval '31 days'),
                (2, 't', 'k', '{}', '{}', now(), 'too large', now())",
    )
    .await;
}

/// The value of the Prometheus sample `name` with every label of `labels` (0 if absent).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            let series = line.rsplit_once(' ').map_or("", |(s, _)| s);
            series.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit_once(' ')?.1.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn one_pass_deletes_exactly_the_expired_rows_and_never_a_live_saga() {
    let metrics = saga_admin::metrics::handle();
    let mut world = CheckoutWorld::new(true).await;
    // This test sweeps by hand; no background sweep may run.
    world.settings.retention.enabled = false;
    let engine = world.engine_pool.clone();
    let points = world.pools["points"].clone();
    let later = Utc::now() + chrono::Duration::days(1);
    coupons::seed_coupons(
        &world.pools["coupons"],
        &[("PARK", later), ("DONE", later), ("LIVE", later)],
    )
    .await
    .unwrap();

    // A parked saga: balance is down and every phase has one short attempt.
    let usual = world.settings.checkout.clone();
    world.settings.checkout.step_timeout = Duration::from_secs(1);
    world.settings.checkout.forward_attempts = 1;
    world.settings.checkout.settle_attempts = 1;
    world.start_participant(Domain::Points).await;
    world.start_participant(Domain::Coupons).await;
    world.start_engine().await;
    let parked = world.request(1_000, 10, "PARK");
    world.trigger(&parked).await;
    world
        .wait_for_status(world.saga_id(&parked), SagaStatus::Parked)
        .await;
    world.stop_engine().await;
    world.settings.checkout = usual;

    // Two sagas that end: one completes, one compensates; and a poison trigger and a
    // poison command, dead-lettered by the engine and by the points service.
    world.start_participant(Domain::Balance).await;
    world.start_engine().await;
    let done = world.request(2_500, 30, "DONE");
    let undone = world.request(START_CENTS + 1, 40, "TAKEN");
    world.trigger(&done).await;
    world.trigger(&undone).await;
    let producer = world.settings.kafka.producer().unwrap();
    let points_commands = world.topics().commands("points");
    world.publish_raw(b"old poison", "k", &[]).await;
    publish(&producer, &points_commands, "k", b"old poison", &[]).await;
    let ended = [world.saga_id(&done), world.saga_id(&undone)];
    world.wait_for_status(ended[0], SagaStatus::Completed).await;
    world
        .wait_for_status(ended[1], SagaStatus::Compensated)
        .await;
    for pool in [&engine, &points] {
        eventually("the old poison kept as a dead letter", || async {
            let n = count(pool, "SELECT count(*) FROM dead_letters").await;
            (n == 1).then_some(())
        })
        .await;
    }
    // Everything written before `mark` will be made old.
    let mark = db_now(&engine).await;

    // A running saga: its balance try goes to a topic no service reads.
    world.stop_engine().await;
    let nowhere = format!("{}balance.nowhere", world.settings.topics.prefix);
    world.command_overrides.insert("balance".into(), nowhere);
    world.start_engine().await;
    let live = world.request(1_000, 20, "LIVE");
    let live_id = world.saga_id(&live);
    world.trigger(&live).await;
    world.publish_raw(b"new poison", "k", &[]).await;
    publish(&producer, &points_commands, "k", b"new poison", &[]).await;
    eventually(
        "the live saga's points and coupons replies and both new dead letters",
        || {
            let (engine, points) = (&engine, &points);
            async move {
                let replies = count_of(
                    engine,
                    "SELECT count(*) FROM saga_events
                 WHERE saga_id = ANY($1) AND event_type = 'ReplyReceived'",
                    &[live_id],
                )
                .await;
                let letters = count(engine, "SELECT count(*) FROM dead_letters").await
                    + count(points, "SELECT count(*) FROM dead_letters").await;
                (replies == 2 && letters == 4).then_some(())
            }
        },
    )
    .await;
    world.stop_engine().await;
    let live_and_parked = [live_id, world.saga_id(&parked)];
    let status: String = sqlx::query_scalar("SELECT status FROM sagas WHERE id = $1")
        .bind(live_id)
        .fetch_one(&engine)
        .await
        .unwrap();
    assert_eq!(status, SagaStatus::Running.as_str());

    // Age what came before `mark` past every retention; every saga, even the live ones.
    for sql in [
        "UPDATE sagas SET updated_at = updated_at - interval '40 days'",
        "UPDATE inbox SET received_at = received_at - interval '8 days' WHERE received_at < $1",
        "UPDATE dead_letters SET dead_lettered_at = dead_lettered_at - interval '31 days'
         WHERE dead_lettered_at < $1",
    ] {
        sqlx::query(sql).bind(mark).execute(&engine).await.unwrap();
    }
    for sql in [
        "UPDATE barrier SET created_at = created_at - interval '31 days' WHERE created_at < $1",
        "UPDATE dead_letters SET dead_lettered_at = dead_lettered_at - interval '31 days'
         WHERE dead_lettered_at < $1",
    ] {
        sqlx::query(sql).bind(mark).execute(&points).await.unwrap();
    }
    for pool in [&engine, &points] {
        execute(
            pool,
            "INSERT INTO dead_letter_actions (dead_letter_id, action, actor, reason)
             SELECT id, 'discard', 'ana', 'seen' FROM dead_letters",
        )
        .await;
        set_aside_rows(pool).await;
    }

    let events_of = "SELECT count(*) FROM saga_events WHERE saga_id = ANY($1)";
    let ended_events = count_of(&engine, events_of, &ended).await;
    let live_events = count_of(&engine, events_of, &live_and_parked).await;
    let old_inbox = "SELECT count(*) FROM inbox WHERE received_at < $1";
    let old_inbox_rows = count_before(&engine, old_inbox, mark).await;
    let new_inbox = "SELECT count(*) FROM inbox WHERE received_at >= $1";
    let new_inbox_rows = count_before(&engine, new_inbox, mark).await;
    let old_barrier = "SELECT count(*) FROM barrier WHERE created_at < $1";
    let old_barrier_rows = count_before(&points, old_barrier, mark).await;
    let new_barrier = "SELECT count(*) FROM barrier WHERE created_at >= $1";
    let new_barrier_rows = count_before(&points, new_barrier, mark).await;
    assert!(ended_events >= 10 && live_events >= 4);
    assert!(
        old_inbox_rows >= 6 && new_inbox_rows >= 2,
        "{old_inbox_rows} {new_inbox_rows}"
    );
    assert!(old_barrier_rows >= 3 && new_barrier_rows >= 1);
    let live_barrier = "SELECT count(*) FROM barrier WHERE saga_id = ANY($1)";
    let live_barrier_rows = count_of(&points, live_barrier, &[live_id]).await;
    let live_timers = count_of(
        &engine,
        "SELECT count(*) FROM timers WHERE saga_id = ANY($1)",
        &[live_id],
    )
    .await;
    assert_eq!(live_timers, 1, "the balance try waits for its timeout");

    // One pass, in batches of two rows.
    let counted_before = metrics.render();
    let settings = saga_engine::retention::RetentionSettings {
        batch_size: 2,
        batch_pause: Duration::from_millis(1),
        ..Default::default()
    };
    let swept = saga_engine::retention::sweep(&engine, &settings)
        .await
        .unwrap();
    assert!(swept.failed.is_empty(), "{:?}", swept.failed);
    let expected = [
        ("dead_letter_actions", 1),
        ("dead_letters", 1),
        ("inbox", old_inbox_rows as u64),
        ("outbox_set_aside", 1),
        ("saga_events", ended_events as u64),
        ("sagas", 2),
    ];
    assert_eq!(swept.deleted.into_iter().collect::<Vec<_>>(), expected);

    // The ended sagas are gone; the running and the parked saga keep every row.
    let sagas_of = "SELECT count(*) FROM sagas WHERE id = ANY($1)";
    assert_eq!(count_of(&engine, sagas_of, &ended).await, 0);
    assert_eq!(count_of(&engine, events_of, &ended).await, 0);
    assert_eq!(count_of(&engine, sagas_of, &live_and_parked).await, 2);
    assert_eq!(
        count_of(&engine, events_of, &live_and_parked).await,
        live_events
    );
    let timers = "SELECT count(*) FROM timers WHERE saga_id = ANY($1)";
    assert_eq!(count_of(&engine, timers, &[live_id]).await, live_timers);
    // Old inbox rows are gone, recent ones stay; likewise dead letters and set-aside rows.
    assert_eq!(count_before(&engine, old_inbox, mark).await, 0);
    assert_eq!(count_before(&engine, new_inbox, mark).await, new_inbox_rows);
    let kept = |table: &str| format!("SELECT count(*) FROM {table}");
    let new_letters = "SELECT count(*) FROM dead_letters WHERE dead_lettered_at >= $1";
    assert_eq!(count(&engine, &kept("dead_letters")).await, 1);
    assert_eq!(count_before(&engine, new_letters, mark).await, 1);
    assert_eq!(count(&engine, &kept("dead_letter_actions")).await, 1);
    let new_set_aside = "SELECT count(*) FROM outbox_set_aside WHERE id = 2";
    assert_eq!(count(&engine, &kept("outbox_set_aside")).await, 1);
    assert_eq!(count(&engine, new_set_aside).await, 1);

    // The points schema: old barrier rows, the old dead letter and set-aside row go.
    let settings = saga_participant::retention::RetentionSettings {
        batch_size: 2,
        batch_pause: Duration::from_millis(1),
        ..Default::default()
    };
    let swept = saga_participant::retention::sweep(&points, "points", &settings)
        .await
        .unwrap();
    assert!(swept.failed.is_empty(), "{:?}", swept.failed);
    let expected = [
        ("barrier", old_barrier_rows as u64),
        ("dead_letter_actions", 1),
        ("dead_letters", 1),
        ("outbox_set_aside", 1),
    ];
    assert_eq!(swept.deleted.into_iter().collect::<Vec<_>>(), expected);
    assert_eq!(count_before(&points, old_barrier, mark).await, 0);
    assert_eq!(
        count_before(&points, new_barrier, mark).await,
        new_barrier_rows
    );
    assert_eq!(
        count_of(&points, live_barrier, &[live_id]).await,
        live_barrier_rows
    );
    assert_eq!(count(&points, &kept("dead_letters")).await, 1);
    assert_eq!(count_before(&points, new_letters, mark).await, 1);
    assert_eq!(count(&points, &kept("dead_letter_actions")).await, 1);
    assert_eq!(count(&points, &kept("outbox_set_aside")).await, 1);
    assert_eq!(count(&points, new_set_aside).await, 1);

    // A second pass finds nothing more; the deletions were counted.
    let again = saga_engine::retention::sweep(&engine, &Default::default())
        .await
        .unwrap();
    assert!(again.deleted.is_empty(), "{:?}", again.deleted);
    let counted_after = metrics.render();
    let counted = |name: &str, labels: &[(&str, &str)]| {
        sample(&counted_after, name, labels) - sample(&counted_before, name, labels)
    };
    let engine_actions = [("table", "dead_letter_actions")];
    assert_eq!(
        counted("saga_retention_deleted_total", &engine_actions),
        1.0
    );
    let points_barrier = [("schema", "points"), ("table", "barrier")];
    assert_eq!(
        counted("saga_participant_retention_deleted_total", &points_barrier),
        old_barrier_rows as f64
    );
    world.shutdown().await;
}
