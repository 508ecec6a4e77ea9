//! Saga definitions: typed Rust values describing a saga's trigger and steps.
//!
//! ```
//! # use saga_engine::saga::Definition;
//! # use serde::{Deserialize, Serialize};
//! #[derive(Serialize, Deserialize)]
//! struct Order { id: String, cents: i64 }
//! let definition = Definition::<Order>::new("order", 1)
//!     .trigger("order.requested", |o| o.id.clone())
//!     .tcc("reserve_funds", "balance", |o| serde_json::json!({ "cents": o.cents }))
//!     .build();
//! assert_eq!(definition.steps.len(), 1);
//! ```

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use saga_schemas::Phase;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::retry::RetryPolicy;

type InputFn<T> = Arc<dyn Fn(&Value) -> Result<T, String> + Send + Sync>;

/// Whether a step is a TCC branch or a compensable step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Try, then confirm when the saga succeeds or cancel when it fails.
    Tcc,
    /// Action, then compensate when the saga fails.
    Compensable,
}

/// How forward steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One after the other; undone in reverse order.
    Sequential,
    /// All at once; undone all at once.
    Parallel,
}

/// One step of a definition.
#[derive(Clone)]
pub struct StepDef {
    /// Step name, unique in the definition; the barrier's branch.
    pub name: String,
    /// The participant that runs it; its commands go to `<participant>.commands`.
    pub participant: String,
    /// TCC or compensable.
    pub kind: StepKind,
    forward: InputFn<Value>,
    undo: InputFn<Value>,
}

impl std::fmt::Debug for StepDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepDef")
            .field("name", &self.name)
            .field("participant", &self.participant)
            .field("kind", &self.kind)
            .finish()
    }
}

impl StepDef {
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

/// A saga definition with a typed input `I`, built with chained calls, then turned into a
/// [`SagaDefinition`] with [`Definition::build`].
pub struct Definition<I> {
    inner: SagaDefinition,
    _input: PhantomData<fn(I)>,
}

/// A definition as the runtime uses it: the input is JSON, the functions are checked.
#[derive(Clone)]
pub struct SagaDefinition {
    /// Definition name.
    pub name: String,
    /// Definition version; recorded with every saga.
    pub version: u32,
    /// Topic whose messages start this saga (without the deployment's topic prefix).
    pub trigger_topic: String,
    /// The steps, in forward order.
    pub steps: Vec<StepDef>,
    /// Sequential or parallel forward steps.
    pub mode: Mode,
    /// How long to wait for a reply before sending the same command again.
    pub timeout: Duration,
    /// Retries of forward phases (try, action); when exhausted the saga compensates.
    pub forward_retry: RetryPolicy,
    /// Retries of confirm, cancel and compensate; when exhausted the saga is parked.
    pub settle_retry: RetryPolicy,
    key: InputFn<String>,
    validate: InputFn<()>,
}

impl std::fmt::Debug for SagaDefinition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaDefinition")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("steps", &self.steps)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

fn typed<I: DeserializeOwned, T>(
    f: impl Fn(&I) -> Result<T, String> + Send + Sync + 'static,
) -> InputFn<T> {
    Arc::new(move |value: &Value| {
        let input: I =
            serde_json::from_value(value.clone()).map_err(|e| format!("invalid input: {e}"))?;
        f(&input)
    })
}

fn body<I: DeserializeOwned, C: Serialize>(
    f: impl Fn(&I) -> C + Send + Sync + 'static,
) -> InputFn<Value> {
    typed(move |input: &I| serde_json::to_value(f(input)).map_err(|e| e.to_string()))
}

impl<I: DeserializeOwned + 'static> Definition<I> {
    /// A definition named `name` at `version`, triggered from `<name>.requested`, with no
    /// steps yet, sequential, a 5 s timeout and default retry policies.
    pub fn new(name: impl Into<String>, version: u32) -> Self {
        let name = name.into();
        Definition {
            inner: SagaDefinition {
                trigger_topic: format!("{name}.requested"),
                name,
                version,
                steps: Vec::new(),
                mode: Mode::Sequential,
                timeout: Duration::from_secs(5),
                forward_retry: RetryPolicy::default(),
                settle_retry: RetryPolicy::default().with_max_attempts(20),
                key: Arc::new(|_| Err("the definition names no idempotency key".into())),
                validate: typed(|_: &I| Ok(())),
            },
            _input: PhantomData,
        }
    }

