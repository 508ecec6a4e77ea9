//! All configuration of `sagas run|participant|demo` in one typed tree, layered:
//! defaults ← an optional TOML file (`--config`) ← environment ← command-line flags.
//!
//! Environment: `SAGAS_<KEY>` with `__` between levels (`SAGAS_ENGINE__CONSUMER__LANES=4`,
//! `SAGAS_CHECKOUT__STEP_TIMEOUT=20s`), plus the usual `DATABASE_URL`, `KAFKA_BROKERS` and
//! `TOPIC_PREFIX`; a `SAGAS_` variable wins over the usual one. `SAGAS_ADMIN_TOKEN` sets
//! `admin.token`. Durations are written like
//! `15s`, `500ms`, `2m`. `sagas config` prints the effective tree with secrets hidden.

use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
pub use saga_admin::AdminSettings;
use saga_engine::EngineSettings;
use saga_participant::ParticipantSettings;
use saga_plumbing::db::DatabaseUrl;
use saga_plumbing::kafka::KafkaSettings;
use saga_plumbing::topics::Topics;
use saga_plumbing::Connections;
use serde::{Deserialize, Serialize};

/// Everything the `sagas` binary can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Postgres; the engine and each domain use a schema of their own in it (default
    /// `postgres://postgres@127.0.0.1:5432/test`). Printed without its password.
    pub database_url: DatabaseUrl,
    /// Kafka clients (`brokers` default `127.0.0.1:9092`, librdkafka `overrides`,
    /// `replication_factor` of the topics created, default 1).
    pub kafka: KafkaSettings,
    /// Topic names (`prefix` before every name; default none, the demo picks a fresh one).
    pub topics: Topics,
    /// The orchestrator (`sagas run`).
    pub engine: EngineSettings,
    /// The domain services (`sagas participant`).
    pub participant: ParticipantSettings,
    /// The checkout definition.
    pub checkout: CheckoutSettings,
    /// The admin HTTP server.
    pub admin: AdminSettings,
    /// The demo run (`sagas demo`).
    pub demo: DemoSettings,
    /// How long the engine and the domain services keep what they no longer need.
    pub retention: RetentionSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            database_url: DatabaseUrl::new("postgres://postgres@127.0.0.1:5432/test"),
            kafka: KafkaSettings::default(),
            topics: Topics::default(),
            engine: EngineSettings::default(),
            participant: ParticipantSettings::default(),
            checkout: CheckoutSettings::default(),
            admin: AdminSettings::default(),
            demo: DemoSettings::default(),
            retention: RetentionSettings::default(),
        }
    }
}

/// How the checkout saga runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckoutSettings {
    /// Run the three forward steps at once (default true); false runs them in order.
    pub parallel: bool,
    /// How long a step waits for a reply before the same command is sent again (default
    /// 15 s: long enough that a burst of queued commands causes no needless re-sends).
    #[serde(with = "humantime_serde")]
    pub step_timeout: Duration,
    /// Attempts of a forward phase before the saga compensates (default 5).
    pub forward_attempts: u32,
    /// Attempts of a confirm, cancel or compensate before the saga is parked (default 20).
    pub settle_attempts: u32,
    /// First wait before a retry after a transient failure (default 50 ms); doubles per
    /// attempt.
    #[serde(with = "humantime_serde")]
    pub retry_initial_backoff: Duration,
    /// Longest wait between retries (default 10 s).
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
    /// How long a checkout may take to finish its forward steps, from its start; past it
    /// the saga compensates and participants refuse its forward commands (default none).
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Duration>,
}

impl Default for CheckoutSettings {
    fn default() -> Self {
        CheckoutSettings {
            parallel: true,
            step_timeout: Duration::from_secs(15),
            forward_attempts: 5,
            settle_attempts: 20,
            retry_initial_backoff: Duration::from_millis(50),
            retry_max_backoff: Duration::from_secs(10),
            deadline: None,
        }
    }
}

/// The size of a demo run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoSettings {
    /// Checkout requests (distinct orders) to publish (default 1,000).
    pub requests: usize,
    /// Users the requests are spread over (default 100).
    pub users: usize,
    /// How long to wait for every saga to end (default 300 s).
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
}

impl Default for DemoSettings {
    fn default() -> Self {
        DemoSettings {
            requests: 1_000,
            users: 100,
            deadline: Duration::from_secs(300),
        }
    }
}

