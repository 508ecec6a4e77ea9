//! Outbox and relay against real Postgres and the real broker.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use integration_tests::{
    collect_until, consumer, engine_database, eventually, fresh_topic, header, json_payload, kafka,
};
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use saga_plumbing::kafka::KafkaSettings;
use saga_plumbing::outbox::{self, BatchOutcome, OutboxMessage, Relay, RelaySettings};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

async fn relay(pool: &PgPool, batch_size: i64, poll_interval: Duration) -> Relay {
    let settings = RelaySettings {
        batch_size,
        poll_interval,
        ..RelaySettings::default()
    };
    let producer = kafka().await.producer().unwrap();
    Relay::new(pool.clone(), producer, "engine", settings)
}

fn numbered(topic: &str, keys: usize, count: usize) -> Vec<OutboxMessage> {
    (0..count)
        .map(|n| OutboxMessage {
            topic: topic.to_string(),
            key: format!("key-{}", n % keys),
            payload: json!({ "n": n }),
            headers: Default::default(),
        })
        .collect()
}

async fn enqueue(pool: &PgPool, messages: &[OutboxMessage]) {
    let mut tx = pool.begin().await.unwrap();
    for chunk in messages.chunks(500) {
        outbox::enqueue(&mut tx, chunk).await.unwrap();
    }
    tx.commit().await.unwrap();
}

async fn backlog(pool: &PgPool) -> i64 {
    outbox::backlog(&mut pool.acquire().await.unwrap())
        .await
        .unwrap()
}

fn number(message: &OwnedMessage) -> usize {
    json_payload(message)["n"].as_u64().unwrap() as usize
}

fn distinct_numbers(messages: &[OwnedMessage]) -> HashSet<usize> {
    messages.iter().map(number).collect()
}

/// Per key, the order in which numbers first appeared (duplicates are allowed).
fn first_seen_order_is_ascending_per_key(messages: &[OwnedMessage]) {
    let mut seen: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    let mut distinct = HashSet::new();
    for message in messages {
        let n = number(message);
        if distinct.insert(n) {
            seen.entry(message.key().unwrap().to_vec())
                .or_default()
                .push(n);
        }
    }
    for (key, numbers) in seen {
        let mut sorted = numbers.clone();
        sorted.sort_unstable();
        assert_eq!(
            numbers,
            sorted,
            "order broken for key {}",
            String::from_utf8_lossy(&key)
        );
    }
}

#[tokio::test]
async fn a_committed_message_is_published_with_key_and_headers_then_deleted() {
    let pool = engine_database().await;
    let topic = fresh_topic("outbox", 1).await;
    let reader = consumer(&topic).await;

    let rolled_back = OutboxMessage {
        topic: topic.clone(),
        key: "saga-1".into(),
        payload: json!({"rolled": "back"}),
        headers: Default::default(),
    };
    let mut tx = pool.begin().await.unwrap();
    outbox::enqueue(&mut tx, &[rolled_back]).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(backlog(&pool).await, 0);

    let committed = OutboxMessage {
        topic: topic.clone(),
        key: "saga-1".into(),
        payload: json!({"hello": "world"}),
        headers: Default::default(),
    }
    .with_header(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    );
    enqueue(&pool, &[committed]).await;
    assert_eq!(backlog(&pool).await, 1);

    let relay = relay(&pool, 100, Duration::from_millis(500)).await;
    assert_eq!(
        relay.publish_batch().await.unwrap(),
        BatchOutcome::Published {
            published: 1,
            set_aside: 0,
            kept: 0
        }
    );
    assert_eq!(relay.publish_batch().await.unwrap(), BatchOutcome::Empty);
    assert_eq!(backlog(&pool).await, 0);

    let messages = collect_until(&reader, |m| !m.is_empty()).await;
    assert_eq!(messages[0].key(), Some(&b"saga-1"[..]));
    assert_eq!(json_payload(&messages[0]), json!({"hello": "world"}));
    assert_eq!(
        header(&messages[0], "traceparent").as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
}

#[tokio::test]
async fn a_running_relay_wakes_on_notify_without_waiting_for_its_poll() {
    let pool = engine_database().await;
    let topic = fresh_topic("notify", 1).await;
    let reader = consumer(&topic).await;
    // A poll interval far beyond the test deadline: only NOTIFY can wake it in time.
    let relay = relay(&pool, 100, Duration::from_secs(3600)).await;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));

    // The first row may be taken by the relay's start-up batch; the later ones arrive
    // while it sleeps on its (hour-long) poll, so only a notification can deliver them.
    for round in 0..3 {
        enqueue(&pool, &numbered(&topic, 1, round + 1)[round..]).await;
        collect_until(&reader, |m| m.iter().any(|x| number(x) == round)).await;
    }
    eventually("the outbox to drain", || async {
        (backlog(&pool).await == 0).then_some(())
    })
    .await;
    shutdown.cancel();
    running.await.unwrap();
}

