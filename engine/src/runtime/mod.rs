//! The saga runtime: the I/O around [`crate::saga::decide`].
//!
//! - [`transition`]: the one transaction every input goes through.
//! - [`inputs`]: trigger and reply messages as saga inputs.
//! - [`timers`]: the poller that fires durable timers.
//! - [`engine`]: the process that runs all of it, with the outbox relay.
//! - [`registry`], [`topics`]: known definitions and topic names.

pub mod engine;
pub mod inputs;
pub mod registry;
pub mod timers;
pub mod topics;
pub mod transition;

pub use engine::{Engine, EngineBuilder, EngineSettings};
pub use registry::Registry;
pub use topics::Topics;
pub use transition::{Applied, Source, Transitions};
