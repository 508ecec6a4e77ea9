//! The Postgres and Kafka plumbing both sides of a saga use: the engine (`saga-engine`) and
//! the participants (`saga-participant`). No saga logic lives here.
//!
//! Map of the crate:
//! - [`db`]: connecting to Postgres (one schema per component) and running migrations;
//!   [`db::DatabaseUrl`] keeps the password out of logs.
//! - [`connections`]: [`Connections`] — where Postgres and Kafka are and how topics are
//!   named; what the engine and the participants of one deployment share.
//! - [`kafka`]: client settings with latency-friendly defaults, producer, consumer and topic
//!   factories.
//! - [`topics`]: the topic names of a deployment.
//! - [`consume`]: the consumer loop every input shares — partitions in parallel lanes,
//!   infrastructure errors retried, poison messages dead-lettered, the offset stored only
//!   after the effect is committed.
//! - [`dlq`]: the dead-letter queue and its per-process count.
//! - [`health`]: what background parts report for readiness checks.
//! - [`inbox`]: consumed-message deduplication inside the caller's transaction.
//! - [`outbox`]: enqueue messages inside the caller's transaction, and the
//!   [`outbox::Relay`] that publishes them and deletes them once acknowledged.
//! - [`retention`]: deleting expired rows in small batches, shared by every component's
//!   retention sweep.
//! - [`supervise`]: background tasks that live and die together — the first to end early
//!   stops the process.
//! - [`trace`]: W3C trace context carried across Kafka headers.
//! - [`metrics`]: dead-letter and relay metrics.
//! - [`error`]: infrastructure errors that say whether retrying can help.

pub mod connections;
pub mod consume;
pub mod db;
pub mod dlq;
pub mod error;
pub mod health;
pub mod inbox;
pub mod kafka;
pub mod metrics;
pub mod outbox;
pub mod retention;
pub mod supervise;
pub mod topics;
pub mod trace;

pub use connections::Connections;
pub use error::{Error, Result};
