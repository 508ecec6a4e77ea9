//! Helpers for the end-to-end tests: real services, a fresh database per test, unique
//! topics and groups, and waiting by polling with a deadline.
//!
//! Services come from `DATABASE_URL` and `KAFKA_BROKERS` (`scripts/services.sh` provides
//! both). With neither set and a Docker engine present, testcontainers starts them.
//!
//! - this file: the services ([`services`]), a fresh database per test
//!   ([`fresh_database`], [`engine_database`], [`participant_database`]), Kafka settings,
//!   fresh topics and consumers, and waiting with a deadline ([`eventually`],
//!   [`collect_until`], [`group_lag`]);
//! - [`checkout`]: a checkout deployment of its own for one test, the three domain services
//!   and an engine, each of which the test can stop and restart;
//! - [`versions`]: a rolling deploy of definition `order`, engine processes registering
//!   chosen versions of it, for the definition-version tests;
//! - `containers` (private): Postgres and Kafka in testcontainers, when the environment
//!   names neither.
//!
//! A test binary (one file of `tests/`) is one process with one metrics recorder
//! (`saga_admin::metrics::handle`): a test that asserts on metrics is the only test in its
//! file, so no other test adds to what it reads.

pub mod checkout;
pub mod versions;

use std::future::Future;
use std::str::FromStr;
use std::sync::Once;
use std::time::Duration;

use rdkafka::consumer::StreamConsumer;
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use saga_plumbing::db::{self, DatabaseUrl, DbSettings};
pub use saga_plumbing::kafka::header;
use saga_plumbing::kafka::KafkaSettings;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Executor, PgPool};
use tokio::sync::OnceCell;
use tokio::time::Instant;
use uuid::Uuid;

/// How long a test waits for an asynchronous outcome before failing.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The services a test talks to. `Debug` hides the database password.
#[derive(Debug, Clone)]
pub struct Services {
    /// Postgres URL of a database the tests may create databases from.
    pub database_url: DatabaseUrl,
    /// Kafka bootstrap servers.
    pub kafka_brokers: String,
}

static SERVICES: OnceCell<Services> = OnceCell::const_new();
static TRACING: Once = Once::new();

/// The shared services, started by testcontainers when the environment names none.
pub async fn services() -> &'static Services {
    init_tracing();
    SERVICES
        .get_or_init(|| async {
            match (
                std::env::var("DATABASE_URL"),
                std::env::var("KAFKA_BROKERS"),
            ) {
                (Ok(database_url), Ok(kafka_brokers)) => Services {
                    database_url: DatabaseUrl::new(database_url),
                    kafka_brokers,
                },
                (database_url, kafka_brokers) => {
                    containers::start(database_url.ok(), kafka_brokers.ok()).await
                }
            }
        })
        .await
}

/// Logs to the test output when `TEST_LOG` is set.
fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_test_writer()
                .init();
        }
    });
}

/// A database of its own for one test, named `sagatest_<uuid>`.
pub async fn fresh_database() -> String {
    let services = services().await;
    let name = format!("sagatest_{}", Uuid::new_v4().simple());
    let options = PgConnectOptions::from_str(services.database_url.expose()).unwrap();
    let mut admin = options.connect().await.unwrap();
    admin
        .execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await
        .unwrap();
    options.database(&name).to_url_lossy().to_string()
}

/// A fresh database with the engine's tables in schema `engine`.
pub async fn engine_database() -> PgPool {
    let url = fresh_database().await;
    db::connect_and_migrate(&DbSettings::new(url, "engine"), &[&saga_engine::MIGRATIONS])
        .await
        .unwrap()
}

/// A pool on the engine schema of the database at `url`, migrated.
pub async fn engine_pool(url: &DatabaseUrl) -> PgPool {
    let settings = DbSettings {
        url: url.clone(),
        ..DbSettings::new("", "engine")
    };
    db::connect_and_migrate(&settings, &[&saga_engine::MIGRATIONS])
        .await
        .unwrap()
}

/// A fresh database with the participant kit's tables in schema `domain`.
pub async fn participant_database() -> PgPool {
    let url = fresh_database().await;
    db::connect_and_migrate(
        &DbSettings::new(url, "domain"),
        &[&saga_participant::MIGRATIONS],
    )
    .await
    .unwrap()
}

