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
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Where the brokers are and how to talk to them. `Debug` and `Serialize` hide the values
/// of overrides whose name mentions a password or secret (e.g. `sasl.password`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    /// Extra or overriding librdkafka properties, applied to every client.
    #[serde(serialize_with = "serialize_redacted")]
    pub overrides: BTreeMap<String, String>,
    /// How long creating topics may take before it fails (default 10 s).
    #[serde(with = "humantime_serde")]
    pub admin_timeout: Duration,
    /// Copies the broker keeps of each partition of every topic the engine and the services
    /// create (default 1, for a single development broker; 3 is usual in production). At
    /// most the number of brokers. Topics that exist already keep theirs.
    pub replication_factor: i32,
    /// Idempotent producers (default true): the broker drops a batch a producer re-sent
    /// after a lost acknowledgement. Off, producers send one request at a time per
    /// connection (so per-key order still holds) and a re-sent batch may be stored twice;
    /// the consumers' inboxes make a second copy harmless. For brokers whose idempotent
    /// produce is broken (the fault harness's tansu).
    pub idempotence: bool,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings::new("127.0.0.1:9092")
    }
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("overrides", &redacted(&self.overrides))
            .field("admin_timeout", &self.admin_timeout)
            .field("replication_factor", &self.replication_factor)
            .field("idempotence", &self.idempotence)
            .finish()
    }
}

/// Whether a librdkafka property holds a secret.
fn is_secret(property: &str) -> bool {
    let property = property.to_ascii_lowercase();
    ["password", "secret", "sasl.oauthbearer.config"]
        .iter()
        .any(|word| property.contains(word))
}

fn redacted(overrides: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    overrides
        .iter()
        .map(|(k, v)| (k.as_str(), if is_secret(k) { "***" } else { v.as_str() }))
        .collect()
}

fn serialize_redacted<S: serde::Serializer>(
    overrides: &BTreeMap<String, String>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    redacted(overrides).serialize(serializer)
}

/// The largest message the engine's producers send (librdkafka's `message.max.bytes`,
/// which counts headers too); Kafka brokers take 1 MiB by default, a little more than this.
pub const PRODUCE_LIMIT_BYTES: usize = 1_000_000;

/// Room for an envelope's own fields and headers around the input a consumer accepted:
/// whatever the engine sends on behalf of an accepted message must still fit the producer.
pub const ENVELOPE_ALLOWANCE_BYTES: usize = 64 * 1024;

/// The first pause of [`KafkaSettings::ensure_topics`] before it tries again while the
/// broker cannot be reached; it doubles per try, up to [`TOPIC_RETRY_MAX_PAUSE`].
pub const TOPIC_RETRY_FIRST_PAUSE: Duration = Duration::from_millis(250);

/// The longest pause between two tries of [`KafkaSettings::ensure_topics`]: how late a
/// process that started before its broker notices that the broker is up.
pub const TOPIC_RETRY_MAX_PAUSE: Duration = Duration::from_secs(5);

impl KafkaSettings {
    /// The largest message the producers send: `message.max.bytes` from the overrides, or
    /// [`PRODUCE_LIMIT_BYTES`].
    pub fn produce_limit(&self) -> std::result::Result<usize, String> {
        match self.overrides.get("message.max.bytes") {
            None => Ok(PRODUCE_LIMIT_BYTES),
            Some(value) => value.parse().map_err(|_| {
                format!("kafka.overrides.\"message.max.bytes\" = `{value}` is not a number")
            }),
        }
    }

