//! Saga definitions: typed Rust values describing a saga's trigger and steps.
//!
//! A user writes a [`Definition`] with chained calls; [`Definition::build`] checks it and
//! returns the [`SagaDefinition`] the runtime uses. A definition without a trigger or
//! without steps does not compile:
//!
//! ```compile_fail
//! # use saga_core::Definition;
//! # #[derive(serde::Deserialize)] struct Order { id: String }
//! // no trigger: `build` does not exist yet
//! let d = Definition::<Order>::new("order", 1)
//!     .tcc("reserve_funds", "balance", |_| serde_json::json!({}))
//!     .build();
//! ```
//!
//! ```compile_fail
//! # use saga_core::Definition;
//! # #[derive(serde::Deserialize)] struct Order { id: String }
//! // no steps: `build` does not exist yet
//! let d = Definition::<Order>::new("order", 1)
//!     .trigger("order.requested", |o| o.id.clone())
//!     .build();
//! ```
//!
//! Two steps with one name are an error from `build()`:
//!
//! ```
//! # use saga_core::{Definition, DefinitionError};
//! # #[derive(serde::Deserialize)] struct Order { id: String }
//! let refused = Definition::<Order>::new("order", 1)
//!     .trigger("order.requested", |o| o.id.clone())
//!     .tcc("funds", "balance", |_| serde_json::json!({}))
//!     .tcc("funds", "wallet", |_| serde_json::json!({}))
//!     .build();
//! assert!(matches!(refused, Err(DefinitionError::DuplicateStep { .. })));
//! ```

mod builder;
mod fingerprint;

use std::sync::Arc;
use std::time::Duration;

pub use builder::{Definition, NoSteps, NoTrigger, Steps, Trigger};
use schemas::Phase;
use serde_json::Value;
use uuid::Uuid;

use crate::retry::RetryPolicy;

/// A function of the saga input (JSON), checked against the definition's input type.
pub(crate) type InputFn<T> = Arc<dyn Fn(&Value) -> Result<T, String> + Send + Sync>;

/// Whether a step is a TCC branch or a compensable step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Try, then confirm when the saga succeeds or cancel when it fails.
    Tcc,
    /// Action, then compensate when the saga fails.
    Compensable,
}

impl StepKind {
    /// `tcc` or `compensable`, as shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Tcc => "tcc",
            StepKind::Compensable => "compensable",
        }
    }
}

/// How forward steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One after the other; undone in reverse order.
    Sequential,
    /// All at once; undone all at once.
    Parallel,
}

impl Mode {
    /// `sequential` or `parallel`, as shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sequential => "sequential",
            Mode::Parallel => "parallel",
        }
    }
}

/// One step of a definition, with its own overrides of the definition's timeout and
/// retry policies.
#[derive(Clone)]
pub struct StepDef {
    name: String,
    participant: String,
    kind: StepKind,
    forward: InputFn<Value>,
    undo: InputFn<Value>,
    timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    settle_retry: Option<RetryPolicy>,
}

impl std::fmt::Debug for StepDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepDef")
            .field("name", &self.name)
            .field("participant", &self.participant)
            .field("kind", &self.kind)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("settle_retry", &self.settle_retry)
            .finish_non_exhaustive()
    }
}

impl StepDef {
    /// Step name, unique in the definition; the barrier's branch.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The participant that runs it; its commands go to `<participant>.commands`.
    pub fn participant(&self) -> &str {
        &self.participant
    }

    /// TCC or compensable.
    pub fn kind(&self) -> StepKind {
        self.kind
    }

    /// The step's own timeout, when it overrides the definition's.
    pub fn timeout_override(&self) -> Option<Duration> {
        self.timeout
    }

    /// The step's own forward retry policy, when it overrides the definition's.
    pub fn retry_override(&self) -> Option<&RetryPolicy> {
        self.retry.as_ref()
    }

    /// The step's own confirm/undo retry policy, when it overrides the definition's.
    pub fn settle_retry_override(&self) -> Option<&RetryPolicy> {
        self.settle_retry.as_ref()
    }

    /// The phase that moves the saga forward (try or action).
    pub fn forward_phase(&self) -> Phase {
        match self.kind {
            StepKind::Tcc => Phase::Try,
            StepKind::Compensable => Phase::Action,
        }
    }

    /// The phase that undoes the forward phase (cancel or compensate).
    pub fn undo_phase(&self) -> Phase {
        match self.kind {
            StepKind::Tcc => Phase::Cancel,
            StepKind::Compensable => Phase::Compensate,
        }
    }