/// How long expired rows are kept before a background task deletes them, in batches of
/// `batch_size` rows with `batch_pause` between batches, every `interval` (and at start), in
/// the engine (`sagas run`) and in every domain service (`sagas participant`).
///
/// `ended_sagas` is also the trigger deduplication window: a trigger is a duplicate because
/// its idempotency key maps to an existing saga row, so once an ended saga is deleted, the
/// same trigger sent again starts a new saga. `barrier` must outlast every redelivery of a
/// command and its undo: at least the longest the engine keeps re-sending a step (checked by
/// [`Settings::validate`]), and in practice the longest a parked saga may wait for an
/// operator's `resume`; a barrier row deleted before that lets a redelivered command run
/// again and turns its undo into a null compensation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Delete expired rows at all (default true).
    pub enabled: bool,
    /// Time between two sweeps (default 5 min).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Rows one delete statement removes (default 1,000; for ended sagas: sagas, each with
    /// its events).
    pub batch_size: u32,
    /// Pause between two full batches (default 100 ms).
    #[serde(with = "humantime_serde")]
    pub batch_pause: Duration,
    /// Engine inbox rows, consumed message ids and operator `Idempotency-Key`s (default 7
    /// days, Kafka's default topic retention: keep it at least the retention of the
    /// engine's input topics).
    #[serde(with = "humantime_serde")]
    pub inbox: Duration,
    /// Completed, compensated and manually resolved sagas with their events, counted from
    /// their last change (default 30 days); running, compensating and parked sagas are never
    /// deleted. The trigger deduplication window.
    #[serde(with = "humantime_serde")]
    pub ended_sagas: Duration,
    /// Participant barrier rows (default 30 days: a month for an operator to resume a
    /// parked saga).
    #[serde(with = "humantime_serde")]
    pub barrier: Duration,
    /// Dead letters, open or discarded, counted from when they were dead-lettered (default
    /// 30 days).
    #[serde(with = "humantime_serde")]
    pub dead_letters: Duration,
    /// Outbox rows the broker refused for good (default 30 days).
    #[serde(with = "humantime_serde")]
    pub set_aside_outbox: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        let engine = saga_engine::retention::RetentionSettings::default();
        let participant = saga_participant::retention::RetentionSettings::default();
        RetentionSettings {
            enabled: true,
            interval: engine.interval,
            batch_size: engine.batch_size,
            batch_pause: engine.batch_pause,
            inbox: engine.inbox,
            ended_sagas: engine.ended_sagas,
            barrier: participant.barrier,
            dead_letters: engine.dead_letters,
            set_aside_outbox: engine.set_aside_outbox,
        }
    }
}

impl RetentionSettings {
    /// What the engine deletes, or `None` when retention is off.
    pub fn engine(&self) -> Option<saga_engine::retention::RetentionSettings> {
        self.enabled
            .then_some(saga_engine::retention::RetentionSettings {
                interval: self.interval,
                batch_size: self.batch_size,
                batch_pause: self.batch_pause,
                inbox: self.inbox,
                ended_sagas: self.ended_sagas,
                dead_letters: self.dead_letters,
                set_aside_outbox: self.set_aside_outbox,
            })
    }

    /// What a domain service deletes, or `None` when retention is off.
    pub fn participant(&self) -> Option<saga_participant::retention::RetentionSettings> {
        self.enabled
            .then_some(saga_participant::retention::RetentionSettings {
                interval: self.interval,
                batch_size: self.batch_size,
                batch_pause: self.batch_pause,
                barrier: self.barrier,
                dead_letters: self.dead_letters,
                set_aside_outbox: self.set_aside_outbox,
            })
    }
}

impl CheckoutSettings {
    /// The longest the engine keeps sending commands of one checkout step without an
    /// operator: every forward and every undo attempt waiting its full timeout and the
    /// longest backoff. A barrier row must outlive it.
    pub fn longest_redelivery(&self) -> Duration {
        let attempts = self.forward_attempts.saturating_add(self.settle_attempts);
        (self.step_timeout + self.retry_max_backoff).saturating_mul(attempts)
    }
}

/// A setting that cannot be used, in one line: which key, what is wrong, where it came from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(String);

