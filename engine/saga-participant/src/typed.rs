//! Typed participant traits: what a domain implements instead of [`CommandHandler`].
//!
//! A TCC participant answers try / confirm / cancel; a compensable participant answers
//! action / compensate. [`Tcc`] and [`Compensable`] adapt them to [`CommandHandler`]: they
//! decode the command body into the domain's type and dispatch on the phase. Their
//! `validate` decodes and checks the body first, so the worker dead-letters a body that
//! does not decode or is out of bounds as poison; called directly (without the worker),
//! such a body is a rejection, since retrying cannot fix it.

use std::future::Future;

use async_trait::async_trait;
use schemas::Phase;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgConnection;

use crate::{Command, CommandHandler, StepError};

/// A participant with a TCC branch: reserve, then confirm or cancel the reservation.
/// Implement the methods as `async fn`.
pub trait TccParticipant: Send + Sync + 'static {
    /// The command body, the same for all three phases.
    type Command: DeserializeOwned + Send + Sync;
    /// Reserve; `Rejected` when the business says no.
    fn try_(
        &self,
        tx: &mut PgConnection,
        cmd: &Self::Command,
    ) -> impl Future<Output = Result<Value, StepError>> + Send;
    /// Make the reservation final. Runs only after a successful try.
    fn confirm(
        &self,
        tx: &mut PgConnection,
        cmd: &Self::Command,
    ) -> impl Future<Output = Result<(), StepError>> + Send;
    /// Release the reservation. Runs only after a successful try.
    fn cancel(
        &self,
        tx: &mut PgConnection,
        cmd: &Self::Command,
    ) -> impl Future<Output = Result<(), StepError>> + Send;
    /// Checks a decoded command before any phase runs (bounds of its fields); `Err` makes
    /// it poison (dead-lettered). Accepts everything by default.
    fn validate(&self, cmd: &Self::Command) -> Result<(), String> {
        let _ = cmd;
        Ok(())
    }
}

/// A participant with a compensable step: act, and undo when the saga fails.
/// Implement the methods as `async fn`.
pub trait CompensableParticipant: Send + Sync + 'static {
    /// The command body, the same for both phases.
    type Command: DeserializeOwned + Send + Sync;
    /// The forward action; `Rejected` when the business says no.
    fn action(
        &self,
        tx: &mut PgConnection,
        cmd: &Self::Command,
    ) -> impl Future<Output = Result<Value, StepError>> + Send;
    /// Undo the action. Runs only after a successful action.
    fn compensate(
        &self,
        tx: &mut PgConnection,
        cmd: &Self::Command,
    ) -> impl Future<Output = Result<(), StepError>> + Send;
    /// Checks a decoded command before any phase runs (bounds of its fields); `Err` makes
    /// it poison (dead-lettered). Accepts everything by default.
    fn validate(&self, cmd: &Self::Command) -> Result<(), String> {
        let _ = cmd;
        Ok(())
    }
}

/// Adapts a [`TccParticipant`] to a [`CommandHandler`].
pub struct Tcc<P>(pub P);

/// Adapts a [`CompensableParticipant`] to a [`CommandHandler`].
pub struct Compensable<P>(pub P);

fn decode<C: DeserializeOwned>(command: &Command) -> Result<C, StepError> {
    serde_json::from_value(command.payload.clone()).map_err(|e| {
        StepError::Rejected(format!(
            "command body for step `{}` is invalid: {e}",
            command.step
        ))
    })
}

fn wrong_phase(command: &Command, expected: &str) -> StepError {
    StepError::Rejected(format!(
        "step `{}` is {expected}; it has no `{}` phase",
        command.step, command.phase
    ))
}

#[async_trait]
impl<P: TccParticipant> CommandHandler for Tcc<P> {
    fn validate(&self, command: &Command) -> Result<(), String> {
        let body: P::Command = decode(command).map_err(|e| e.to_string())?;
        self.0.validate(&body)
    }

    async fn handle(&self, tx: &mut PgConnection, command: &Command) -> Result<Value, StepError> {
        let body: P::Command = decode(command)?;
        match command.phase {
            Phase::Try => self.0.try_(tx, &body).await,
            Phase::Confirm => self.0.confirm(tx, &body).await.map(|()| Value::Null),
            Phase::Cancel => self.0.cancel(tx, &body).await.map(|()| Value::Null),
            Phase::Action | Phase::Compensate => Err(wrong_phase(command, "a TCC branch")),
        }
    }
}

#[async_trait]
impl<P: CompensableParticipant> CommandHandler for Compensable<P> {
    fn validate(&self, command: &Command) -> Result<(), String> {
        let body: P::Command = decode(command).map_err(|e| e.to_string())?;
        self.0.validate(&body)
    }

    async fn handle(&self, tx: &mut PgConnection, command: &Command) -> Result<Value, StepError> {
        let body: P::Command = decode(command)?;
        match command.phase {
            Phase::Action => self.0.action(tx, &body).await,
            Phase::Compensate => self.0.compensate(tx, &body).await.map(|()| Value::Null),
            Phase::Try | Phase::Confirm | Phase::Cancel => {
                Err(wrong_phase(command, "a compensable step"))
            }
        }
    }
}
