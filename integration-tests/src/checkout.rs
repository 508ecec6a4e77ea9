//! A checkout deployment of its own for one test: fresh database, fresh topic prefix,
//! the three domain services and an engine, each of which the test can stop and restart.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use saga_admin::query::PageLimits;
use saga_admin::{AdminServer, AdminSettings, AdminState};
use saga_core::SagaStatus;
use saga_engine::{Engine, Registry, Transitions};
use saga_plumbing::db::{self, DatabaseUrl};
use saga_plumbing::dlq::DeadLetters;
use saga_plumbing::health::Health;
use saga_plumbing::topics::Topics;
use sagas::checkout::TRIGGER_TOPIC;
use sagas::domains::{balance, coupons, points, Domain};
use sagas::services::Deployment;
use sagas::settings::Settings;
use schemas::checkout::CheckoutRequested;
use schemas::{Envelope, MessageKind};
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

/// Settings of a deployment of its own for one test: a fresh database and topic prefix,
/// and quick engine timers.
pub async fn test_settings(parallel: bool) -> Settings {
    let mut settings = Settings {
        database_url: DatabaseUrl::new(fresh_database().await),
        ..Settings::default()
    };
    settings.kafka.brokers = services().await.kafka_brokers.clone();
    settings.topics.prefix = format!("t{}.", Uuid::new_v4().simple());
    settings.checkout.parallel = parallel;
    settings.engine.consumer.lanes = 2;
    settings.engine.timers.poll_interval = Duration::from_millis(20);
    settings
}

/// One test's checkout world.
pub struct CheckoutWorld {
    /// Its settings; changes take effect for parts started afterwards.
    pub settings: Settings,
    /// Engine schema.
    pub engine_pool: PgPool,
    /// Domain schemas.
    pub pools: BTreeMap<&'static str, PgPool>,
    /// Command topic overrides for the engine only (participant → topic).
    pub command_overrides: BTreeMap<String, String>,
    /// What the engines and services of this world dead-lettered.
    pub dead_letters: Vec<DeadLetters>,
    engine: Option<Running>,
    participants: BTreeMap<&'static str, Running>,
    admin: Vec<Running>,
    engine_health: Option<Health>,
    engine_transitions: Option<Transitions>,
    producer: FutureProducer,
}

