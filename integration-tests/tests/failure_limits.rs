//! Messages that cannot be processed never block what comes after them: dead letters are
//! bounded, kept in Postgres first, and skipped even when the DLQ topic refuses them.

use std::sync::Arc;

use integration_tests::checkout::CheckoutWorld;
use integration_tests::{
    collect_until, consumer, engine_database, eventually, fresh_topic, group_lag, header, kafka,
};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureRecord;
use rdkafka::Message;
use saga_core::SagaStatus;
use saga_plumbing::consume::{self, ConsumerSettings, HandleError, Handled, MessageHandler};
use saga_plumbing::dlq::{self, DeadLetterQueue, DeadLetters};
use saga_plumbing::health::Health;
use schemas::{Envelope, MessageKind};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[tokio::test]
async fn an_oversized_trigger_becomes_a_bounded_dead_letter_and_blocks_nothing() {
    let world = CheckoutWorld::running(true).await;
    let request = world.request(500, 0, "WELCOME");
    let key = request.order_id.to_string();
    let dlq_reader = consumer(&world.topics().dlq()).await;
    // Bigger than the engine accepts, small enough for the broker; same key (so the same
    // partition) as the valid trigger published after it.
    let filler = "x".repeat(600 * 1024);
    let oversized = serde_json::to_vec(&Envelope::new(
        MessageKind::Trigger,
        serde_json::json!({ "filler": filler }),
    ))
    .unwrap();
    world.publish_raw(&oversized, &key, &[]).await;
    let saga_id = world.saga_id(&request);
    world.trigger(&request).await;
    world.wait_for_status(saga_id, SagaStatus::Completed).await;

    let (size, truncated, stored, published): (i32, bool, i32, bool) = sqlx::query_as(
        "SELECT payload_size, truncated, length(payload), published_at IS NOT NULL
         FROM dead_letters",
    )
    .fetch_one(&world.engine_pool)
    .await
    .unwrap();
    assert_eq!(size as usize, oversized.len());
    assert!(truncated);
    assert_eq!(stored as usize, dlq::PAYLOAD_LIMIT);
    assert!(published);

    let letters = collect_until(&dlq_reader, |m| !m.is_empty()).await;
    let letter = &letters[0];
    assert_eq!(letter.payload().unwrap().len(), dlq::PAYLOAD_LIMIT);
    assert_eq!(letter.key(), Some(key.as_bytes()));
    let size_header = header(letter, dlq::SOURCE_SIZE_HEADER);
    assert_eq!(size_header, Some(oversized.len().to_string()));
    assert_eq!(
        header(letter, dlq::TRUNCATED_HEADER).as_deref(),
        Some("true")
    );
    let error = header(letter, dlq::ERROR_HEADER).unwrap();
    assert!(error.contains("exceeds the limit"), "{error}");
    world.shutdown().await;
}

#[tokio::test]
async fn text_postgres_cannot_store_is_refused_by_validation() {
    let world = CheckoutWorld::running(true).await;
    let mut request = world.request(500, 0, "WELCOME");
    request.coupon_code = "NUL\u{0}CODE".into();
    world.trigger(&request).await;
    let error: String = eventually("the NUL trigger to be dead-lettered", || async {
        sqlx::query_scalar("SELECT error FROM dead_letters")
            .fetch_optional(&world.engine_pool)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(
        error,
        "`payload.coupon_code` holds a NUL character (\\u0000), which Postgres cannot store"
    );
    world.shutdown().await;
}

/// Refuses every message as poison.
struct RefuseAll(PgPool);

impl MessageHandler for RefuseAll {
    fn pool(&self) -> &PgPool {
        &self.0
    }

    async fn handle_in(
        &self,
        _: &mut PgConnection,
        _: &OwnedMessage,
    ) -> Result<Handled, HandleError> {
        Err(HandleError::Poison("refused by the test".into()))
    }
}

#[tokio::test]
async fn a_dead_letter_the_dlq_topic_refuses_is_kept_in_postgres_and_skipped() {
    let pool = engine_database().await;
    let kafka = kafka().await;
    let topic = fresh_topic("refused-dlq", 1).await;
    let producer = kafka.producer().unwrap();
    for n in 0..3 {
        let payload = format!("poison {n}");
        let record = FutureRecord::to(&topic).key("same").payload(&payload);
        producer
            .send(record, std::time::Duration::from_secs(10))
            .await
            .unwrap();
    }
    let group = format!("g-{}", Uuid::new_v4().simple());
    let dlq = DeadLetterQueue {
        producer,
        // No broker takes a topic by this name.
        topic: "no such topic!".into(),
        counter: DeadLetters::default(),
        store: pool.clone(),
        publish_attempts: 2,
        publish_timeout: std::time::Duration::from_secs(1),
    };
    let counter = dlq.counter.clone();
    let shutdown = CancellationToken::new();
    let input = consume::subscribe(&kafka, "refuse-all", &group, &[topic.as_str()]).unwrap();
    let stop = shutdown.clone();
    let refuse_all = Arc::new(RefuseAll(pool.clone()));
    let running = tokio::spawn(async move {
        let settings = ConsumerSettings::default();
        consume::run(
            "refuse-all",
            input,
            dlq,
            refuse_all,
            &settings,
            Health::default(),
            stop,
        )
        .await
    });

    eventually("all three to be skipped", || async {
        (group_lag(&group, &topic).await == 0).then_some(())
    })
    .await;
    let rows: Vec<(i64, Option<String>, bool)> = sqlx::query_as(
        r#"SELECT "offset", publish_error, published_at IS NULL FROM dead_letters ORDER BY 1"#,
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    for (offset, publish_error, unpublished) in rows {
        assert!(unpublished, "offset {offset}");
        assert!(publish_error.is_some(), "offset {offset}");
    }
    assert_eq!(counter.count(), 3);
    shutdown.cancel();
    running.await.unwrap();
}
