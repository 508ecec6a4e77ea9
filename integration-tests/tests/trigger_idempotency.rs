//! Triggers are deduplicated by their idempotency key, through the real trigger consumer:
//! the same key with the same payload (whatever its key order or whitespace) is a quiet
//! duplicate; the same key with another payload is dead-lettered and announced on the
//! lifecycle topic while the saga keeps its first payload; and two triggers with different
//! keys both start sagas even when they carry the same `message_id`.

use integration_tests::checkout::publish;
use integration_tests::{collect_until, consumer, eventually, fresh_database, group_lag};
use rdkafka::producer::FutureProducer;
use saga_core::{Definition, SagaDefinition};
use saga_engine::idempotency::CONFLICT_ERROR;
use saga_engine::{Engine, EngineSettings};
use saga_plumbing::Connections;
use schemas::{Envelope, MessageKind};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Serialize, Deserialize)]
struct Order {
    id: String,
    cents: i64,
}

fn order() -> SagaDefinition {
    Definition::<Order>::new("order", 1)
        .trigger("order.requested", |o| o.id.clone())
        .tcc("funds", "wallet", |o| json!({ "cents": o.cents }))
        .build()
        .unwrap()
}

/// One engine on a database, topic prefix and consumer groups of its own.
struct World {
    connections: Connections,
    settings: EngineSettings,
    pool: PgPool,
    producer: FutureProducer,
    shutdown: CancellationToken,
    engine: JoinHandle<()>,
}

impl World {
    async fn start() -> World {
        let services = integration_tests::services().await;
        let prefix = format!("ti{}.", Uuid::new_v4().simple());
        let connections = Connections::new(fresh_database().await, services.kafka_brokers.clone())
            .with_topic_prefix(prefix.clone());
        let mut settings = EngineSettings {
            group: format!("{prefix}engine"),
            partitions: 2,
            ..EngineSettings::default()
        };
        settings.consumer.lanes = 2;
        let engine = Engine::builder(connections.clone(), settings.clone())
            .register(order())
            .build()
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let engine = tokio::spawn(async move { engine.run(stop).await.unwrap() });
        World {
            pool: integration_tests::engine_pool(&connections.database_url).await,
            producer: connections.kafka.producer().unwrap(),
            connections,
            settings,
            shutdown,
            engine,
        }
    }

    /// Publishes a trigger envelope whose payload is the JSON text `payload`, byte for byte,
    /// with Kafka key `key`; returns the envelope's message id.
    async fn trigger_raw(&self, key: &str, payload: &str, message_id: Option<Uuid>) -> Uuid {
        let mut envelope = Envelope::new(MessageKind::Trigger, "@payload@");
        if let Some(id) = message_id {
            envelope.message_id = id;
        }
        let text = serde_json::to_string(&envelope)
            .unwrap()
            .replace("\"@payload@\"", payload);
        let topic = self.connections.topics.trigger("order.requested");
        publish(&self.producer, &topic, key, text.as_bytes(), &[]).await;
        envelope.message_id
    }

    /// Waits until the engine's trigger consumer group has committed every trigger.
    async fn triggers_consumed(&self) {
        let group = format!("{}.triggers", self.settings.group);
        let topic = self.connections.topics.trigger("order.requested");
        eventually("every trigger to be consumed", || async {
            (group_lag(&group, &topic).await == 0).then_some(())
        })
        .await;
    }

    /// (input, version) of saga `saga`, once it exists.
    async fn saga(&self, saga: Uuid) -> (Value, i64) {
        eventually(&format!("saga {saga} to start"), || async {
            sqlx::query_as("SELECT input, version FROM sagas WHERE id = $1")
                .bind(saga)
                .fetch_optional(&self.pool)
                .await
                .unwrap()
        })
        .await
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.engine.await.unwrap();
    }
}