impl CheckoutWorld {
    /// A migrated, seeded world with nothing running yet.
    pub async fn new(parallel: bool) -> Self {
        let settings = test_settings(parallel).await;
        let deployment = Deployment::new(settings.clone());
        deployment.migrate().await.unwrap();
        let engine_db = settings
            .connections()
            .db(&settings.engine.schema, &settings.engine.pool);
        let engine_pool = db::connect(&engine_db).await.unwrap();
        let mut pools = BTreeMap::new();
        for domain in Domain::ALL {
            let pool = deployment.connect(domain).await.unwrap();
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
            settings,
            engine_pool,
            pools,
            command_overrides: BTreeMap::new(),
            dead_letters: Vec::new(),
            engine: None,
            participants: BTreeMap::new(),
            admin: Vec::new(),
            engine_health: None,
            engine_transitions: None,
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

    /// A world whose `requests` all parked, then with every service and the engine up and
    /// the usual checkout settings: the balance service was down and timeouts short (one
    /// attempt each), so each try timed out, its cancel too, and each saga parked.
    pub async fn with_parked(parallel: bool, requests: &[CheckoutRequested]) -> Self {
        let mut world = CheckoutWorld::new(parallel).await;
        let usual = world.settings.checkout.clone();
        world.settings.checkout.step_timeout = Duration::from_secs(1);
        world.settings.checkout.forward_attempts = 1;
        world.settings.checkout.settle_attempts = 1;
        world.start_participant(Domain::Points).await;
        world.start_participant(Domain::Coupons).await;
        world.start_engine().await;
        for request in requests {
            world.trigger(request).await;
        }
        for request in requests {
            world
                .wait_for_status(world.saga_id(request), SagaStatus::Parked)
                .await;
        }
        world.stop_engine().await;
        world.settings.checkout = usual;
        world.start_participant(Domain::Balance).await;
        world.start_engine().await;
        world
    }

    /// The deployment as the settings now say.
    pub fn deployment(&self) -> Deployment {
        Deployment::new(self.settings.clone())
    }

    /// Topic names of this world.
    pub fn topics(&self) -> Topics {
        self.settings.topics.clone()
    }

    /// Messages dead-lettered by every engine and service this world started.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_letters.iter().map(DeadLetters::count).sum()
    }

    /// Starts the engine (again).
    pub async fn start_engine(&mut self) {
        assert!(self.engine.is_none(), "engine already running");
        let deployment = self.deployment();
        let mut connections = self.settings.connections();
        connections.topics.command_overrides = self.command_overrides.clone();
        let engine = Engine::builder(connections, deployment.engine_settings())
            .register(deployment.checkout().unwrap())
            .build()
            .await
            .unwrap();
        self.dead_letters.push(engine.dead_letters());
        self.engine_health = Some(engine.health());
        self.engine_transitions = Some(engine.transitions().clone());
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
        let running = self
            .deployment()
            .start_participant(domain, shutdown.clone())
            .await
            .unwrap();
        self.dead_letters.push(running.dead_letters);
        self.participants.insert(
            domain.name(),
            Running {
                shutdown,
                tasks: running.tasks,
            },
        );
    }

    /// A checkout request of [`USER`] with a fresh order id.
    pub fn request(&self, amount_cents: i64, points: i64, coupon: &str) -> CheckoutRequested {
        request(amount_cents, points, coupon)
    }

    /// The saga a request starts.
    pub fn saga_id(&self, request: &CheckoutRequested) -> Uuid {
        self.deployment()
            .checkout()
            .unwrap()
            .saga_id(&request.order_id.to_string())
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
    pub async fn wait_for_status(&self, saga_id: Uuid, status: SagaStatus) {
        let pool = &self.engine_pool;
        let what = format!("saga {saga_id} to be {status}");
        eventually(&what, || async {
            let current: Option<String> =
                sqlx::query_scalar("SELECT status FROM sagas WHERE id = $1")
                    .bind(saga_id)
                    .fetch_optional(pool)
                    .await
                    .unwrap();
            (current.as_deref() == Some(status.as_str())).then_some(())
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

    /// What an admin server of this world reads: its engine schema and the checkout
    /// definition as the settings now say; the transitions (with their circuit breakers)
    /// of the engine started last, if any.
    pub fn admin_state(&self, settings: &AdminSettings) -> AdminState {
        let mut registry = Registry::default();
        registry.register(self.deployment().checkout().unwrap());
        let transitions = self.engine_transitions.clone().unwrap_or_else(|| {
            Transitions::new(
                self.engine_pool.clone(),
                registry.clone(),
                self.topics(),
                self.settings.engine.conflict_retries,
            )
        });
        AdminState {
            pool: self.engine_pool.clone(),
            registry,
            transitions,
            producer: self.settings.kafka.producer().unwrap(),
            brokers: self.settings.kafka.brokers.clone(),
            dead_letters: DeadLetters::default(),
            migrations: saga_engine::MIGRATIONS.iter().count(),
            limits: PageLimits {
                default: settings.page_size,
                max: settings.max_page_size,
            },
            metrics: saga_admin::metrics::handle(),
            health: self.engine_health.clone(),
            consumer_groups: vec![
                (
                    format!("{}saga-engine.triggers", self.settings.topics.prefix),
                    vec![self.topics().trigger(TRIGGER_TOPIC)],
                ),
                (
                    format!("{}saga-engine.replies", self.settings.topics.prefix),
                    vec![self.topics().replies()],
                ),
            ],
            kafka: self.settings.kafka.clone(),
        }
    }

    /// Serves the admin API of this world's engine schema and checkout definition on a free
    /// loopback port (or `settings.addr`); it stops with [`CheckoutWorld::shutdown`].
    pub async fn serve_admin(&mut self, mut settings: AdminSettings) -> String {
        if settings.addr.port() == 8080 {
            settings.addr = "127.0.0.1:0".parse().unwrap();
        }
        let state = self.admin_state(&settings);
        let server = AdminServer::bind(&settings, state).await.unwrap();
        let url = format!("http://{}", server.local_addr());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { server.serve(shutdown).await.unwrap() }
        });
        self.admin.push(Running {
            shutdown,
            tasks: vec![task],
        });
        url
    }

    /// Stops everything that runs.
    pub async fn shutdown(mut self) {
        if let Some(engine) = self.engine.take() {
            engine.stop().await;
        }
        for (_, participant) in std::mem::take(&mut self.participants) {
            participant.stop().await;
        }
        for admin in std::mem::take(&mut self.admin) {
            admin.stop().await;
        }
    }
}

/// A checkout request of [`USER`] with a fresh order id.
pub fn request(amount_cents: i64, points: i64, coupon: &str) -> CheckoutRequested {
    CheckoutRequested {
        order_id: Uuid::new_v4(),
        user_id: USER,
        amount_cents,
        points,
        coupon_code: coupon.into(),
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
