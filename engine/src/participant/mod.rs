//! The participant kit: how a domain service answers saga commands safely.
//!
//! A domain implements [`TccParticipant`] or [`CompensableParticipant`] (business logic
//! only; [`Tcc`] and [`Compensable`] turn them into a [`CommandHandler`]). The kit runs it inside one
//! transaction together with the barrier row `(gid, branch, op)` and the reply in the
//! domain's outbox ([`handle_command`]), which gives:
//! - a duplicate command gets the stored reply again, business data untouched;
//! - Cancel/Compensate before its Try/Action (null compensation) is recorded and answered ok;
//! - a Try/Action after its Cancel/Compensate (hanging) is rejected, business data untouched;
//! - Confirm, Cancel and Compensate are idempotent.
//!
//! [`ParticipantWorker`] feeds it from a Kafka commands topic.

mod barrier;
mod kit;
mod typed;
mod worker;

use async_trait::async_trait;
use saga_schemas::Phase;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

pub use kit::{handle_command, reply_message_id, Handled};
pub use typed::{Compensable, CompensableParticipant, Tcc, TccParticipant};
pub use worker::{ParticipantWorker, WorkerSettings};

/// One command as a participant sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The saga (global transaction id).
    pub saga_id: Uuid,
    /// The step (branch) within the saga.
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

/// Why a handler did not succeed, and whether retrying can help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    /// A business rejection (insufficient funds, coupon used...): never retried.
    #[error("rejected: {0}")]
    Rejected(String),
    /// A transient failure: the engine sends the command again later.
    #[error("retryable: {0}")]
    Retryable(String),
}

/// Turns any error into a [`StepError`] that says whether retrying can help.
pub trait StepResultExt<T> {
    /// Treat the error as transient.
    fn retryable(self) -> Result<T, StepError>;
    /// Treat the error as a business rejection.
    fn fatal(self) -> Result<T, StepError>;
}

impl<T, E: std::fmt::Display> StepResultExt<T> for Result<T, E> {
    fn retryable(self) -> Result<T, StepError> {
        self.map_err(|e| StepError::Retryable(e.to_string()))
    }

    fn fatal(self) -> Result<T, StepError> {
        self.map_err(|e| StepError::Rejected(e.to_string()))
    }
}

/// A domain's business logic for the commands it receives. It runs inside the kit's
/// transaction and never sees the barrier or the outbox; its writes commit only if it
/// returns `Ok`.
#[async_trait]
pub trait CommandHandler: Send + Sync {
    /// Applies `command`, returning the step's output.
    async fn handle(&self, tx: &mut PgConnection, command: &Command) -> Result<Value, StepError>;
}
