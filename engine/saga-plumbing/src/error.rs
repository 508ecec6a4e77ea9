//! Infrastructure errors. Callers ask [`Error::is_retryable`]; nobody matches on strings.

use uuid::Uuid;

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong below the saga logic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another writer appended to the saga first; reload and decide again.
    #[error("saga {saga_id}: expected version {expected}, but another writer appended first")]
    VersionConflict {
        /// The saga whose history moved on.
        saga_id: Uuid,
        /// The version the caller based its decision on.
        expected: i64,
    },
    /// A Postgres operation failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Running migrations failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A Kafka operation failed.
    #[error("kafka {operation} on topic `{topic}`: {source}")]
    Kafka {
        /// What was attempted (produce, consume, create topic...).
        operation: &'static str,
        /// The topic involved, empty when none.
        topic: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A value could not be encoded or decoded as JSON.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A background task ended before shutdown; the process stops.
    #[error("background task stopped: {0}")]
    Stopped(String),
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// This process cannot handle the input yet, but another process (or this one after a
    /// deploy) can: e.g. a reply for a saga of a definition version it does not register.
    /// Retried with backoff; the message is kept, never dropped or dead-lettered.
    #[error("deferred: {0}")]
    Deferred(String),
}

impl Error {
    /// Whether trying the same operation again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::VersionConflict { .. } | Error::Deferred(_) => true,
            Error::Database(e) => database_error_is_retryable(e),
            Error::Kafka { source, .. } => kafka_error_is_retryable(source),
            Error::Migrate(_) | Error::Json(_) | Error::Config(_) | Error::Stopped(_) => false,
        }
    }
}

fn database_error_is_retryable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.code().is_none_or(|code| sqlstate_is_transient(&code)),
        // A connection that broke, timed out or could not be had: the next one may work.
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Decoding a row we wrote ourselves failed: a schema out of step with this binary
        // (a migration missing), not the message's fault; waiting for the fix keeps it.
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::Decode(_) => true,
        _ => false,
    }
}

/// Whether a Postgres error with SQLSTATE `code` is worth retrying, by its class: only
/// data exceptions (22), integrity violations (23) and program limits (54: a row or value
/// too big) are caused by what was written, so only they mark a message as poison.
/// Connection (08), transaction rollback (40), resources (53), operator intervention (57,
/// e.g. admin shutdown), system errors (58), read-only after a failover (25006), lock
/// timeouts (55P03) and anything unknown are retried: the message is kept.
pub fn sqlstate_is_transient(code: &str) -> bool {
    let class = code.get(..2).unwrap_or(code);
    !matches!(class, "22" | "23" | "54")
}

fn kafka_error_is_retryable(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::KafkaError;
    match error {
        KafkaError::MessageProduction(code) | KafkaError::MessageConsumption(code) => {
            !is_refusal(*code)
        }
        KafkaError::AdminOp(code) => !is_refusal(*code) && !is_admin_refusal(*code),
        KafkaError::Canceled | KafkaError::ClientCreation(_) => false,
        _ => true,
    }
}

/// Whether a produce error means the broker or client will never take this message as it
/// is (too large, malformed, a topic that cannot exist or may not be written), so sending
/// it again cannot help.
pub fn is_refusal(code: rdkafka::error::RDKafkaErrorCode) -> bool {
    use rdkafka::error::RDKafkaErrorCode as Code;
    matches!(
        code,
        Code::MessageSizeTooLarge
            | Code::InvalidMessage
            | Code::InvalidMessageSize
            | Code::MessageBatchTooLarge
            | Code::InvalidRecord
            | Code::InvalidTopic
            | Code::TopicAuthorizationFailed
            | Code::BadMessage
    )
}

/// Whether an admin request was refused for good (a setting the broker will never take).
fn is_admin_refusal(code: rdkafka::error::RDKafkaErrorCode) -> bool {
    use rdkafka::error::RDKafkaErrorCode as Code;
    matches!(
        code,
        Code::InvalidPartitions
            | Code::InvalidReplicationFactor
            | Code::InvalidReplicaAssignment
            | Code::InvalidConfig
            | Code::PolicyViolation
            | Code::ClusterAuthorizationFailed
    )
}

/// Whether a database error is a unique-key violation (SQLSTATE 23505).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

#[cfg(test)]
mod tests {
    use super::sqlstate_is_transient;

    #[test]
    fn only_content_errors_are_poison() {
        let transient = [
            "08006", "08001", "40001", "40P01", "53200", "53300", "57P01", "57P02", "57P03",
            "57014", "58030", "25006", "55P03", "42P01", "XX000",
        ];
        for code in transient {
            assert!(sqlstate_is_transient(code), "{code} should be retried");
        }
        let content = ["22P05", "22021", "22003", "23505", "23514", "54000"];
        for code in content {
            assert!(!sqlstate_is_transient(code), "{code} should be poison");
        }
    }
}

#[cfg(test)]
mod kafka_tests {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode as Code};

    use super::*;

    fn admin(code: Code) -> Error {
        Error::Kafka {
            operation: "create topics",
            topic: "t".into(),
            source: KafkaError::AdminOp(code),
        }
    }

    #[test]
    fn creating_topics_is_retried_while_the_broker_is_away_but_not_when_refused() {
        for passing in [
            Code::BrokerTransportFailure,
            Code::AllBrokersDown,
            Code::Unknown,
        ] {
            assert!(admin(passing).is_retryable(), "{passing:?}");
        }
        for refused in [
            Code::InvalidPartitions,
            Code::PolicyViolation,
            Code::InvalidTopic,
        ] {
            assert!(!admin(refused).is_retryable(), "{refused:?}");
        }
    }
}