#[tokio::test]
async fn two_relays_publish_every_row_and_keep_per_key_order() {
    let pool = engine_database().await;
    let topic = fresh_topic("two-relays", 3).await;
    let reader = consumer(&topic).await;
    let total = 1_000;
    enqueue(&pool, &numbered(&topic, 20, total)).await;

    let shutdown = CancellationToken::new();
    let first = tokio::spawn(
        relay(&pool, 40, Duration::from_millis(50))
            .await
            .run(shutdown.clone()),
    );
    let second = tokio::spawn(
        relay(&pool, 40, Duration::from_millis(50))
            .await
            .run(shutdown.clone()),
    );

    let messages = collect_until(&reader, |m| distinct_numbers(m).len() == total).await;
    eventually("the outbox to drain", || async {
        (backlog(&pool).await == 0).then_some(())
    })
    .await;
    shutdown.cancel();
    first.await.unwrap();
    second.await.unwrap();

    assert_eq!(distinct_numbers(&messages), (0..total).collect());
    first_seen_order_is_ascending_per_key(&messages);
}

#[tokio::test]
async fn a_relay_killed_mid_batch_loses_nothing() {
    let pool = engine_database().await;
    let topic = fresh_topic("killed", 2).await;
    let reader = consumer(&topic).await;
    let total = 2_000;
    enqueue(&pool, &numbered(&topic, 10, total)).await;

    // Kill the first relay as soon as its first batch has left the outbox.
    let victim = tokio::spawn(
        relay(&pool, 20, Duration::from_millis(50))
            .await
            .run(CancellationToken::new()),
    );
    eventually("the first batch to be published", || async {
        (backlog(&pool).await < total as i64).then_some(())
    })
    .await;
    victim.abort();
    assert!(victim.await.unwrap_err().is_cancelled());
    let left = backlog(&pool).await;
    assert!(
        left > 0,
        "the first relay was to be killed before it finished"
    );

    let shutdown = CancellationToken::new();
    let survivor = tokio::spawn(
        relay(&pool, 50, Duration::from_millis(50))
            .await
            .run(shutdown.clone()),
    );
    let messages = collect_until(&reader, |m| distinct_numbers(m).len() == total).await;
    eventually("the outbox to drain", || async {
        (backlog(&pool).await == 0).then_some(())
    })
    .await;
    shutdown.cancel();
    survivor.await.unwrap();

    assert_eq!(distinct_numbers(&messages), (0..total).collect());
    first_seen_order_is_ascending_per_key(&messages);
}

