//! A rolling deploy of definition `order` for the definition-version tests: one database
//! and topic prefix, engine processes that each register chosen versions of `order`, and
//! helpers to trigger sagas, reply as the participant and wait for a saga's row.

use std::time::Duration;

use saga_admin::{AdminServer, AdminSettings, AdminState};
use saga_core::{Definition, SagaDefinition};
use saga_engine::{Engine, EngineSettings};
use saga_plumbing::Connections;
use schemas::{Envelope, MessageKind, Phase, ReplyOutcome};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::checkout::publish;
use crate::{engine_pool, eventually, fresh_database, services};

/// The input of `order`.
#[derive(Serialize, Deserialize)]
pub struct Order {
    /// The business key.
    pub id: String,
}

/// Definition `order` at `version`: one TCC step, `funds` by participant `wallet`, whose
/// reply timeout fires only when a test makes it due.
pub fn order(version: u32) -> SagaDefinition {
    Definition::<Order>::new("order", version)
        .trigger("order.requested", |o| o.id.clone())
        .tcc("funds", "wallet", |_| json!({}))
        // Timeouts fire only when a test makes them due.
        .timeout(Duration::from_secs(3600))
        .build()
        .unwrap()
}

/// One engine process of the test's deployment, with its admin API when asked.
pub struct Process {
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// The admin API's base URL, when it was asked for.
    pub admin: Option<String>,
}

impl Process {
    /// Starts an engine that registers `order` at each of `versions`, with its admin API
    /// on a free port when `with_admin`.
    pub async fn start(deployment: &Deployment, versions: &[u32], with_admin: bool) -> Process {
        let mut builder =
            Engine::builder(deployment.connections.clone(), deployment.settings.clone());
        for version in versions {
            builder = builder.register(order(*version));
        }
        let engine = builder.build().await.unwrap();
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut admin = None;
        if with_admin {
            let settings = AdminSettings {
                addr: "127.0.0.1:0".parse().unwrap(),
                ..AdminSettings::default()
            };
            let state = AdminState::for_engine(&engine, &settings).unwrap();
            let server = AdminServer::bind(&settings, state).await.unwrap();
            admin = Some(format!("http://{}", server.local_addr()));
            let stop = shutdown.clone();
            tasks.push(tokio::spawn(
                async move { server.serve(stop).await.unwrap() },
            ));
        }
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move { engine.run(stop).await.unwrap() }));
        Process {
            shutdown,
            tasks,
            admin,
        }
    }

    /// Stops the engine (and its admin API) and waits for them.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

/// (definition version, saga version, status) of a saga, once it exists.
pub async fn saga_row(pool: &PgPool, saga: Uuid) -> Option<(i32, i64, String)> {
    sqlx::query_as("SELECT definition_version, version, status FROM sagas WHERE id = $1")
        .bind(saga)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// One database and topic prefix that the test's engine processes share, one after the
/// other or side by side, as in a rolling deploy.
pub struct Deployment {
    /// Where the processes connect, with the deployment's topic prefix.
    pub connections: Connections,
    /// The engine settings every process runs with (quick version checks and timers).
    pub settings: EngineSettings,
    /// A pool on the engine schema.
    pub pool: PgPool,
    producer: rdkafka::producer::FutureProducer,
}

impl Deployment {
    /// A fresh database and topic prefix.
    pub async fn new() -> Deployment {
        let services = services().await;
        let prefix = format!("v{}.", Uuid::new_v4().simple());
        let connections = Connections::new(fresh_database().await, services.kafka_brokers.clone())
            .with_topic_prefix(prefix.clone());
        let mut settings = EngineSettings {
            group: format!("{prefix}engine"),
            partitions: 2,
            version_check_interval: Duration::from_millis(200),
            ..EngineSettings::default()
        };
        settings.consumer.lanes = 2;
        settings.consumer.retry_max_backoff = Duration::from_millis(200);
        settings.timers.poll_interval = Duration::from_millis(20);
        Deployment {
            pool: engine_pool(&connections.database_url).await,
            producer: connections.kafka.producer().unwrap(),
            connections,
            settings,
        }
    }

    async fn trigger(&self, id: &str) {
        let envelope = Envelope::new(MessageKind::Trigger, json!({ "id": id }));
        let topic = self.connections.topics.trigger("order.requested");
        let payload = serde_json::to_vec(&envelope).unwrap();
        publish(&self.producer, &topic, id, &payload, &[]).await;
    }

    /// Publishes the participant's reply to `phase` of `funds`; returns its message id.
    pub async fn reply(&self, saga: Uuid, phase: Phase, attempt: u32) -> Uuid {
        let envelope = Envelope::new(MessageKind::Reply, ReplyOutcome::ok())
            .for_saga(saga)
            .for_step("funds", phase, attempt);
        let payload = serde_json::to_vec(&envelope).unwrap();
        let topic = self.connections.topics.replies();
        publish(&self.producer, &topic, &saga.to_string(), &payload, &[]).await;
        envelope.message_id
    }

    /// Waits until `check(definition version, saga version, status)` holds for `saga`.
    pub async fn wait_for(&self, what: &str, saga: Uuid, check: impl Fn(i32, i64, &str) -> bool) {
        eventually(what, || async {
            saga_row(&self.pool, saga)
                .await
                .filter(|(definition, version, status)| check(*definition, *version, status))
                .map(|_| ())
        })
        .await;
    }

    /// Starts a saga with `id` in a process of its own that registers `versions`, waits
    /// until its first command is out (version 2), and stops that process.
    pub async fn started_by(&self, versions: &[u32], ids: &[&str]) -> Vec<Uuid> {
        let process = Process::start(self, versions, false).await;
        let newest = *versions.iter().max().unwrap();
        let mut sagas = Vec::new();
        for id in ids {
            let saga = order(newest).saga_id(id);
            self.trigger(id).await;
            self.wait_for(&format!("{id} to start"), saga, |definition, version, _| {
                definition == newest as i32 && version == 2
            })
            .await;
            sagas.push(saga);
        }
        process.stop().await;
        sagas
    }
}
