//! Group commit in the consumer lanes: the messages a lane has queued are applied in one
//! transaction; a poison message among them is dead-lettered in its place without losing
//! its neighbours' writes, and a retryable failure commits the messages before it and
//! handles the rest one by one, in order, each exactly once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use integration_tests::{engine_database, eventually, fresh_topic, group_lag, kafka};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureRecord;
use rdkafka::Message;
use saga_plumbing::consume::{self, ConsumerSettings, HandleError, Handled, MessageHandler};
use saga_plumbing::dlq::{DeadLetterQueue, DeadLetters};
use saga_plumbing::health::Health;
use saga_plumbing::Error;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Writes one row per message, with the id of the transaction that wrote it. A payload
/// `poison` is refused after writing; `flaky` fails retryably the first time it is seen.
struct Writer {
    pool: PgPool,
    seen_flaky: Mutex<HashSet<i64>>,
}

impl MessageHandler for Writer {
    fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn handle_in(
        &self,
        tx: &mut PgConnection,
        message: &OwnedMessage,
    ) -> Result<Handled, HandleError> {
        let payload = std::str::from_utf8(message.payload().unwrap_or_default()).unwrap();
        sqlx::query("INSERT INTO grouped (position, payload, tx) VALUES ($1, $2, txid_current())")
            .bind(message.offset())
            .bind(payload)
            .execute(&mut *tx)
            .await
            .map_err(|e| HandleError::Infra(e.into()))?;
        match payload {
            "poison" => Err(HandleError::Poison("poison by design".into())),
            "flaky" if self.seen_flaky.lock().unwrap().insert(message.offset()) => Err(
                HandleError::Infra(Error::Deferred("flaky by design".into())),
            ),
            _ => Ok(Handled::Done),
        }
    }
}

#[tokio::test]
async fn a_lane_commits_its_queue_together_and_a_bad_message_costs_only_itself() {
    let pool = engine_database().await;
    sqlx::query(
        "CREATE TABLE grouped (position bigint NOT NULL, payload text NOT NULL,
                               tx bigint NOT NULL, written bigserial)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let topic = fresh_topic("grouped", 1).await;
    let group = format!("g-{}", Uuid::new_v4().simple());

    // Queued before the consumer starts, so the lane finds many at once.
    let mut payloads: Vec<String> = (0..60).map(|n| format!("ok-{n}")).collect();
    payloads[10] = "poison".into();
    payloads[25] = "flaky".into();
    payloads[40] = "poison".into();
    let producer = kafka().await.producer().unwrap();
    for payload in &payloads {
        let record = FutureRecord::to(&topic).key("k").payload(payload);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }

    let shutdown = CancellationToken::new();
    let writer = Arc::new(Writer {
        pool: pool.clone(),
        seen_flaky: Mutex::new(HashSet::new()),
    });
    let settings = ConsumerSettings {
        lanes: 1,
        max_batch: 16,
        retry_initial_backoff: Duration::from_millis(10),
        ..ConsumerSettings::default()
    };
    let dlq = DeadLetterQueue {
        producer: kafka().await.producer().unwrap(),
        topic: format!("{topic}.dlq"),
        counter: DeadLetters::default(),
        store: pool.clone(),
        publish_attempts: 1,
        publish_timeout: Duration::from_secs(5),
    };
    let input = consume::subscribe(&kafka().await, "grouped", &group, &[topic.as_str()]).unwrap();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        consume::run(
            "grouped",
            input,
            dlq,
            writer,
            &settings,
            Health::default(),
            stop,
        )
        .await
    });

    eventually("every offset to be committed", || async {
        (group_lag(&group, &topic).await == 0).then_some(())
    })
    .await;
    shutdown.cancel();
    task.await.unwrap();

    // Every good message written exactly once, in offset order; poison rolled back.
    let rows: Vec<(i64, String, i64)> =
        sqlx::query_as("SELECT position, payload, tx FROM grouped ORDER BY written")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected: Vec<(i64, String)> = payloads
        .iter()
        .enumerate()
        .filter(|(_, p)| *p != "poison")
        .map(|(n, p)| (n as i64, p.clone()))
        .collect();
    let written: Vec<(i64, String)> = rows.iter().map(|(o, p, _)| (*o, p.clone())).collect();
    assert_eq!(written, expected);

    // Far fewer transactions than messages: the lane grouped them.
    let transactions: HashSet<i64> = rows.iter().map(|(_, _, tx)| *tx).collect();
    assert!(
        transactions.len() <= 20,
        "{} transactions for {} messages",
        transactions.len(),
        rows.len()
    );

    // The two poison messages are kept as dead letters, in their order.
    let dead: Vec<(i64,)> =
        sqlx::query_as("SELECT \"offset\" FROM dead_letters WHERE topic = $1 ORDER BY id")
            .bind(&topic)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(dead, vec![(10,), (40,)]);
}
