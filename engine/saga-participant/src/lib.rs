//! The participant kit: how a domain service answers saga commands safely. A domain
//! service links this crate, never the orchestrator (`saga-engine`).
//!
//! Map of the crate:
//! - [`typed`]: [`TccParticipant`] and [`CompensableParticipant`] — what a domain writes.
//! - [`kit`]: [`handle_command`] — one command through barrier, handler and reply, in one
//!   transaction.
//! - `barrier`: the pure decision of what to do with a command, from the barrier rows.
//! - [`group`]: [`handle_group_in`], a lane's group of commands in one transaction, one statement per kit table.
//! - [`metrics`]: commands handled, barrier duplicates, null compensations.
//! - [`retention`]: deletes old barrier rows, dead letters and set-aside outbox rows.
//! - [`worker`]: [`ParticipantWorker`] — feeds a commands topic through the kit.
//!
//! A domain implements [`TccParticipant`] or [`CompensableParticipant`] (business logic
//! only; [`Tcc`] and [`Compensable`] turn them into a [`CommandHandler`]). The kit runs it inside one
//! transaction together with the barrier row `(saga_id, step, phase)` and the reply in the
//! domain's outbox ([`handle_command`]), which gives:
//! - a duplicate command gets the stored reply again, business data untouched;
//! - Cancel/Compensate before its Try/Action (null compensation) is recorded and answered ok;
//! - a Try/Action after its Cancel/Compensate (hanging) is rejected, business data untouched;
//! - Confirm, Cancel and Compensate are idempotent;
//! - a Try/Action past its saga's deadline (header `saga.deadline`) is rejected with the
//!   reason `deadline passed`, business data untouched.
//!
//! [`ParticipantWorker`] feeds it from a Kafka commands topic.

mod barrier;
pub mod group;
pub mod kit;
pub mod metrics;
pub mod retention;
pub mod typed;
pub mod worker;

use async_trait::async_trait;
pub use group::{handle_group_in, Delivery};
pub use kit::{
    handle_command, handle_command_before, handle_command_in, reply_message_id, Handled,
};
pub use saga_core::{StepError, StepResultExt};
use schemas::Phase;
use serde_json::Value;
use sqlx::PgConnection;
pub use typed::{Compensable, CompensableParticipant, Tcc, TccParticipant};
use uuid::Uuid;
pub use worker::{ParticipantSettings, ParticipantWorker, WorkerTopics};

/// Participant kit tables for a domain schema: `barrier`, `outbox`. A domain runs its own
/// migrations after these in the same schema; every migrator there ignores the versions of
/// the others (`ignore_missing`), so their version numbers must not collide.
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("../../migrations/participant")
};

/// One command as a participant sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The saga.
    pub saga_id: Uuid,
    /// The step within the saga.
    pub step: String,
    /// Which phase of the step to run.
    pub phase: Phase,
    /// Delivery attempt, from 1.
    pub attempt: u32,
    /// The step's command body.
    pub payload: Value,
    /// The command's W3C `traceparent`, passed on to the reply.
    pub traceparent: Option<String>,
}

/// A domain's business logic for the commands it receives. It runs inside the kit's
/// transaction and never sees the barrier or the outbox; its writes commit only if it
/// returns `Ok`. Used as a trait object (a service picks its handler at run time), hence
/// `async_trait`; the typed traits a domain implements are native async traits.
#[async_trait]
pub trait CommandHandler: Send + Sync {
    /// Applies `command`, returning the step's output.
    async fn handle(&self, tx: &mut PgConnection, command: &Command) -> Result<Value, StepError>;

    /// Checks `command` before anything runs: `Err` says why it can never be applied (a
    /// body that does not decode or breaks the contract's bounds), and the worker
    /// dead-letters it as poison instead of answering. Accepts everything by default.
    fn validate(&self, command: &Command) -> Result<(), String> {
        let _ = command;
        Ok(())
    }
}
