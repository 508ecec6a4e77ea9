//! Saga engine: the durable substrate sagas run on.
//!
//! Map of the crate:
//! - [`db`]: connecting to Postgres (one schema per component) and running migrations.
//! - [`store`]: the event store — append a saga's events with an expected version and keep
//!   its `sagas` projection row in the same transaction; load its history.
//! - [`inbox`]: consumed-message deduplication inside the caller's transaction.
//! - [`outbox`]: enqueue messages inside the caller's transaction, and the [`outbox::Relay`]
//!   that publishes them to Kafka and deletes them once acknowledged.
//! - [`kafka`]: client settings with latency-friendly defaults, producer, consumer and topic
//!   factories.
//! - [`saga`]: the saga logic without I/O — definitions, state, events and `decide`.
//! - [`runtime`]: the engine process — trigger and reply consumers, timers, transitions.
//! - [`participant`]: the kit a domain service uses to answer commands safely — the barrier
//!   (dedup, null compensation, hanging protection) and the reply, in one transaction with
//!   the business write.
//! - [`consume`]: the shared Kafka consumer loop (retry, DLQ, offset after commit).
//! - [`dlq`]: the dead-letter queue for messages that cannot be processed.
//! - [`trace`]: W3C trace context carried across Kafka headers.
//! - [`error`]: infrastructure errors that say whether retrying can help.

pub mod consume;
pub mod db;
pub mod dlq;
pub mod error;
pub mod inbox;
pub mod kafka;
pub mod outbox;
pub mod participant;
pub mod runtime;
pub mod saga;
pub mod store;
pub mod trace;

pub use error::{Error, Result};
