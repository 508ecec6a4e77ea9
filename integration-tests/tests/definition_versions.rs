//! Definition versions across a rolling deploy, through the real consumers, timer poller
//! and admin API:
//! - a process that lacks a saga's definition version never drops the saga's reply (it
//!   retries it without storing its offset) and leaves its timers alone; a process that
//!   registers the version later finishes the saga with that very reply;
//! - such a process is not ready while sagas of versions it lacks are in flight, and says
//!   which (`/readyz`), until none is left;
//! - a binary whose steps changed under the same version does not start.

use std::time::Duration;

use integration_tests::checkout::publish;
use integration_tests::{eventually, fresh_database, group_lag, services};
use saga_admin::{AdminServer, AdminSettings, AdminState};
use saga_core::{Definition, SagaDefinition, SagaStatus};
use saga_engine::{Engine, EngineSettings};
use saga_plumbing::Connections;
use schemas::{Envelope, MessageKind, Phase, ReplyOutcome};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
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
        // Timeouts fire only when a test makes them due.
        .timeout(Duration::from_secs(3600))
        .build()
        .unwrap()
}

/// One engine process of the test's deployment, with its admin API when asked.
struct Process {
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    admin: Option<String>,
}

impl Process {
    async fn start(deployment: &Deployment, versions: &[u32], with_admin: bool) -> Process {
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

    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            task.await.unwrap();
        }
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
    async fn new() -> Deployment {
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
            pool: integration_tests::engine_pool(&connections.database_url).await,
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

    /// Starts a saga with `id` in a process of its own that registers `versions`, waits
    /// until its first command is out (version 2), and stops that process.
    async fn started_by(&self, versions: &[u32], ids: &[&str]) -> Vec<Uuid> {
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

/// `/readyz` of `admin`: its status code and body.
async fn readiness(admin: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{admin}/readyz")).await.unwrap();
    (
        response.status().as_u16(),
        response.json::<Value>().await.unwrap(),
    )
}

/// The `engine` check's detail in a `/readyz` body.
fn engine_detail(body: &Value) -> String {
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["name"] == "engine")
        .map(|check| check["detail"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_process_lacking_a_version_in_flight_is_not_ready_and_names_it() {
    let deployment = Deployment::new().await;
    let sagas = deployment.started_by(&[1, 2], &["b-1", "b-2"]).await;

    let v1 = Process::start(&deployment, &[1], true).await;
    let admin = v1.admin.clone().unwrap();
    let (status, body) = readiness(&admin).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    let detail = engine_detail(&body);
    assert!(
        detail.contains("not registered in this process: order@2 (2 sagas)"),
        "{detail}"
    );

    // Once no saga of version 2 is in flight (another process finished them), the same
    // process looks again and becomes ready.
    sqlx::query("UPDATE sagas SET status = 'compensated' WHERE id = ANY($1)")
        .bind(&sagas)
        .execute(&deployment.pool)
        .await
        .unwrap();
    let body = eventually("the version-1 process to become ready", || async {
        let (status, body) = readiness(&admin).await;
        (status == 200).then_some(body)
    })
    .await;
    assert!(!engine_detail(&body).contains("order@2"), "{body}");
    let stored: Vec<(String, i32)> =
        sqlx::query_as("SELECT name, version FROM definition_versions ORDER BY version")
            .fetch_all(&deployment.pool)
            .await
            .unwrap();
    assert_eq!(stored, [("order".into(), 1), ("order".into(), 2)]);
    v1.stop().await;
}

#[tokio::test]
async fn changed_steps_under_the_same_version_refuse_to_start() {
    let deployment = Deployment::new().await;
    let build = |definition: SagaDefinition| {
        Engine::builder(deployment.connections.clone(), deployment.settings.clone())
            .register(definition)
            .build()
    };
    build(order(1)).await.unwrap();
    let changed = Definition::<Order>::new("order", 1)
        .trigger("order.requested", |o| o.id.clone())
        .tcc("funds", "wallet", |_| json!({}))
        .step("points", "loyalty", |_| json!({}), |_| json!({}))
        .build()
        .unwrap();
    let (stored, ours) = (order(1).fingerprint(), changed.fingerprint());
    assert_ne!(stored, ours);
    let Err(error) = build(changed).await else {
        panic!("an engine with changed steps under order@1 started");
    };
    assert!(
        error.to_string().ends_with(&format!(
            "definition order@1 changed its steps without a version bump \
             (stored fingerprint {stored}, this binary {ours})"
        )),
        "{error}"
    );
    let kept: String = sqlx::query_scalar(
        "SELECT fingerprint FROM definition_versions WHERE name = 'order' AND version = 1",
    )
    .fetch_one(&deployment.pool)
    .await
    .unwrap();
    assert_eq!(kept, stored, "the stored fingerprint stays");
    // The same steps again (a restart, another replica) start as before.
    build(order(1)).await.unwrap();
}
