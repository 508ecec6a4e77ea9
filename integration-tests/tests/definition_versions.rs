//! A process that does not know a saga's definition version leaves the saga alone: its
//! replies and timers go through the real Kafka consumers and the timer poller, change
//! nothing, and the saga finishes once a process that knows the version runs again.

use std::time::Duration;

use integration_tests::checkout::publish;
use integration_tests::{eventually, fresh_database, group_lag, services};
use saga_core::{Definition, SagaDefinition, SagaStatus};
use saga_engine::{Engine, EngineSettings};
use saga_plumbing::Connections;
use schemas::{Envelope, MessageKind, Phase, ReplyOutcome};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Serialize, Deserialize)]
struct Order {
    id: String,
}

fn order(version: u32) -> SagaDefinition {
    Definition::<Order>::new("order", version)
        .trigger("order.requested", |o| o.id.clone())
        .tcc("funds", "wallet", |_| json!({}))
        .build()
        .unwrap()
}

/// One engine process of the test's deployment.
struct Process {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Process {
    async fn start(
        connections: &Connections,
        settings: &EngineSettings,
        versions: &[u32],
    ) -> Process {
        let mut builder = Engine::builder(connections.clone(), settings.clone());
        for version in versions {
            builder = builder.register(order(*version));
        }
        let engine = builder.build().await.unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move { engine.run(stop).await.unwrap() });
        Process { shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }
}

/// (definition version, saga version, status) of a saga, once it exists.
async fn saga_row(pool: &PgPool, saga: Uuid) -> Option<(i32, i64, String)> {
    sqlx::query_as("SELECT definition_version, version, status FROM sagas WHERE id = $1")
        .bind(saga)
        .fetch_optional(pool)
        .await
        .unwrap()
}

struct Deployment {
    connections: Connections,
    settings: EngineSettings,
    pool: PgPool,
    producer: rdkafka::producer::FutureProducer,
}

impl Deployment {
    async fn trigger(&self, id: &str) {
        let envelope = Envelope::new(MessageKind::Trigger, json!({ "id": id }));
        let topic = self.connections.topics.trigger("order.requested");
        let payload = serde_json::to_vec(&envelope).unwrap();
        publish(&self.producer, &topic, id, &payload, &[]).await;
    }

    /// Publishes the participant's reply to `phase` of `funds`; returns its message id.
    async fn reply(&self, saga: Uuid, phase: Phase, attempt: u32) -> Uuid {
        let envelope = Envelope::new(MessageKind::Reply, ReplyOutcome::ok())
            .for_saga(saga)
            .for_step("funds", phase, attempt);
        let payload = serde_json::to_vec(&envelope).unwrap();
        let topic = self.connections.topics.replies();
        publish(&self.producer, &topic, &saga.to_string(), &payload, &[]).await;
        envelope.message_id
    }

    async fn wait_for(&self, what: &str, saga: Uuid, check: impl Fn(i32, i64, &str) -> bool) {
        eventually(what, || async {
            saga_row(&self.pool, saga)
                .await
                .filter(|(definition, version, status)| check(*definition, *version, status))
                .map(|_| ())
        })
        .await;
    }
}

#[tokio::test]
async fn replies_and_timers_of_an_unknown_version_wait_for_a_process_that_knows_it() {
    let services = services().await;
    let prefix = format!("v{}.", Uuid::new_v4().simple());
    let connections = Connections::new(fresh_database().await, services.kafka_brokers.clone())
        .with_topic_prefix(prefix.clone());
    let mut settings = EngineSettings {
        group: format!("{prefix}engine"),
        partitions: 2,
        ..EngineSettings::default()
    };
    settings.consumer.lanes = 2;
    settings.timers.poll_interval = Duration::from_millis(20);
    settings.timers.unknown_definition_delay = Duration::from_secs(3);
    let v1 = Process::start(&connections, &settings, &[1]).await;
    let pool = integration_tests::engine_pool(&connections.database_url).await;
    let deployment = Deployment {
        producer: connections.kafka.producer().unwrap(),
        connections,
        settings,
        pool,
    };

    // A version-1 process starts the saga: Started, CommandSent(try).
    let saga = order(1).saga_id("o-1");
    deployment.trigger("o-1").await;
    deployment
        .wait_for(
            "o-1 started by version 1",
            saga,
            |definition, version, _| definition == 1 && version == 2,
        )
        .await;
    v1.stop().await;

    // Only version 2 runs now. It starts sagas of its own...
    let v2 = Process::start(&deployment.connections, &deployment.settings, &[2]).await;
    let other = order(2).saga_id("o-2");
    deployment.trigger("o-2").await;
    deployment
        .wait_for("o-2 started by version 2", other, |definition, _, _| {
            definition == 2
        })
        .await;
    // ...but consumes the reply to o-1's try without touching o-1 or recording it.
    let skipped = deployment.reply(saga, Phase::Try, 1).await;
    let replies_group = format!("{}.replies", deployment.settings.group);
    let replies_topic = deployment.connections.topics.replies();
    eventually("the version-2 process to consume the reply", || async {
        (group_lag(&replies_group, &replies_topic).await == 0).then_some(())
    })
    .await;
    assert_eq!(
        saga_row(&deployment.pool, saga).await,
        Some((1, 2, "running".into()))
    );
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox WHERE message_id = $1")
        .bind(skipped)
        .fetch_one(&deployment.pool)
        .await
        .unwrap();
    assert_eq!(
        recorded, 0,
        "a skipped reply must stay unseen for the inbox"
    );

    // The try's timeout comes due; the version-2 poller puts it back instead of firing it.
    sqlx::query("UPDATE timers SET fire_at = now() - interval '1 second' WHERE saga_id = $1")
        .bind(saga)
        .execute(&deployment.pool)
        .await
        .unwrap();
    eventually("the version-2 poller to postpone the timer", || async {
        let postponed: Option<bool> = sqlx::query_scalar(
            "SELECT fire_at > now() + interval '1 second' FROM timers WHERE saga_id = $1",
        )
        .bind(saga)
        .fetch_optional(&deployment.pool)
        .await
        .unwrap();
        postponed.unwrap_or(false).then_some(())
    })
    .await;
    assert_eq!(
        saga_row(&deployment.pool, saga).await,
        Some((1, 2, "running".into()))
    );
    v2.stop().await;

    // A process that knows both versions fires the postponed timer: the try goes out again
    // as attempt 2, and the saga finishes on its replies.
    let both = Process::start(&deployment.connections, &deployment.settings, &[1, 2]).await;
    deployment
        .wait_for("the try to be re-sent", saga, |_, version, _| version == 3)
        .await;
    deployment.reply(saga, Phase::Try, 2).await;
    deployment
        .wait_for("the confirm to be sent", saga, |_, version, _| version == 5)
        .await;
    deployment.reply(saga, Phase::Confirm, 1).await;
    deployment
        .wait_for("o-1 to complete", saga, |definition, _, status| {
            definition == 1 && status == SagaStatus::Completed.as_str()
        })
        .await;
    let attempts: Vec<String> = sqlx::query_scalar(
        "SELECT (data->>'phase') || ':' || (data->>'attempt') FROM saga_events
         WHERE saga_id = $1 AND event_type = 'CommandSent' ORDER BY seq",
    )
    .bind(saga)
    .fetch_all(&deployment.pool)
    .await
    .unwrap();
    assert_eq!(attempts, ["try:1", "try:2", "confirm:1"]);
    both.stop().await;
}