/// SHA-256 hex of `text`, computed by Postgres (independently of the engine's code).
async fn sha256(pool: &PgPool, text: &str) -> String {
    sqlx::query_scalar("SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex')")
        .bind(text)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_same_payload_again_is_a_quiet_duplicate_whatever_its_layout() {
    let world = World::start().await;
    let saga = order().saga_id("o-1");
    world
        .trigger_raw("o-1", r#"{"id":"o-1","cents":100}"#, None)
        .await;
    let (input, version) = world.saga(saga).await;
    assert_eq!(input, json!({"id": "o-1", "cents": 100}));
    // The same content with its keys in another order and other whitespace.
    world
        .trigger_raw("o-1", "{ \"cents\" : 100,\n  \"id\" : \"o-1\" }", None)
        .await;
    world.triggers_consumed().await;

    assert_eq!(world.count("SELECT count(*) FROM sagas").await, 1);
    assert_eq!(world.count("SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(
        world.saga(saga).await.1,
        version,
        "the duplicate changed nothing"
    );
    let stored: Option<String> = sqlx::query_scalar("SELECT payload_hash FROM sagas WHERE id = $1")
        .bind(saga)
        .fetch_one(&world.pool)
        .await
        .unwrap();
    assert_eq!(
        stored.as_deref(),
        Some(
            sha256(&world.pool, r#"{"cents":100,"id":"o-1"}"#)
                .await
                .as_str()
        ),
        "the saga keeps the hash of its trigger's canonical JSON"
    );
    world.stop().await;
}

#[tokio::test]
async fn the_same_key_with_another_payload_is_dead_lettered_and_announced() {
    let world = World::start().await;
    let lifecycle = consumer(&world.connections.topics.lifecycle()).await;
    let saga = order().saga_id("o-2");
    world
        .trigger_raw("o-2", r#"{"id":"o-2","cents":100}"#, None)
        .await;
    let (_, version) = world.saga(saga).await;
    let refused = world
        .trigger_raw("o-2", r#"{"id":"o-2","cents":999}"#, None)
        .await;

    let (topic, error): (String, String) =
        eventually("the conflicting trigger's dead letter", || {
            let pool = world.pool.clone();
            async move {
                sqlx::query_as("SELECT topic, error FROM dead_letters")
                    .fetch_optional(&pool)
                    .await
                    .unwrap()
            }
        })
        .await;
    assert_eq!(error, CONFLICT_ERROR);
    assert_eq!(error, "idempotency key reused with a different payload");
    assert_eq!(topic, world.connections.topics.trigger("order.requested"));
    let (input, now) = world.saga(saga).await;
    assert_eq!(
        input,
        json!({"id": "o-2", "cents": 100}),
        "the first payload stays"
    );
    assert_eq!(now, version, "the conflicting trigger changed nothing");

    // A later saga's start, as a marker: once it is on the lifecycle topic, the conflict
    // (committed before it) has been relayed too.
    let marker = order().saga_id("o-3");
    world
        .trigger_raw("o-3", r#"{"id":"o-3","cents":1}"#, None)
        .await;
    let is_event = |m: &rdkafka::message::OwnedMessage, saga: Uuid, event: &str| {
        let envelope = integration_tests::json_payload(m);
        envelope["saga_id"] == saga.to_string() && envelope["payload"]["event"] == event
    };
    let messages = collect_until(&lifecycle, |messages| {
        let conflict = messages
            .iter()
            .any(|m| is_event(m, saga, "trigger_conflict"));
        let marked = messages.iter().any(|m| is_event(m, marker, "started"));
        conflict && marked
    })
    .await;
    let conflicts: Vec<Value> = messages
        .iter()
        .filter(|m| is_event(m, saga, "trigger_conflict"))
        .map(|m| integration_tests::json_payload(m)["payload"].clone())
        .collect();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let event = &conflicts[0];
    assert_eq!(event["definition"], "order");
    assert_eq!(event["idempotency_key"], "o-2");
    assert_eq!(event["message_id"], refused.to_string());
    assert_eq!(
        event["stored_payload_hash"],
        sha256(&world.pool, r#"{"cents":100,"id":"o-2"}"#).await
    );
    assert_eq!(
        event["payload_hash"],
        sha256(&world.pool, r#"{"cents":999,"id":"o-2"}"#).await
    );
    assert_eq!(world.count("SELECT count(*) FROM dead_letters").await, 1);
    assert_eq!(world.count("SELECT count(*) FROM sagas").await, 2);
    world.stop().await;
}

#[tokio::test]
async fn different_keys_start_two_sagas_even_with_one_message_id() {
    let world = World::start().await;
    let shared = Uuid::new_v4();
    world
        .trigger_raw("o-4", r#"{"id":"o-4","cents":40}"#, Some(shared))
        .await;
    world
        .trigger_raw("o-5", r#"{"id":"o-5","cents":50}"#, Some(shared))
        .await;
    let (first, _) = world.saga(order().saga_id("o-4")).await;
    let (second, _) = world.saga(order().saga_id("o-5")).await;
    assert_eq!(first["cents"], 40);
    assert_eq!(second["cents"], 50);
    world.triggers_consumed().await;
    assert_eq!(world.count("SELECT count(*) FROM sagas").await, 2);
    assert_eq!(world.count("SELECT count(*) FROM dead_letters").await, 0);
    world.stop().await;
}
