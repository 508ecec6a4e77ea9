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
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// Whether trying the same operation again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::VersionConflict { .. } => true,
            Error::Database(e) => database_error_is_retryable(e),
            Error::Kafka { source, .. } => kafka_error_is_retryable(source),
            Error::Migrate(_) | Error::Json(_) | Error::Config(_) => false,
        }
    }
}

fn database_error_is_retryable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            // serialization failure, deadlock, too many connections, admin shutdown
            Some("40001" | "40P01" | "53300" | "57P01")
        ),
        _ => false,
    }
}

fn kafka_error_is_retryable(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    match error {
        KafkaError::MessageProduction(code) | KafkaError::MessageConsumption(code) => !matches!(
            code,
            RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessage
        ),
        KafkaError::Canceled | KafkaError::ClientCreation(_) => false,
        _ => true,
    }
}

/// Whether a database error is a unique-key violation (SQLSTATE 23505).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}