    /// Starts sagas from `topic`; `key` gives the trigger's idempotency key (one saga per key).
    pub fn trigger(
        mut self,
        topic: impl Into<String>,
        key: impl Fn(&I) -> String + Send + Sync + 'static,
    ) -> Self {
        self.inner.trigger_topic = topic.into();
        self.inner.key = typed(move |input: &I| Ok(key(input)));
        self
    }

    /// Refuses triggers whose input fails `check` (they go to the DLQ with its message).
    pub fn validate(
        mut self,
        check: impl Fn(&I) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.inner.validate = typed(check);
        self
    }

    /// Adds a TCC branch at `participant`; try, confirm and cancel carry `body(input)`.
    pub fn tcc<C: Serialize>(
        mut self,
        step: impl Into<String>,
        participant: impl Into<String>,
        body_of: impl Fn(&I) -> C + Send + Sync + 'static,
    ) -> Self {
        let forward = body(body_of);
        self.inner.steps.push(StepDef {
            name: step.into(),
            participant: participant.into(),
            kind: StepKind::Tcc,
            undo: forward.clone(),
            forward,
        });
        self
    }

    /// Adds a compensable step at `participant` with its action and compensation bodies.
    pub fn step<C: Serialize, U: Serialize>(
        mut self,
        step: impl Into<String>,
        participant: impl Into<String>,
        action: impl Fn(&I) -> C + Send + Sync + 'static,
        compensation: impl Fn(&I) -> U + Send + Sync + 'static,
    ) -> Self {
        self.inner.steps.push(StepDef {
            name: step.into(),
            participant: participant.into(),
            kind: StepKind::Compensable,
            forward: body(action),
            undo: body(compensation),
        });
        self
    }

    /// Runs the forward steps all at once.
    pub fn parallel(mut self) -> Self {
        self.inner.mode = Mode::Parallel;
        self
    }

    /// Waits `timeout` for each reply before sending the same command again.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.inner.timeout = timeout;
        self
    }

    /// Retry policy of forward phases.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.inner.forward_retry = policy;
        self
    }

    /// Retry policy of confirm, cancel and compensate (exhausted: the saga is parked).
    pub fn settle_retry(mut self, policy: RetryPolicy) -> Self {
        self.inner.settle_retry = policy;
        self
    }

    /// The finished definition.
    ///
    /// # Panics
    /// When the definition has no steps or two steps share a name: a programming error in
    /// the definition, caught when the binary starts.
    pub fn build(self) -> SagaDefinition {
        let steps = &self.inner.steps;
        assert!(!steps.is_empty(), "saga `{}` has no steps", self.inner.name);
        for (i, step) in steps.iter().enumerate() {
            assert!(
                steps[..i].iter().all(|s| s.name != step.name),
                "saga `{}` has two steps named `{}`",
                self.inner.name,
                step.name
            );
        }
        self.inner
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
    /// Checks a trigger payload against the input type and the validation, and derives
    /// the saga id from the idempotency key.
    pub fn accept_trigger(&self, payload: &Value) -> Result<AcceptedTrigger, String> {
        (self.validate)(payload)?;
        let key = (self.key)(payload)?;
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

    /// The retry policy for `phase`.
    pub fn retry_for(&self, phase: Phase) -> &RetryPolicy {
        match phase {
            Phase::Try | Phase::Action => &self.forward_retry,
            Phase::Confirm | Phase::Cancel | Phase::Compensate => &self.settle_retry,
        }
    }
}
