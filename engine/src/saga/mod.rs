//! Saga logic, free of I/O: definitions, state, events and the [`decide`] function.

mod decide;
mod definition;
mod retry;
mod state;
#[cfg(test)]
mod tests;

pub use decide::{decide, Decision, Lifecycle, OutgoingCommand, SagaInput, TimerChange};
pub use definition::{AcceptedTrigger, Definition, Mode, SagaDefinition, StepDef, StepKind};
pub use retry::RetryPolicy;
pub use state::{Progress, SagaEvent, SagaState, SagaStatus, StepProgress};