    /// Settings for `brokers` with the engine's defaults.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaSettings {
            brokers: brokers.into(),
            overrides: BTreeMap::new(),
            admin_timeout: Duration::from_secs(10),
            replication_factor: 1,
            idempotence: true,
        }
    }

    /// Idempotent producer (unless `idempotence` is off): `acks=all`, ordered per
    /// partition, retried by the client.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = self.base();
        if self.idempotence {
            config.set("enable.idempotence", "true");
        } else {
            config
                .set("enable.idempotence", "false")
                .set("max.in.flight.requests.per.connection", "1");
        }
        config
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", "30000")
            .set("message.max.bytes", PRODUCE_LIMIT_BYTES.to_string());
        self.apply_overrides(config)
    }

    /// Messages of `topic` that consumer group `group` has not committed yet, per
    /// partition. Blocking (call it from `spawn_blocking`); reads the group's committed
    /// offsets without joining it.
    pub fn consumer_lag(
        &self,
        group: &str,
        topic: &str,
        timeout: Duration,
    ) -> Result<Vec<(i32, i64)>> {
        let failed = |source| kafka_error("read consumer lag", topic, source);
        let reader: rdkafka::consumer::BaseConsumer =
            self.consumer_config(group).create().map_err(failed)?;
        let metadata = reader
            .fetch_metadata(Some(topic), timeout)
            .map_err(failed)?;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32);
        let mut list = rdkafka::TopicPartitionList::new();
        for partition in 0..partitions {
            list.add_partition(topic, partition);
        }
        let committed = reader.committed_offsets(list, timeout).map_err(failed)?;
        (0..partitions)
            .map(|partition| {
                let (_, high) = reader
                    .fetch_watermarks(topic, partition, timeout)
                    .map_err(failed)?;
                let done = match committed
                    .find_partition(topic, partition)
                    .map(|p| p.offset())
                {
                    Some(rdkafka::Offset::Offset(offset)) => offset,
                    _ => 0,
                };
                Ok((partition, (high - done).max(0)))
            })
            .collect()
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

    /// Creates `topics` with `partitions` partitions each, unless they exist. While the
    /// broker cannot be reached or fails for a passing reason, says so at warn with its
    /// address and tries again (after [`TOPIC_RETRY_FIRST_PAUSE`], doubling up to
    /// [`TOPIC_RETRY_MAX_PAUSE`]), so a process started before its broker waits for it
    /// instead of exiting. New topics get [`Self::replication_factor`] copies.
    pub async fn ensure_topics(&self, topics: &[&str], partitions: i32) -> Result<()> {
        let mut pause = TOPIC_RETRY_FIRST_PAUSE;
        loop {
            match self.create_topics(topics, partitions).await {
                Err(error) if error.is_retryable() => {
                    tracing::warn!(brokers = %self.brokers, %error, ?pause,
                        "cannot create topics on the Kafka broker; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(TOPIC_RETRY_MAX_PAUSE);
                }
                done => return done,
            }
        }
    }

    /// What [`Self::ensure_topics`] asks the broker to create.
    fn new_topics<'a>(&self, topics: &[&'a str], partitions: i32) -> Vec<NewTopic<'a>> {
        topics
            .iter()
            .map(|name| {
                NewTopic::new(
                    name,
                    partitions,
                    TopicReplication::Fixed(self.replication_factor),
                )
            })
            .collect()
    }

    async fn create_topics(&self, topics: &[&str], partitions: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            self.apply_overrides(self.base())
                .create()
                .map_err(|source| kafka_error("create admin client", "", source))?;
        let new_topics = self.new_topics(topics, partitions);
        let options = AdminOptions::new()
            .operation_timeout(Some(self.admin_timeout))
            .request_timeout(Some(self.admin_timeout));
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
pub fn kafka_error(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producers_are_idempotent_unless_turned_off_and_then_send_one_request_at_a_time() {
        let mut settings = KafkaSettings::new("broker:9092");
        let config = settings.producer_config();
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("max.in.flight.requests.per.connection"), None);
        settings.idempotence = false;
        let config = settings.producer_config();
        assert_eq!(config.get("enable.idempotence"), Some("false"));
        assert_eq!(
            config.get("max.in.flight.requests.per.connection"),
            Some("1")
        );
        assert_eq!(config.get("acks"), Some("all"));
    }

    #[test]
    fn secret_overrides_never_print() {
        let mut settings = KafkaSettings::new("broker:9092");
        settings
            .overrides
            .insert("sasl.password".into(), "hunter2".into());
        settings
            .overrides
            .insert("fetch.wait.max.ms".into(), "7".into());
        let shown = [
            format!("{settings:?}"),
            serde_json::to_string(&settings).unwrap(),
        ];
        for text in shown {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("fetch.wait.max.ms"), "{text}");
        }
        let config = settings.consumer_config("g");
        assert_eq!(config.get("sasl.password"), Some("hunter2"));
        assert_eq!(config.get("fetch.wait.max.ms"), Some("7"));
    }

    #[test]
    fn new_topics_get_the_configured_replication_factor() {
        let replication = |settings: &KafkaSettings| {
            settings
                .new_topics(&["a", "b"], 4)
                .iter()
                .map(|t| {
                    let TopicReplication::Fixed(factor) = t.replication else {
                        panic!("{t:?}");
                    };
                    (t.name, t.num_partitions, factor)
                })
                .collect::<Vec<_>>()
        };
        let mut settings = KafkaSettings::default();
        assert_eq!(replication(&settings), [("a", 4, 1), ("b", 4, 1)]);
        settings.replication_factor = 3;
        assert_eq!(replication(&settings), [("a", 4, 3), ("b", 4, 3)]);
    }
}
