//! The saga engine: the orchestrator process that drives sagas of registered definitions.
//!
//! Map of the crate:
//! - [`engine`]: [`Engine`] — builds (migrations, topics) and runs the consumers, the timer
//!   poller and the outbox relay until shutdown; its [`EngineSettings`].
//! - [`breaker`]: a circuit breaker per participant — holds new forward commands back
//!   while a participant keeps failing, then lets a probe through.
//! - [`transition`]: the one transaction every input goes through — inbox, load, `decide`,
//!   events and projection, outbox, timers.
//! - [`group`]: group commit — the inputs a consumer lane took at once, decided in memory
//!   and written with one statement per table.
//! - [`inputs`]: trigger and reply messages turned into saga inputs.
//! - [`idempotency`]: triggers deduplicated by idempotency key; a key reused with another
//!   payload is refused and announced.
//! - [`ignored`]: replies that change nothing, counted by reason and logged (rate-limited).
//! - [`timers`]: the poller that fires durable timers.
//! - [`store`]: the event store — append with an expected version, the `sagas` projection.
//! - [`history`]: folding stored events again to check the snapshots (`verify-history`).
//! - [`metrics`]: the engine's metric names and where they are recorded.
//! - [`registry`]: the definitions this process knows, by name, version and trigger topic.
//! - [`versions`]: definition versions across deploys — fingerprints of their steps, and
//!   readiness only while every version with sagas in flight is registered.
//! - [`retention`]: deletes what is no longer needed (old inbox rows, ended sagas, old dead
//!   letters and set-aside outbox rows) in small batches.
//!
//! The saga rules themselves are in `saga-core`; the Postgres/Kafka pieces shared with the
//! participants are in `saga-plumbing`. The admin API (`saga-admin`) renders the metrics.

pub mod breaker;
pub mod engine;
pub mod group;
pub mod history;
pub mod idempotency;
pub mod ignored;
pub mod inputs;
pub mod metrics;
pub mod registry;
pub mod retention;
pub mod store;
pub mod timers;
pub mod transition;
pub mod versions;

pub use engine::{Engine, EngineBuilder, EngineSettings};
pub use registry::Registry;
pub use saga_plumbing::{Error, Result};
pub use transition::{Applied, Source, Transitions};

/// Engine tables: `saga_events`, `sagas`, `inbox`, `outbox`, `timers`.
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("../../migrations/engine")
};