/// Kafka settings for the test broker.
pub async fn kafka() -> KafkaSettings {
    KafkaSettings::new(services().await.kafka_brokers.clone())
}

/// A topic name no other test uses, created with `partitions` partitions.
pub async fn fresh_topic(prefix: &str, partitions: i32) -> String {
    let topic = format!("{prefix}-{}", Uuid::new_v4().simple());
    kafka()
        .await
        .ensure_topics(&[topic.as_str()], partitions)
        .await
        .unwrap();
    topic
}

/// A consumer of `topic` in a group of its own, reading from the beginning.
pub async fn consumer(topic: &str) -> StreamConsumer {
    let group = format!("test-{}", Uuid::new_v4().simple());
    kafka().await.consumer(&group, &[topic]).unwrap()
}

/// Receives messages from `consumer` until `done` says the collection is complete, failing
/// the test at the [`DEADLINE`].
pub async fn collect_until(
    consumer: &StreamConsumer,
    mut done: impl FnMut(&[OwnedMessage]) -> bool,
) -> Vec<OwnedMessage> {
    let deadline = Instant::now() + DEADLINE;
    let mut messages = Vec::new();
    while !done(&messages) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "deadline passed with {} messages collected",
            messages.len()
        );
        if let Ok(Ok(message)) = tokio::time::timeout(left, consumer.recv()).await {
            messages.push(message.detach());
        }
    }
    messages
}

/// The JSON payload of a message.
pub fn json_payload(message: &OwnedMessage) -> serde_json::Value {
    serde_json::from_slice(message.payload().unwrap_or_default()).unwrap()
}

/// Polls `check` until it returns `Some`, failing the test at the [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

mod containers {
    //! Services in containers, for machines with Docker and no services named.

    use testcontainers::runners::AsyncRunner;
    use testcontainers::ContainerAsync;
    use testcontainers_modules::kafka::apache::{Kafka, KAFKA_PORT};
    use testcontainers_modules::postgres::Postgres;
    use tokio::sync::OnceCell;

    use super::{DatabaseUrl, Services};

    static POSTGRES: OnceCell<ContainerAsync<Postgres>> = OnceCell::const_new();
    static KAFKA: OnceCell<ContainerAsync<Kafka>> = OnceCell::const_new();

    /// Starts what the environment does not name.
    pub(super) async fn start(
        database_url: Option<String>,
        kafka_brokers: Option<String>,
    ) -> Services {
        assert!(
            std::path::Path::new("/var/run/docker.sock").exists(),
            "set DATABASE_URL and KAFKA_BROKERS (scripts/services.sh does), or run a Docker engine"
        );
        let database_url = match database_url {
            Some(url) => url,
            None => {
                let pg = POSTGRES
                    .get_or_init(|| async { Postgres::default().start().await.unwrap() })
                    .await;
                let port = pg.get_host_port_ipv4(5432).await.unwrap();
                format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres")
            }
        };
        let kafka_brokers = match kafka_brokers {
            Some(brokers) => brokers,
            None => {
                let kafka = KAFKA
                    .get_or_init(|| async { Kafka::default().start().await.unwrap() })
                    .await;
                let port = kafka.get_host_port_ipv4(KAFKA_PORT).await.unwrap();
                format!("127.0.0.1:{port}")
            }
        };
        Services {
            database_url: DatabaseUrl::new(database_url),
            kafka_brokers,
        }
    }
}

/// Messages on `topic` that consumer group `group` has not committed yet (its lag).
pub async fn group_lag(group: &str, topic: &str) -> i64 {
    let kafka = kafka().await;
    let (group, topic) = (group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        kafka
            .consumer_lag(&group, &topic, Duration::from_secs(10))
            .unwrap()
            .iter()
            .map(|(_, lag)| lag)
            .sum()
    })
    .await
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_the_services_hides_the_database_password() {
        // What `containers::start` names: a password in the URL.
        let services = Services {
            database_url: DatabaseUrl::new("postgres://postgres:s3cret@127.0.0.1:5432/postgres"),
            kafka_brokers: "127.0.0.1:9092".into(),
        };
        let shown = format!("{services:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("postgres:***@127.0.0.1:5432"), "{shown}");
    }
}
