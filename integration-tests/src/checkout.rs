//! A checkout deployment of its own for one test: fresh database, fresh topic prefix,
//! the three domain services and an engine, each of which the test can stop and restart.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use saga_engine::db::{self, DbSettings};
use saga_engine::runtime::{Engine, EngineSettings, Topics};
use saga_engine::saga::SagaDefinition;
use saga_schemas::{CheckoutRequested, Envelope, MessageKind};
use sagas::checkout::{checkout, TRIGGER_TOPIC};
use sagas::domains::{balance, coupons, points, Domain};
use sagas::services::Deployment;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{eventually, fresh_database, services};

/// The one user of every test, with 10,000 cents and 100 points.
pub const USER: i64 = 1;
/// Starting balance of [`USER`].
pub const START_CENTS: i64 = 10_000;
/// Starting points of [`USER`].
pub const START_POINTS: i64 = 100;

/// A running component that can be stopped.
struct Running {
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

/// One test's checkout world.
pub struct CheckoutWorld {
    /// Where everything is.
    pub deployment: Deployment,
    /// Engine schema.
    pub engine_pool: PgPool,
    /// Domain schemas.
    pub pools: BTreeMap<&'static str, PgPool>,
    /// Command topic overrides for the engine (participant → topic).
    pub command_overrides: BTreeMap<String, String>,
    /// Changes the test makes to the checkout definition before the engine starts.
    pub tune_definition: fn(&mut SagaDefinition),
    engine: Option<Running>,
    participants: BTreeMap<&'static str, Running>,
    producer: FutureProducer,
}

impl CheckoutWorld {
    /// A migrated, seeded world with nothing running yet.
    pub async fn new(parallel: bool) -> Self {
        let services = services().await;
        let deployment = Deployment {
            database_url: fresh_database().await,
            kafka_brokers: services.kafka_brokers.clone(),
            topic_prefix: format!("t{}.", Uuid::new_v4().simple()),
            parallel,
        };
        deployment.migrate().await.unwrap();
        let engine_pool = db::connect(&DbSettings::new(deployment.database_url.clone(), "engine"))
            .await
            .unwrap();
        let mut pools = BTreeMap::new();
        for domain in Domain::ALL {
            let pool = sagas::domains::connect(&deployment.database_url, domain)
                .await
                .unwrap();
            pools.insert(domain.name(), pool);
        }
        balance::seed_accounts(&pools["balance"], &[(USER, START_CENTS)])
            .await
            .unwrap();
        points::seed_points(&pools["points"], &[(USER, START_POINTS)])
            .await
            .unwrap();
        let later = chrono::Utc::now() + chrono::Duration::days(1);
        let earlier = chrono::Utc::now() - chrono::Duration::days(1);
        coupons::seed_coupons(
            &pools["coupons"],
            &[
                ("WELCOME", later),
                ("SPRING", later),
                ("TAKEN", later),
                ("OLD", earlier),
            ],
        )
        .await
        .unwrap();
        sqlx::query("UPDATE coupons SET used_by_order = $1, used_at = now() WHERE code = 'TAKEN'")
            .bind(Uuid::new_v4())
            .execute(&pools["coupons"])
            .await
            .unwrap();
        let producer = deployment.kafka().producer().unwrap();
        CheckoutWorld {
            deployment,
            engine_pool,
            pools,
            command_overrides: BTreeMap::new(),
            tune_definition: |_| {},
            engine: None,
            participants: BTreeMap::new(),
            producer,
        }
    }

    /// A world with the engine and all three services running.
    pub async fn running(parallel: bool) -> Self {
        let mut world = CheckoutWorld::new(parallel).await;
        for domain in Domain::ALL {
            world.start_participant(domain).await;
        }
        world.start_engine().await;
        world
    }

    /// Topic names of this world.
    pub fn topics(&self) -> Topics {
        self.deployment.topics()
    }

