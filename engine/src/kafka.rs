//! Kafka clients with defaults tuned for a latency-bound saga engine.
//!
//! A saga crosses Kafka twice per step, so the defaults favour latency: short fetch
//! waits, quick group joins, no producer lingering. Every default can be overridden
//! through [`KafkaSettings::overrides`].

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

use crate::{Error, Result};

/// Where the brokers are and how to talk to them.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap servers, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    /// Extra or overriding librdkafka properties, applied to every client.
    pub overrides: BTreeMap<String, String>,
}

impl KafkaSettings {
    /// Settings for `brokers` with the engine's defaults.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaSettings {
            brokers: brokers.into(),
            overrides: BTreeMap::new(),
        }
    }

    /// Idempotent producer: `acks=all`, ordered per partition, retried by the client.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = self.base();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", "30000");
        self.apply_overrides(config)
    }

    /// Consumer in `group` that stores offsets only when told to (after the effect of a
    /// message is committed in Postgres) and commits stored offsets in the background.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut config = self.base();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "200")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .set("fetch.wait.max.ms", "5")
            .set("enable.partition.eof", "false");
        self.apply_overrides(config)
    }

    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("socket.nagle.disable", "true");
        config
    }

    fn apply_overrides(&self, mut config: ClientConfig) -> ClientConfig {
        for (key, value) in &self.overrides {
            config.set(key, value);
        }
        config
    }

    /// A producer built from [`Self::producer_config`].
    pub fn producer(&self) -> Result<FutureProducer> {
        self.producer_config()
            .create()
            .map_err(|source| kafka_error("create producer", "", source))
    }

    /// A consumer in `group` subscribed to `topics`.
    pub fn consumer(&self, group: &str, topics: &[&str]) -> Result<StreamConsumer> {
        let consumer: StreamConsumer = self
            .consumer_config(group)
            .create()
            .map_err(|source| kafka_error("create consumer", "", source))?;
        consumer
            .subscribe(topics)
            .map_err(|source| kafka_error("subscribe", &topics.join(","), source))?;
        Ok(consumer)
    }

    /// Creates each topic with `partitions` partitions unless it exists already.
    pub async fn ensure_topics(&self, topics: &[&str], partitions: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            self.apply_overrides(self.base())
                .create()
                .map_err(|source| kafka_error("create admin client", "", source))?;
        let new_topics: Vec<NewTopic> = topics
            .iter()
            .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(1)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics(&new_topics, &options)
            .await
            .map_err(|source| kafka_error("create topics", &topics.join(","), source))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(kafka_error(
                        "create topic",
                        &topic,
                        rdkafka::error::KafkaError::AdminOp(code),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Wraps a client error with what was attempted and on which topic.
pub(crate) fn kafka_error(
    operation: &'static str,
    topic: &str,
    source: rdkafka::error::KafkaError,
) -> Error {
    Error::Kafka {
        operation,
        topic: topic.to_string(),
        source,
    }
}

/// The value of header `name` of `message`, as text, if present.
pub fn header(message: &impl rdkafka::Message, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}