#[tokio::test]
async fn a_row_the_broker_refuses_is_set_aside_and_holds_up_nothing() {
    let pool = engine_database().await;
    let topic = fresh_topic("refused", 1).await;
    let reader = consumer(&topic).await;
    let huge = "x".repeat(saga_plumbing::kafka::PRODUCE_LIMIT_BYTES + 1);
    let message = |key: &str, n: usize, filler: &str| OutboxMessage {
        topic: topic.clone(),
        key: key.to_string(),
        payload: json!({ "n": n, "filler": filler }),
        headers: Default::default(),
    };
    // The refused row comes first for key `a`; `a`'s later row and `b`'s rows follow.
    enqueue(
        &pool,
        &[
            message("a", 0, &huge),
            message("b", 1, ""),
            message("a", 2, ""),
            message("b", 3, ""),
        ],
    )
    .await;

    let relay = relay(&pool, 100, Duration::from_millis(500)).await;
    assert_eq!(
        relay.publish_batch().await.unwrap(),
        BatchOutcome::Published {
            published: 3,
            set_aside: 1,
            kept: 0
        }
    );
    assert_eq!(backlog(&pool).await, 0);
    let messages = collect_until(&reader, |m| distinct_numbers(m).len() == 3).await;
    assert_eq!(distinct_numbers(&messages), HashSet::from([1, 2, 3]));

    let (id, key, error, size): (i64, String, String, i32) =
        sqlx::query_as("SELECT id, key, error, octet_length(payload::text) FROM outbox_set_aside")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(key, "a");
    assert!(id > 0);
    assert!(
        size > huge.len() as i32,
        "the whole payload is kept: {size}"
    );
    assert!(error.to_lowercase().contains("too large"), "{error}");
}

#[tokio::test]
async fn a_relay_whose_publishes_all_fail_backs_off_instead_of_spinning() {
    let pool = engine_database().await;
    enqueue(&pool, &numbered("nowhere", 5, 50)).await;
    // Nothing listens on port 1: every publish times out after 20 ms.
    let mut unreachable = KafkaSettings::new("127.0.0.1:1");
    unreachable
        .overrides
        .insert("message.timeout.ms".into(), "20".into());
    let settings = RelaySettings {
        batch_size: 100,
        poll_interval: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
    };
    let relay = Relay::new(
        pool.clone(),
        unreachable.producer().unwrap(),
        "engine",
        settings,
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));

    // New rows (each with its NOTIFY) every 10 ms for 3 s: none may cut a backoff short.
    let mut added = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while tokio::time::Instant::now() < until {
        tick.tick().await;
        enqueue(&pool, &numbered("nowhere", 5, 1)).await;
        added += 1;
    }
    shutdown.cancel();
    let stats = running.await.unwrap();

    // 100 + 200 + 400 + 400 … ms of pauses fit about 9 batches into 3 s; waking on every
    // notification would have meant more than a hundred.
    assert!(
        stats.stalled_batches >= 3,
        "the relay kept trying: {stats:?}"
    );
    assert!(stats.batches <= 15, "the relay spun: {stats:?}");
    assert_eq!(
        backlog(&pool).await,
        50 + added,
        "every row stays for a later publish"
    );
}

#[tokio::test]
async fn a_quiet_commit_notifies_nobody_and_its_writer_wakes_the_relay() {
    let pool = engine_database().await;
    let topic = fresh_topic("quiet", 1).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener
        .listen(&format!("{}engine", outbox::NOTIFY_CHANNEL_PREFIX))
        .await
        .unwrap();
    let quiet_enqueue = |n: usize| {
        let pool = pool.clone();
        let messages = numbered(&topic, 1, n + 1)[n..].to_vec();
        async move {
            let mut tx = pool.begin().await.unwrap();
            outbox::wake::quiet(&mut tx).await.unwrap();
            outbox::enqueue(&mut tx, &messages).await.unwrap();
            tx.commit().await.unwrap();
        }
    };

    quiet_enqueue(0).await;
    let heard = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await;
    assert!(heard.is_err(), "a quiet commit notified: {heard:?}");
    enqueue(&pool, &numbered(&topic, 1, 2)[1..]).await;
    let heard = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await;
    assert!(matches!(heard, Ok(Ok(_))), "a plain commit did not notify");

    // A relay that polls hourly: after its start-up batch (rows 0 and 1), only
    // `wake::committed` can bring it row 2 in time.
    let reader = consumer(&topic).await;
    let relay = relay(&pool, 100, Duration::from_secs(3600)).await;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    collect_until(&reader, |m| distinct_numbers(m).len() == 2).await;
    quiet_enqueue(2).await;
    outbox::wake::committed();
    collect_until(&reader, |m| m.iter().any(|x| number(x) == 2)).await;
    shutdown.cancel();
    running.await.unwrap();
}