    /// The command body for `phase`, built from the saga input.
    pub fn payload(&self, phase: Phase, input: &Value) -> Result<Value, String> {
        match phase {
            Phase::Compensate => (self.undo)(input),
            _ => (self.forward)(input),
        }
    }
}

/// A checked definition as the runtime uses it: the input is JSON, the functions are typed
/// underneath. Built only by [`Definition::build`].
#[derive(Clone)]
pub struct SagaDefinition {
    name: String,
    version: u32,
    trigger_topic: String,
    steps: Vec<StepDef>,
    mode: Mode,
    timeout: Duration,
    forward_retry: RetryPolicy,
    settle_retry: RetryPolicy,
    deadline: Option<Duration>,
    key: InputFn<String>,
    validate: InputFn<()>,
}

impl std::fmt::Debug for SagaDefinition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaDefinition")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("trigger_topic", &self.trigger_topic)
            .field("steps", &self.steps)
            .field("mode", &self.mode)
            .field("timeout", &self.timeout)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// A trigger that passed the definition's checks.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedTrigger {
    /// The saga it starts (the same for every trigger with the same key).
    pub saga_id: Uuid,
    /// The idempotency key.
    pub key: String,
    /// The saga input.
    pub input: Value,
}

impl SagaDefinition {
    /// Definition name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Definition version; recorded with every saga it starts.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Topic whose messages start this saga (without the deployment's topic prefix).
    pub fn trigger_topic(&self) -> &str {
        &self.trigger_topic
    }

    /// The steps, in forward order (never empty).
    pub fn steps(&self) -> &[StepDef] {
        &self.steps
    }

    /// Sequential or parallel forward steps.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The default time to wait for a reply before sending the same command again.
    pub fn default_timeout(&self) -> Duration {
        self.timeout
    }

    /// How long a saga may run forward, counted from its start on the database's clock;
    /// past it the saga compensates (`None`: no deadline).
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The default retry policy of forward phases (try, action); exhausted: compensate.
    pub fn default_retry(&self) -> &RetryPolicy {
        &self.forward_retry
    }

    /// The default retry policy of confirm, cancel and compensate; exhausted: parked.
    pub fn default_settle_retry(&self) -> &RetryPolicy {
        &self.settle_retry
    }

    /// Checks a trigger payload against the input type and the validation, and derives
    /// the saga id from the idempotency key.
    pub fn accept_trigger(&self, payload: &Value) -> Result<AcceptedTrigger, String> {
        (self.validate)(payload)?;
        let key = (self.key)(payload)?;
        let (min, max) = (
            schemas::limits::IDEMPOTENCY_KEY_MIN_CHARS,
            schemas::limits::IDEMPOTENCY_KEY_MAX_CHARS,
        );
        let length = key.chars().count();
        if !(min..=max).contains(&length) {
            return Err(format!(
                "idempotency key must be {min}..={max} characters, got {length}"
            ));
        }
        Ok(AcceptedTrigger {
            saga_id: self.saga_id(&key),
            key,
            input: payload.clone(),
        })
    }

    /// The saga id of the trigger with idempotency key `key`: a UUIDv5 of name and key, so a
    /// redelivered trigger maps to the saga it already started.
    pub fn saga_id(&self, key: &str) -> Uuid {
        Uuid::new_v5(
            &Uuid::NAMESPACE_URL,
            format!("saga:{}/{key}", self.name).as_bytes(),
        )
    }

    /// The step named `name`, with its index.
    pub fn step(&self, name: &str) -> Option<(usize, &StepDef)> {
        self.steps.iter().enumerate().find(|(_, s)| s.name == name)
    }

    /// How long step `step` waits for a reply: its own timeout or the definition's.
    pub fn timeout_for(&self, step: &str) -> Duration {
        self.step(step)
            .and_then(|(_, s)| s.timeout)
            .unwrap_or(self.timeout)
    }

    /// The retry policy for `phase` of step `step`: the step's override, else the
    /// definition's policy for forward phases (try, action) or settling phases.
    pub fn retry_for(&self, step: &str, phase: Phase) -> &RetryPolicy {
        let own = self.step(step).map(|(_, s)| s);
        match phase {
            Phase::Try | Phase::Action => own
                .and_then(|s| s.retry.as_ref())
                .unwrap_or(&self.forward_retry),
            Phase::Confirm | Phase::Cancel | Phase::Compensate => own
                .and_then(|s| s.settle_retry.as_ref())
                .unwrap_or(&self.settle_retry),
        }
    }
}
