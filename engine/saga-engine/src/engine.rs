//! The engine process: migrations, topics, and the tasks that drive sagas (and, when
//! configured, the retention sweep).

use std::sync::Arc;
use std::time::Duration;

use saga_core::SagaDefinition;
use saga_plumbing::consume::{self, ConsumerSettings, MessageHandler};
use saga_plumbing::db::{self, PoolSettings};
use saga_plumbing::dlq::{DeadLetterQueue, DeadLetters};
use saga_plumbing::health::Health;
use saga_plumbing::outbox::{Relay, RelaySettings};
use saga_plumbing::supervise::Supervisor;
use saga_plumbing::Connections;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::breaker::BreakerSettings;
use crate::inputs::{ReplyHandler, TriggerHandler};
use crate::registry::Registry;
use crate::retention::{self, RetentionSettings};
use crate::timers::{self, TimerSettings};
use crate::transition::Transitions;
use crate::versions;
use crate::Result;

/// How an engine process runs; where Postgres and Kafka are comes in [`Connections`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    /// Schema holding the engine's tables (default `engine`).
    pub schema: String,
    /// Consumer group prefix shared by all engine processes of a deployment; triggers and
    /// replies each get a group `<group>.triggers`, `<group>.replies` (default `saga-engine`).
    pub group: String,
    /// Partitions of the topics the engine creates (default 6).
    pub partitions: i32,
    /// How often one input is decided again after another writer moved its saga on
    /// (default 20).
    pub conflict_retries: u32,
    /// How long a shutdown waits for in-flight work before aborting it (default 10 s).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How often a process that lacks a definition version with sagas in flight (and so
    /// is not ready) looks again whether it still does (default 10 s).
    #[serde(with = "humantime_serde")]
    pub version_check_interval: Duration,
    /// The trigger and reply consumers.
    pub consumer: ConsumerSettings,
    /// The timer poller.
    pub timers: TimerSettings,
    /// The outbox relay.
    pub relay: RelaySettings,
    /// The engine's connection pool.
    pub pool: PoolSettings,
    /// The circuit breaker of each participant (see [`crate::breaker`]).
    pub breaker: BreakerSettings,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            schema: "engine".into(),
            group: "saga-engine".into(),
            partitions: 6,
            conflict_retries: 20,
            shutdown_grace: Duration::from_secs(10),
            version_check_interval: Duration::from_secs(10),
            consumer: ConsumerSettings::default(),
            timers: TimerSettings::default(),
            relay: RelaySettings::default(),
            pool: PoolSettings::default(),
            breaker: BreakerSettings::default(),
        }
    }
}

/// Collects definitions before the engine starts.
pub struct EngineBuilder {
    connections: Connections,
    settings: EngineSettings,
    registry: Registry,
    retention: Option<RetentionSettings>,
}

impl EngineBuilder {
    /// Adds a saga definition.
    pub fn register(mut self, definition: SagaDefinition) -> Self {
        self.registry.register(definition);
        self
    }

    /// Deletes expired rows in the background as `retention` says (by default the engine
    /// keeps everything).
    pub fn retention(mut self, retention: RetentionSettings) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Connects, migrates and creates the topics; stores the fingerprint of each registered
    /// definition version, or fails when a stored one differs (steps changed without a
    /// version bump); and marks the engine not ready while sagas of versions it lacks are in
    /// flight (see [`versions`]).
    pub async fn build(self) -> Result<Engine> {
        let db = self
            .connections
            .db(&self.settings.schema, &self.settings.pool);
        let pool = db::connect_and_migrate(&db, &[&crate::MIGRATIONS]).await?;
        let topics = &self.connections.topics;
        let mut names = vec![topics.replies(), topics.lifecycle(), topics.dlq()];
        for definition in self.registry.definitions() {
            names.push(topics.trigger(definition.trigger_topic()));
            names.extend(
                definition
                    .steps()
                    .iter()
                    .map(|s| topics.commands(s.participant())),
            );
        }
        names.sort();
        names.dedup();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.connections
            .kafka
            .ensure_topics(&names, self.settings.partitions)
            .await?;
        versions::register_fingerprints(&pool, &self.registry).await?;
        let health = Health::default();
        let versions_problem = versions::check(&pool, &self.registry, &health, None).await?;
        let transitions = Transitions::new(
            pool,
            self.registry,
            topics.clone(),
            self.settings.conflict_retries,
        )
        .with_breakers(self.settings.breaker.clone());
        Ok(Engine {
            transitions,
            connections: self.connections,
            settings: self.settings,
            dead_letters: DeadLetters::default(),
            admin_addr: None,
            health,
            versions_problem,
            retention: self.retention,
        })
    }
}

/// A saga engine: trigger and reply consumers, the timer poller and the outbox relay.
pub struct Engine {
    connections: Connections,
    settings: EngineSettings,
    transitions: Transitions,
    dead_letters: DeadLetters,
    admin_addr: Option<std::net::SocketAddr>,
    health: Health,
    versions_problem: Option<String>,
    retention: Option<RetentionSettings>,
}

impl Engine {
    /// Starts configuring an engine that reaches Postgres and Kafka through `connections`.
    pub fn builder(connections: Connections, settings: EngineSettings) -> EngineBuilder {
        EngineBuilder {
            connections,
            settings,
            registry: Registry::default(),
            retention: None,
        }
    }

    /// The transition path, for tools and tests that feed inputs directly.
    pub fn transitions(&self) -> &Transitions {
        &self.transitions
    }

