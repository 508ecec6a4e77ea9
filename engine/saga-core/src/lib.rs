//! Saga logic without I/O: what a saga is and what happens to it next.
//!
//! Map of the crate:
//! - [`definition`]: saga definitions — a typed builder ([`Definition`]) that cannot be
//!   built wrong, and the checked form the runtime uses ([`SagaDefinition`]), with its
//!   fingerprint (what must not change without a version bump).
//! - [`digest`]: canonical JSON and SHA-256, for trigger payload hashes and fingerprints.
//! - [`retry`]: [`RetryPolicy`], attempts and backoff of one kind of phase, spread by
//!   [`Jitter`].
//! - [`state`]: a saga's events ([`SagaEvent`]) and the state they fold into ([`SagaState`]),
//!   with the typed statuses stored at the edges ([`SagaStatus`], [`TimerKind`]).
//! - [`decide`](mod@decide): the pure transition function — state + input → events, commands,
//!   timers and lifecycle news.
//! - [`defer`]: rewrites a decision so forward commands a circuit breaker holds back wait
//!   at their step (same attempt) instead of being sent.
//! - [`ignored`]: why a reply changes nothing ([`IgnoredReply`]), for the engine to count
//!   and log.
//! - [`operator`]: the operator actions (retry, resume, compensate, resolve) and when each
//!   is allowed.
//! - [`error`]: errors that say whether retrying can help ([`StepError`]) and why a
//!   definition is refused ([`DefinitionError`]).
//!
//! Nothing here talks to Postgres or Kafka; the engine crate (`saga-engine`) does the I/O
//! around [`decide()`].

#[cfg(test)]
mod deadline_tests;
pub mod decide;
pub mod defer;
pub mod definition;
pub mod digest;
pub mod error;
pub mod ignored;
pub mod operator;
pub mod retry;
pub mod state;
#[cfg(test)]
mod tests;

pub use decide::{
    decide, Decision, Lifecycle, OutgoingCommand, SagaInput, TimerChange, DEADLINE_PASSED,
};
pub use defer::defer_commands;
pub use definition::{AcceptedTrigger, Definition, Mode, SagaDefinition, StepDef, StepKind};
pub use error::{DefinitionError, StepError, StepResultExt};
pub use ignored::{why_ignored, IgnoredReply};
pub use operator::{OperatorAction, OperatorCommand};
pub use retry::{jitter_seed, Jitter, RetryPolicy};
pub use state::{
    Progress, SagaEvent, SagaState, SagaStatus, StepProgress, TimerKind, DEADLINE_TIMER_STEP,
};
