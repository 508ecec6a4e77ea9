//! Where a component finds Postgres and Kafka, and how the deployment names its topics:
//! what the engine and every participant of one deployment share.

use serde::{Deserialize, Serialize};

use crate::db::{DatabaseUrl, DbSettings, PoolSettings};
use crate::kafka::KafkaSettings;
use crate::topics::Topics;

/// The shared services of a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connections {
    /// Postgres; each component uses a schema of its own in it.
    pub database_url: DatabaseUrl,
    /// Kafka clients.
    pub kafka: KafkaSettings,
    /// Topic names.
    pub topics: Topics,
}

impl Connections {
    /// Postgres at `database_url`, Kafka at `brokers`, standard topic names.
    pub fn new(database_url: impl Into<String>, brokers: impl Into<String>) -> Self {
        Connections {
            database_url: DatabaseUrl::new(database_url),
            kafka: KafkaSettings::new(brokers),
            topics: Topics::default(),
        }
    }

    /// The same, with every topic name behind `prefix`.
    pub fn with_topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.topics.prefix = prefix.into();
        self
    }

    /// How a component with its tables in `schema` connects.
    pub fn db(&self, schema: &str, pool: &PoolSettings) -> DbSettings {
        DbSettings {
            url: self.database_url.clone(),
            schema: schema.to_string(),
            pool: pool.clone(),
        }
    }
}