    /// Starts the engine (again).
    pub async fn start_engine(&mut self) {
        assert!(self.engine.is_none(), "engine already running");
        let settings = EngineSettings {
            topics: Topics {
                command_overrides: self.command_overrides.clone(),
                ..self.topics()
            },
            group: format!("{}saga-engine", self.deployment.topic_prefix),
            lanes: 2,
            timer_interval: Duration::from_millis(20),
            ..EngineSettings::new(
                self.deployment.database_url.clone(),
                self.deployment.kafka_brokers.clone(),
            )
        };
        let mut definition = checkout(self.deployment.parallel);
        (self.tune_definition)(&mut definition);
        let engine = Engine::builder(settings)
            .register(definition)
            .build()
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { engine.run(shutdown).await.unwrap() }
        });
        self.engine = Some(Running {
            shutdown,
            tasks: vec![task],
        });
    }

    /// Stops the engine and waits until it has stopped.
    pub async fn stop_engine(&mut self) {
        self.engine.take().expect("engine not running").stop().await;
    }

    /// Starts a domain service (again).
    pub async fn start_participant(&mut self, domain: Domain) {
        let shutdown = CancellationToken::new();
        let (_, tasks) = self
            .deployment
            .start_participant(domain, shutdown.clone())
            .await
            .unwrap();
        self.participants
            .insert(domain.name(), Running { shutdown, tasks });
    }

    /// A checkout request of [`USER`] with a fresh order id.
    pub fn request(&self, amount_cents: i64, points: i64, coupon: &str) -> CheckoutRequested {
        CheckoutRequested {
            order_id: Uuid::new_v4(),
            user_id: USER,
            amount_cents,
            points,
            coupon_code: coupon.into(),
        }
    }

    /// The saga a request starts.
    pub fn saga_id(&self, request: &CheckoutRequested) -> Uuid {
        checkout(self.deployment.parallel).saga_id(&request.order_id.to_string())
    }

    /// Publishes `request` as a trigger envelope; returns the envelope's message id.
    pub async fn trigger(&self, request: &CheckoutRequested) -> Uuid {
        let envelope = Envelope::new(MessageKind::Trigger, request);
        self.publish_raw(
            &serde_json::to_vec(&envelope).unwrap(),
            &request.order_id.to_string(),
            &[],
        )
        .await;
        envelope.message_id
    }

    /// Publishes raw bytes on the trigger topic, with headers.
    pub async fn publish_raw(&self, payload: &[u8], key: &str, headers: &[(&str, &str)]) {
        publish(
            &self.producer,
            &self.topics().trigger(TRIGGER_TOPIC),
            key,
            payload,
            headers,
        )
        .await;
    }

    /// Waits until the saga's status is `status`.
    pub async fn wait_for_status(&self, saga_id: Uuid, status: &str) {
        let pool = &self.engine_pool;
        let what = format!("saga {saga_id} to be {status}");
        eventually(&what, || async {
            let current: Option<String> =
                sqlx::query_scalar("SELECT status FROM sagas WHERE id = $1")
                    .bind(saga_id)
                    .fetch_optional(pool)
                    .await
                    .unwrap();
            (current.as_deref() == Some(status)).then_some(())
        })
        .await;
    }

    /// (available, frozen, spent) of [`USER`].
    pub async fn account(&self) -> (i64, i64, i64) {
        sqlx::query_as("SELECT available, frozen, spent FROM accounts WHERE user_id = $1")
            .bind(USER)
            .fetch_one(&self.pools["balance"])
            .await
            .unwrap()
    }

    /// Points of [`USER`].
    pub async fn points(&self) -> i64 {
        sqlx::query_scalar("SELECT balance FROM points WHERE user_id = $1")
            .bind(USER)
            .fetch_one(&self.pools["points"])
            .await
            .unwrap()
    }

    /// The order using coupon `code`, if any.
    pub async fn coupon_holder(&self, code: &str) -> Option<Uuid> {
        sqlx::query_scalar("SELECT used_by_order FROM coupons WHERE code = $1")
            .bind(code)
            .fetch_one(&self.pools["coupons"])
            .await
            .unwrap()
    }

    /// Event types of a saga, in order.
    pub async fn events(&self, saga_id: Uuid) -> Vec<String> {
        sqlx::query_scalar("SELECT event_type FROM saga_events WHERE saga_id = $1 ORDER BY seq")
            .bind(saga_id)
            .fetch_all(&self.engine_pool)
            .await
            .unwrap()
    }

    /// Stops everything that runs.
    pub async fn shutdown(mut self) {
        if let Some(engine) = self.engine.take() {
            engine.stop().await;
        }
        for (_, participant) in std::mem::take(&mut self.participants) {
            participant.stop().await;
        }
    }
}

/// Publishes one message and waits for the broker's acknowledgement.
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: &[(&str, &str)],
) {
    let mut owned = rdkafka::message::OwnedHeaders::new();
    for (name, value) in headers {
        owned = owned.insert(rdkafka::message::Header {
            key: name,
            value: Some(*value),
        });
    }
    let record = FutureRecord::to(topic)
        .key(key)
        .payload(payload)
        .headers(owned);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .unwrap();
}