/// Values given as command-line flags: the last layer, over file and environment. Each is a
/// dotted key (`kafka.brokers`) and its value.
pub type FlagOverrides = Vec<(&'static str, figment::value::Value)>;

impl Settings {
    /// Loads defaults ← `config_file` (when given; it must exist) ← environment ← `flags`,
    /// then checks the result.
    pub fn load(config_file: Option<&Path>, flags: FlagOverrides) -> Result<Self, SettingsError> {
        let mut figment = Figment::new();
        if let Some(path) = config_file {
            if !path.is_file() {
                return Err(SettingsError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let usual = [
            ("DATABASE_URL", "database_url"),
            ("KAFKA_BROKERS", "kafka.brokers"),
            ("TOPIC_PREFIX", "topics.prefix"),
            ("SAGAS_ADMIN_TOKEN", "admin.token"),
        ];
        for (variable, key) in usual {
            figment = figment.merge(
                Env::raw()
                    .only(&[variable])
                    .map(move |_| key.into())
                    .split("."),
            );
        }
        figment = figment.merge(
            Env::prefixed("SAGAS_")
                .filter(|key| key != "admin_token" && key != "admin_url")
                .split("__"),
        );
        for (key, value) in flags {
            figment = figment.merge((key, value));
        }
        let settings: Settings = figment
            .extract()
            .map_err(|error| SettingsError(one_line(error)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Refuses values that parse but cannot work.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let checks = [
            (
                self.kafka.brokers.trim().is_empty(),
                "kafka.brokers must not be empty",
            ),
            (
                self.kafka.replication_factor < 1,
                "kafka.replication_factor must be at least 1",
            ),
            (
                self.engine.partitions < 1,
                "engine.partitions must be at least 1",
            ),
            (
                self.participant.partitions < 1,
                "participant.partitions must be at least 1",
            ),
            (
                self.engine.consumer.lanes < 1,
                "engine.consumer.lanes must be at least 1",
            ),
            (
                self.participant.consumer.lanes < 1,
                "participant.consumer.lanes must be at least 1",
            ),
            (
                self.engine.relay.batch_size < 1,
                "engine.relay.batch_size must be at least 1",
            ),
            (
                self.participant.relay.batch_size < 1,
                "participant.relay.batch_size must be at least 1",
            ),
            (
                self.engine.pool.max_connections < 2,
                "engine.pool.max_connections must be at least 2",
            ),
            (
                self.participant.pool.max_connections < 2,
                "participant.pool.max_connections must be at least 2",
            ),
            (
                self.checkout.step_timeout.is_zero(),
                "checkout.step_timeout must be longer than zero",
            ),
            (
                self.checkout.forward_attempts < 1,
                "checkout.forward_attempts must be at least 1",
            ),
            (
                self.checkout.settle_attempts < 1,
                "checkout.settle_attempts must be at least 1",
            ),
            (self.demo.users < 1, "demo.users must be at least 1"),
            (
                self.retention.batch_size < 1,
                "retention.batch_size must be at least 1",
            ),
            (
                self.retention.interval.is_zero(),
                "retention.interval must be longer than zero",
            ),
        ];
        let database_url = self.database_url.expose();
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(SettingsError(format!(
                "database_url `{}` must start with postgres:// or postgresql://",
                self.database_url
            )));
        }
        if let Some((_, message)) = checks.iter().find(|(wrong, _)| *wrong) {
            return Err(SettingsError(message.to_string()));
        }
        let redelivery = self.checkout.longest_redelivery();
        if self.retention.enabled && self.retention.barrier < redelivery {
            return Err(SettingsError(format!(
                "retention.barrier ({}) must be at least the longest a checkout command can \
                 be re-sent, {} ((forward_attempts + settle_attempts) x (step_timeout + \
                 retry_max_backoff))",
                humantime_serde::re::humantime::format_duration(self.retention.barrier),
                humantime_serde::re::humantime::format_duration(redelivery)
            )));
        }
        let produce_limit = self.kafka.produce_limit().map_err(SettingsError)?;
        for (side, consumer) in [
            ("engine", &self.engine.consumer),
            ("participant", &self.participant.consumer),
        ] {
            consumer
                .check_fits(produce_limit)
                .map_err(|message| SettingsError(format!("{side}.{message}")))?;
        }
        Ok(())
    }

    /// Where Postgres and Kafka are and how topics are named.
    pub fn connections(&self) -> Connections {
        Connections {
            database_url: self.database_url.clone(),
            kafka: self.kafka.clone(),
            topics: self.topics.clone(),
        }
    }

    /// The effective settings as TOML, secrets hidden.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|error| format!("# not printable: {error}"))
    }
}

/// figment's error on one line, with the key and where the value came from.
fn one_line(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| e.to_string().replace('\n', " "))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
// `Jail::expect_with` fixes the closure's error type to figment's own.
#[allow(clippy::result_large_err)]
mod tests {
    use figment::Jail;

    use super::*;

    fn load_in_jail(flags: FlagOverrides) -> Result<Settings, String> {
        Settings::load(Some(Path::new("sagas.toml")), flags).map_err(|e| e.to_string())
    }

    #[test]
    fn layers_apply_in_order_file_then_environment_then_flags() {
        Jail::expect_with(|jail| {
            // The process's own DATABASE_URL, KAFKA_BROKERS, SAGAS_* must not leak in.
            jail.clear_env();
            jail.create_file(
                "sagas.toml",
                r#"
                database_url = "postgres://file@db:5432/sagas"
                [kafka]
                brokers = "file:9092"
                [engine]
                partitions = 3
                [engine.consumer]
                lanes = 2
                [checkout]
                step_timeout = "20s"
                parallel = false
                "#,
            )?;
            jail.set_env("KAFKA_BROKERS", "usual:9092");
            jail.set_env("SAGAS_ENGINE__CONSUMER__LANES", "4");
            jail.set_env("SAGAS_CHECKOUT__STEP_TIMEOUT", "750ms");
            jail.set_env("SAGAS_ADMIN_TOKEN", "t0ken-xyz");
            let settings = load_in_jail(vec![("topics.prefix", "flag.".into())]).unwrap();
            assert_eq!(
                settings.database_url.expose(),
                "postgres://file@db:5432/sagas"
            );
            assert_eq!(settings.kafka.brokers, "usual:9092");
            assert_eq!(settings.engine.partitions, 3);
            assert_eq!(settings.engine.consumer.lanes, 4);
            assert_eq!(settings.checkout.step_timeout, Duration::from_millis(750));
            assert!(!settings.checkout.parallel);
            assert_eq!(settings.topics.prefix, "flag.");
            assert_eq!(
                settings.admin.token.as_ref().map(|t| t.expose()),
                Some("t0ken-xyz")
            );
            assert!(!settings.to_toml().contains("t0ken-xyz"));
            assert!(!format!("{settings:?}").contains("t0ken-xyz"));
            // Untouched keys keep their defaults.
            assert_eq!(settings.engine.relay, Default::default());

            jail.set_env("SAGAS_KAFKA__BROKERS", "specific:9092");
            let settings = load_in_jail(vec![("kafka.brokers", "flag:9092".into())]).unwrap();
            assert_eq!(settings.kafka.brokers, "flag:9092");
            let settings = load_in_jail(vec![]).unwrap();
            assert_eq!(settings.kafka.brokers, "specific:9092");
            Ok(())
        });
    }

    #[test]
    fn a_wrong_setting_is_one_line_naming_the_key() {
        Jail::expect_with(|jail| {
            // The process's own DATABASE_URL, KAFKA_BROKERS, SAGAS_* must not leak in.
            jail.clear_env();
            jail.create_file("sagas.toml", "[engine]\npartitions = \"many\"\n")?;
            let error = load_in_jail(vec![]).unwrap_err();
            assert!(!error.contains('\n'), "{error}");
            assert!(error.contains("partitions"), "{error}");

            jail.create_file("sagas.toml", "[engine]\nparitions = 3\n")?;
            let error = load_in_jail(vec![]).unwrap_err();
            assert!(error.contains("paritions"), "{error}");

            jail.create_file("sagas.toml", "")?;
            jail.set_env("SAGAS_ENGINE__PARTITIONS", "0");
            let error = load_in_jail(vec![]).unwrap_err();
            assert_eq!(error, "engine.partitions must be at least 1");

            // What the engine accepts must fit, wrapped, in what its producers send.
            jail.set_env("SAGAS_ENGINE__PARTITIONS", "1");
            jail.set_env("SAGAS_ENGINE__CONSUMER__MAX_MESSAGE_BYTES", "990000");
            let error = load_in_jail(vec![]).unwrap_err();
            assert!(
                error.starts_with("engine.consumer.max_message_bytes = 990000 leaves less"),
                "{error}"
            );
            Ok(())
        });
        let missing = Settings::load(Some(Path::new("/nonexistent/sagas.toml")), vec![]);
        assert!(missing.unwrap_err().to_string().contains("does not exist"));
    }

    #[test]
    fn retention_defaults_reach_the_engine_and_the_services_and_can_be_turned_off() {
        let days = |d: u64| Duration::from_secs(d * 24 * 60 * 60);
        let settings = Settings::default();
        let engine = settings.retention.engine().unwrap();
        assert_eq!(
            (engine.inbox, engine.ended_sagas, engine.dead_letters),
            (days(7), days(30), days(30))
        );
        assert_eq!(engine.set_aside_outbox, days(30));
        let participant = settings.retention.participant().unwrap();
        assert_eq!(participant.barrier, days(30));
        assert_eq!(participant.batch_size, 1_000);
        assert!(settings.to_toml().contains("ended_sagas = \"30days\""));
        let off = RetentionSettings {
            enabled: false,
            ..RetentionSettings::default()
        };
        assert_eq!((off.engine(), off.participant()), (None, None));
    }

    #[test]
    fn the_replication_factor_of_new_topics_is_a_setting() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("sagas.toml", "")?;
            let settings = load_in_jail(vec![]).unwrap();
            assert_eq!(settings.kafka.replication_factor, 1);
            assert!(settings.to_toml().contains("replication_factor = 1"));
            jail.set_env("SAGAS_KAFKA__REPLICATION_FACTOR", "3");
            let settings = load_in_jail(vec![]).unwrap();
            assert_eq!(settings.connections().kafka.replication_factor, 3);
            jail.set_env("SAGAS_KAFKA__REPLICATION_FACTOR", "0");
            assert_eq!(
                load_in_jail(vec![]).unwrap_err(),
                "kafka.replication_factor must be at least 1"
            );
            Ok(())
        });
    }

    #[test]
    fn barrier_rows_must_outlive_every_resend_of_a_command() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "sagas.toml",
                "[retention]\nbarrier = \"10m\"\ninbox = \"1day\"\n",
            )?;
            // (5 + 20) attempts x (15 s timeout + 10 s backoff) = 625 s > 10 min.
            let error = load_in_jail(vec![]).unwrap_err();
            assert!(
                error.starts_with("retention.barrier (10m) must be at least the longest"),
                "{error}"
            );
            assert!(error.contains("10m 25s"), "{error}");
            jail.set_env("SAGAS_CHECKOUT__STEP_TIMEOUT", "10s");
            let settings = load_in_jail(vec![]).unwrap();
            assert_eq!(settings.retention.barrier, Duration::from_secs(600));
            assert_eq!(settings.retention.inbox, Duration::from_secs(86_400));
            // Retention off: nothing is deleted, so nothing to check.
            jail.set_env("SAGAS_CHECKOUT__STEP_TIMEOUT", "15s");
            jail.set_env("SAGAS_RETENTION__ENABLED", "false");
            assert!(load_in_jail(vec![]).unwrap().retention.engine().is_none());
            jail.set_env("SAGAS_RETENTION__BATCH_SIZE", "0");
            assert_eq!(
                load_in_jail(vec![]).unwrap_err(),
                "retention.batch_size must be at least 1"
            );
            Ok(())
        });
    }

    #[test]
    fn printed_settings_hide_the_password_and_read_back() {
        let mut settings = Settings {
            database_url: DatabaseUrl::new("postgres://app:s3cret@db:5432/sagas"),
            ..Settings::default()
        };
        settings
            .kafka
            .overrides
            .insert("sasl.password".into(), "hunter2".into());
        let text = settings.to_toml();
        assert!(
            !text.contains("s3cret") && !text.contains("hunter2"),
            "{text}"
        );
        assert!(text.contains("step_timeout = \"15s\""), "{text}");
        assert!(!format!("{settings:?}").contains("s3cret"));
        // Apart from the hidden secrets, the printed form is a valid config file.
        let back: Settings = toml::from_str(&text).unwrap();
        assert_eq!(back.engine, settings.engine);
        assert_eq!(back.checkout, settings.checkout);
        assert_eq!(back.retention, settings.retention);
    }
}
