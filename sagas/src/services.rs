//! Running the engine and the domain services of one deployment as tasks of one process.

use anyhow::Context;
use saga_admin::{AdminServer, AdminState};
use saga_core::SagaDefinition;
use saga_engine::{Engine, EngineSettings};
use saga_participant::{ParticipantWorker, WorkerTopics};
use saga_plumbing::db;
use saga_plumbing::dlq::DeadLetters;
use saga_plumbing::kafka::KafkaSettings;
use saga_plumbing::outbox::Relay;
use saga_plumbing::topics::Topics;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::checkout::checkout;
use crate::domains::{self, Domain};
use crate::settings::Settings;

/// One deployment: the services it uses and how its parts run.
#[derive(Debug, Clone)]
pub struct Deployment {
    settings: Settings,
}

/// A domain service started by [`Deployment::start_participant`].
pub struct RunningParticipant {
    /// The domain's pool (its schema).
    pub pool: PgPool,
    /// The command worker, the outbox relay and (when enabled) the retention sweep; they
    /// end after shutdown.
    pub tasks: Vec<JoinHandle<()>>,
    /// Commands the worker dead-lettered.
    pub dead_letters: DeadLetters,
}

impl RunningParticipant {
    /// Waits until `shutdown`, then for the tasks to end. When a task ends first (the
    /// worker failed, a task panicked), cancels `stop` (the token the tasks were started
    /// with, a child of `shutdown`) so the others end too, and fails: a service without its
    /// worker or relay must not keep running half alive.
    pub async fn supervise(
        self,
        shutdown: &CancellationToken,
        stop: &CancellationToken,
    ) -> saga_plumbing::Result<()> {
        let mut all = futures::future::select_all(self.tasks);
        let (how, others) = tokio::select! {
            _ = shutdown.cancelled() => {
                for task in all.into_inner() {
                    let _ = task.await;
                }
                return Ok(());
            }
            (ended, _, rest) = &mut all => {
                let how = match ended {
                    Ok(()) => "stopped on its own".to_string(),
                    Err(error) => format!("failed: {error}"),
                };
                tracing::error!(how, "a participant task ended before shutdown; stopping");
                (how, rest)
            }
        };
        stop.cancel();
        for task in others {
            let _ = task.await;
        }
        Err(saga_plumbing::Error::Stopped(format!(
            "participant task {how}"
        )))
    }
}

impl Deployment {
    /// A deployment configured by `settings`.
    pub fn new(settings: Settings) -> Self {
        Deployment { settings }
    }

    /// Its settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Topic names of this deployment.
    pub fn topics(&self) -> &Topics {
        &self.settings.topics
    }

    /// Kafka client settings.
    pub fn kafka(&self) -> &KafkaSettings {
        &self.settings.kafka
    }

    /// The checkout definition as this deployment configures it.
    pub fn checkout(&self) -> anyhow::Result<SagaDefinition> {
        checkout(&self.settings.checkout).context("the checkout definition")
    }

    /// The engine's settings, its consumer groups behind the topic prefix so that
    /// deployments sharing a broker never share a group.
    pub fn engine_settings(&self) -> EngineSettings {
        let engine = &self.settings.engine;
        EngineSettings {
            group: format!("{}{}", self.settings.topics.prefix, engine.group),
            ..engine.clone()
        }
    }

    /// A connected engine with the checkout definition (migrated, topics created) and the
    /// configured retention.
    pub async fn engine(&self) -> anyhow::Result<Engine> {
        let mut builder = Engine::builder(self.settings.connections(), self.engine_settings())
            .register(self.checkout()?);
        if let Some(retention) = self.settings.retention.engine() {
            builder = builder.retention(retention);
        }
        Ok(builder.build().await?)
    }

    /// Runs the engine and its admin API until `shutdown` (or until either fails).
    pub async fn serve_engine(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let engine = self.engine().await?;
        let admin = &self.settings.admin;
        let state = AdminState::for_engine(&engine, admin)?;
        let server = AdminServer::bind(admin, state).await?;
        let engine = engine.with_admin_addr(server.local_addr());
        let admin_task = tokio::spawn(server.serve(shutdown.clone()));
        let engine_result = engine.run(shutdown.clone()).await;
        shutdown.cancel();
        let admin_result = admin_task.await.context("admin API task")?;
        engine_result?;
        admin_result.context("admin API")?;
        Ok(())
    }

    /// Migrates the engine's and every domain's schema.
    pub async fn migrate(&self) -> saga_plumbing::Result<()> {
        let connections = self.settings.connections();
        let engine = &self.settings.engine;
        let db = connections.db(&engine.schema, &engine.pool);
        db::connect_and_migrate(&db, &[&saga_engine::MIGRATIONS])
            .await?
            .close()
            .await;
        for domain in Domain::ALL {
            self.connect(domain).await?.close().await;
        }
        Ok(())
    }

    /// A pool on `domain`'s schema, migrated.
    pub async fn connect(&self, domain: Domain) -> saga_plumbing::Result<PgPool> {
        let pool = &self.settings.participant.pool;
        domains::connect(&self.settings.connections(), pool, domain).await
    }

    /// Starts `domain`'s command worker, outbox relay and (when enabled) retention sweep.
    pub async fn start_participant(
        &self,
        domain: Domain,
        shutdown: CancellationToken,
    ) -> saga_plumbing::Result<RunningParticipant> {
        let settings = &self.settings.participant;
        let pool = self.connect(domain).await?;
        let topics = WorkerTopics::of(self.topics(), domain.name());
        let kafka = self.kafka();
        kafka
            .ensure_topics(
                &[&topics.commands, &topics.replies, &topics.dlq],
                settings.partitions,
            )
            .await?;
        let group = format!(
            "{}{}{}",
            self.topics().prefix,
            settings.group_prefix,
            domain.name()
        );
        let worker = ParticipantWorker::new(
            pool.clone(),
            kafka,
            domain.handler(),
            topics,
            group,
            &settings.consumer,
        )
        .with_group_lock_timeout(settings.group_lock_timeout);
        let dead_letters = worker.dead_letters();
        let relay = Relay::new(
            pool.clone(),
            kafka.producer()?,
            domain.schema(),
            settings.relay.clone(),
        );
        let stop = shutdown.clone();
        let worker = tokio::spawn(async move {
            if let Err(error) = worker.run(stop).await {
                tracing::error!(%error, "participant worker failed");
            }
        });
        let mut tasks = vec![worker];
        if let Some(retention) = self.settings.retention.participant() {
            let sweep = saga_participant::retention::run(
                pool.clone(),
                domain.schema().to_string(),
                retention,
                shutdown.clone(),
            );
            tasks.push(tokio::spawn(sweep));
        }
        tasks.push(tokio::spawn(async move {
            relay.run(shutdown).await;
        }));
        Ok(RunningParticipant {
            pool,
            tasks,
            dead_letters,
        })
    }
}
