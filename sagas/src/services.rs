//! Running the engine and the domain services as tasks of one process.

use saga_engine::db::DbSettings;
use saga_engine::kafka::KafkaSettings;
use saga_engine::outbox::{Relay, RelaySettings};
use saga_engine::participant::{ParticipantWorker, WorkerSettings};
use saga_engine::runtime::{Engine, EngineSettings, Topics};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::checkout::checkout;
use crate::domains::{self, Domain};

/// Where the services are and how topics are named.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// Postgres URL.
    pub database_url: String,
    /// Kafka bootstrap servers.
    pub kafka_brokers: String,
    /// Topic name prefix (may be empty).
    pub topic_prefix: String,
    /// Whether checkout runs its forward steps in parallel.
    pub parallel: bool,
}

impl Deployment {
    /// Topic names of this deployment.
    pub fn topics(&self) -> Topics {
        Topics::with_prefix(self.topic_prefix.clone())
    }

    /// Kafka client settings.
    pub fn kafka(&self) -> KafkaSettings {
        KafkaSettings::new(self.kafka_brokers.clone())
    }

    /// A connected engine with the checkout definition (migrated, topics created).
    pub async fn engine(&self) -> saga_engine::Result<Engine> {
        let settings = EngineSettings {
            topics: self.topics(),
            group: format!("{}saga-engine", self.topic_prefix),
            ..EngineSettings::new(self.database_url.clone(), self.kafka_brokers.clone())
        };
        Engine::builder(settings)
            .register(checkout(self.parallel))
            .build()
            .await
    }

    /// Migrates the engine's and every domain's schema.
    pub async fn migrate(&self) -> saga_engine::Result<()> {
        let engine = DbSettings::new(self.database_url.clone(), "engine");
        saga_engine::db::connect_and_migrate(&engine, &[&saga_engine::db::ENGINE_MIGRATIONS])
            .await?
            .close()
            .await;
        for domain in Domain::ALL {
            domains::connect(&self.database_url, domain)
                .await?
                .close()
                .await;
        }
        Ok(())
    }

    /// Starts `domain`'s command worker and outbox relay; returns its pool and the tasks.
    pub async fn start_participant(
        &self,
        domain: Domain,
        shutdown: CancellationToken,
    ) -> saga_engine::Result<(PgPool, Vec<JoinHandle<()>>)> {
        let pool = domains::connect(&self.database_url, domain).await?;
        let topics = self.topics();
        let kafka = self.kafka();
        let commands = topics.commands(domain.name());
        kafka
            .ensure_topics(
                &[
                    commands.as_str(),
                    topics.replies().as_str(),
                    topics.dlq().as_str(),
                ],
                6,
            )
            .await?;
        let worker = ParticipantWorker::new(
            pool.clone(),
            &kafka,
            domain.handler(),
            WorkerSettings {
                commands_topic: commands,
                reply_topic: topics.replies(),
                dlq_topic: topics.dlq(),
                group: format!("{}participant-{}", self.topic_prefix, domain.name()),
                lanes: 6,
            },
        )?;
        let relay = Relay::new(
            pool.clone(),
            kafka.producer()?,
            RelaySettings::new(domain.schema()),
        );
        let stop = shutdown.clone();
        let worker = tokio::spawn(async move {
            if let Err(error) = worker.run(stop).await {
                tracing::error!(%error, "participant worker failed");
            }
        });
        let relay = tokio::spawn(relay.run(shutdown));
        Ok((pool, vec![worker, relay]))
    }
}