    /// Names the admin API's address in the engine's ready line.
    pub fn with_admin_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.admin_addr = Some(addr);
        self
    }

    /// Its consumer groups and the topics each reads: triggers, then replies.
    pub fn consumer_groups(&self) -> Vec<(String, Vec<String>)> {
        consumer_groups(&self.settings, &self.transitions)
    }

    /// What its consumers, relay and timer poller report about themselves (readiness).
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// The Kafka settings it runs with.
    pub fn kafka(&self) -> &saga_plumbing::kafka::KafkaSettings {
        &self.connections.kafka
    }

    /// The count of messages this engine's consumers sent to the DLQ.
    pub fn dead_letters(&self) -> DeadLetters {
        self.dead_letters.clone()
    }

    /// Runs until `shutdown`, then stops taking input and waits for in-flight work.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let Engine {
            connections,
            settings,
            transitions,
            dead_letters,
            admin_addr,
            health,
            versions_problem,
            retention,
        } = self;
        let topics = &connections.topics;
        let kafka = &connections.kafka;
        // One group per input, so a rebalance of one never pauses the other.
        let [(trigger_group, trigger_topics), (reply_group, reply_topics)]: [_; 2] =
            consumer_groups(&settings, &transitions)
                .try_into()
                .expect("two consumer groups");
        let trigger_refs: Vec<&str> = trigger_topics.iter().map(String::as_str).collect();
        let reply_refs: Vec<&str> = reply_topics.iter().map(String::as_str).collect();
        let trigger_consumer =
            consume::subscribe(kafka, "triggers", &trigger_group, &trigger_refs)?;
        let reply_consumer = consume::subscribe(kafka, "replies", &reply_group, &reply_refs)?;
        let dlq = DeadLetterQueue {
            producer: kafka.producer()?,
            topic: topics.dlq(),
            counter: dead_letters,
            store: transitions.pool().clone(),
            publish_attempts: settings.consumer.dead_letter_attempts,
            publish_timeout: settings.consumer.dead_letter_timeout,
        };

        let mut tasks = Supervisor::new(&shutdown, health.clone());
        let stop = tasks.token();
        let relay = Relay::new(
            transitions.pool().clone(),
            kafka.producer()?,
            settings.schema.clone(),
            settings.relay.clone(),
        );
        let relay_stop = stop.clone();
        tasks.spawn(
            "outbox relay",
            reporting(health.clone(), "outbox relay", async move {
                relay.run(relay_stop).await;
            }),
        );
        tasks.spawn(
            "timer poller",
            reporting(
                health.clone(),
                "timer poller",
                timers::run(transitions.clone(), settings.timers.clone(), stop.clone()),
            ),
        );
        if let Some(retention) = retention {
            tasks.spawn(
                "retention",
                reporting(
                    health.clone(),
                    "retention",
                    retention::run(transitions.pool().clone(), retention, stop.clone()),
                ),
            );
        }
        tasks.spawn(
            "definition version watch",
            versions::watch(
                transitions.pool().clone(),
                transitions.registry().clone(),
                health.clone(),
                settings.version_check_interval,
                versions_problem.clone(),
                stop.clone(),
            ),
        );
        let max_message_bytes = settings.consumer.max_message_bytes;
        let triggers = Arc::new(TriggerHandler {
            transitions: transitions.clone(),
            max_message_bytes,
        });
        let replies = Arc::new(ReplyHandler {
            transitions: transitions.clone(),
            max_message_bytes,
        });
        let input = Input {
            dlq,
            settings: settings.consumer.clone(),
            health: health.clone(),
            shutdown: stop.clone(),
        };
        input.spawn(&mut tasks, "triggers", trigger_consumer, triggers);
        input.spawn(&mut tasks, "replies", reply_consumer, replies);
        let admin = admin_addr.map_or_else(|| "none".to_string(), |a| format!("http://{a}"));
        if versions_problem.is_some() {
            // The error line above named what is missing; /readyz says it too.
            warn!(%admin, "engine running but not ready");
        } else {
            info!(
                %admin,
                definitions = transitions.registry().definitions().count(),
                triggers = %trigger_topics.join(","),
                replies = %topics.replies(),
                groups = %format!("{trigger_group},{reply_group}"),
                "engine ready"
            );
        }

        let stopped = tasks.run(&shutdown, settings.shutdown_grace).await;
        info!("engine stopped");
        stopped
    }
}

fn consumer_groups(
    settings: &EngineSettings,
    transitions: &Transitions,
) -> Vec<(String, Vec<String>)> {
    let topics = transitions.topics();
    let triggers = transitions
        .registry()
        .definitions()
        .map(|d| topics.trigger(d.trigger_topic()))
        .collect();
    vec![
        (format!("{}.triggers", settings.group), triggers),
        (
            format!("{}.replies", settings.group),
            vec![topics.replies()],
        ),
    ]
}

/// Runs `task`, recording in `health` that `name` runs until it ends.
async fn reporting(
    health: Health,
    name: &'static str,
    task: impl std::future::Future<Output = ()>,
) {
    health.set_running(name, true);
    task.await;
    health.set_running(name, false);
}

/// What every input consumer of the engine shares.
struct Input {
    dlq: DeadLetterQueue,
    settings: ConsumerSettings,
    health: Health,
    shutdown: CancellationToken,
}

impl Input {
    fn spawn<H: MessageHandler>(
        &self,
        tasks: &mut Supervisor,
        name: &'static str,
        consumer: consume::InputConsumer,
        handler: Arc<H>,
    ) {
        let dlq = self.dlq.clone();
        let (settings, stop) = (self.settings.clone(), self.shutdown.clone());
        let health = self.health.clone();
        tasks.spawn(name, async move {
            consume::run(name, consumer, dlq, handler, &settings, health, stop).await
        });
    }
}
