//! The engine process: migrations, topics, and the tasks that drive sagas.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::inputs::{ReplyHandler, TriggerHandler};
use super::registry::Registry;
use super::timers;
use super::topics::Topics;
use super::transition::Transitions;
use crate::consume::{self, MessageHandler};
use crate::db::{self, DbSettings};
use crate::kafka::KafkaSettings;
use crate::outbox::{Relay, RelaySettings};
use crate::saga::SagaDefinition;
use crate::Result;

/// Everything an engine process needs to know.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Postgres and the engine's schema.
    pub db: DbSettings,
    /// Kafka clients.
    pub kafka: KafkaSettings,
    /// Topic names.
    pub topics: Topics,
    /// Consumer group prefix of the engine's consumers (all engine processes share it;
    /// triggers and replies each get a group `<group>.triggers`, `<group>.replies`).
    pub group: String,
    /// Partitions of the topics the engine creates.
    pub partitions: i32,
    /// How often the timer poller looks for due timers when none was due.
    pub timer_interval: Duration,
    /// Partitions each consumer handles in parallel (each one in order).
    pub lanes: usize,
}

impl EngineSettings {
    /// Defaults for Postgres at `database_url` and Kafka at `brokers`.
    pub fn new(database_url: impl Into<String>, brokers: impl Into<String>) -> Self {
        EngineSettings {
            db: DbSettings::new(database_url, "engine"),
            kafka: KafkaSettings::new(brokers),
            topics: Topics::default(),
            group: "saga-engine".into(),
            partitions: 6,
            timer_interval: Duration::from_millis(50),
            lanes: 6,
        }
    }
}

/// Collects definitions before the engine starts.
pub struct EngineBuilder {
    settings: EngineSettings,
    registry: Registry,
}

impl EngineBuilder {
    /// Adds a saga definition.
    pub fn register(mut self, definition: SagaDefinition) -> Self {
        self.registry.register(definition);
        self
    }

    /// Connects, migrates and creates the topics.
    pub async fn build(self) -> Result<Engine> {
        let pool = db::connect_and_migrate(&self.settings.db, &[&db::ENGINE_MIGRATIONS]).await?;
        let topics = &self.settings.topics;
        let mut names = vec![topics.replies(), topics.lifecycle(), topics.dlq()];
        for definition in self.registry.definitions() {
            names.push(topics.trigger(&definition.trigger_topic));
            names.extend(
                definition
                    .steps
                    .iter()
                    .map(|s| topics.commands(&s.participant)),
            );
        }
        names.sort();
        names.dedup();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.settings
            .kafka
            .ensure_topics(&names, self.settings.partitions)
            .await?;
        Ok(Engine {
            transitions: Transitions {
                pool,
                registry: self.registry,
                topics: self.settings.topics.clone(),
            },
            settings: self.settings,
        })
    }
}

/// A running saga engine: trigger and reply consumers, the timer poller and the outbox relay.
pub struct Engine {
    settings: EngineSettings,
    transitions: Transitions,
}

impl Engine {
    /// Starts configuring an engine.
    pub fn builder(settings: EngineSettings) -> EngineBuilder {
        EngineBuilder {
            settings,
            registry: Registry::default(),
        }
    }

    /// The transition path, for tools and tests that feed inputs directly.
    pub fn transitions(&self) -> &Transitions {
        &self.transitions
    }

    /// Runs until `shutdown`, then stops taking input and waits for in-flight work.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let Engine {
            settings,
            transitions,
        } = self;
        let topics = &settings.topics;
        let kafka = &settings.kafka;
        let trigger_topics: Vec<String> = transitions
            .registry
            .definitions()
            .map(|d| topics.trigger(&d.trigger_topic))
            .collect();
        let trigger_refs: Vec<&str> = trigger_topics.iter().map(String::as_str).collect();
        // One group per input, so a rebalance of one never pauses the other.
        let trigger_group = format!("{}.triggers", settings.group);
        let reply_group = format!("{}.replies", settings.group);
        let trigger_consumer = kafka.consumer(&trigger_group, &trigger_refs)?;
        let reply_consumer = kafka.consumer(&reply_group, &[topics.replies().as_str()])?;

        let mut tasks = JoinSet::new();
        let relay = Relay::new(
            transitions.pool.clone(),
            kafka.producer()?,
            RelaySettings::new(settings.db.schema.clone()),
        );
        tasks.spawn(relay.run(shutdown.clone()));
        tasks.spawn(timers::run(
            transitions.clone(),
            settings.timer_interval,
            shutdown.clone(),
        ));
        let inputs: [(&'static str, _, Arc<dyn MessageHandler>); 2] = [
            (
                "triggers",
                trigger_consumer,
                Arc::new(TriggerHandler {
                    transitions: transitions.clone(),
                }),
            ),
            (
                "replies",
                reply_consumer,
                Arc::new(ReplyHandler {
                    transitions: transitions.clone(),
                }),
            ),
        ];
        for (name, consumer, handler) in inputs {
            let (producer, dlq, stop) = (kafka.producer()?, topics.dlq(), shutdown.clone());
            let lanes = settings.lanes;
            tasks.spawn(async move {
                consume::run(name, consumer, producer, dlq, handler, lanes, stop).await
            });
        }
        info!(
            definitions = transitions.registry.definitions().count(),
            "engine running"
        );

        shutdown.cancelled().await;
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                left = tasks.len(),
                "engine tasks still running after 10 s; aborting them"
            );
            tasks.abort_all();
        }
        info!("engine stopped");
        Ok(())
    }
}
