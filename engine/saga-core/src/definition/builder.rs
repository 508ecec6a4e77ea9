//! The typed builder of a definition. Its type parameters track whether a trigger and at
//! least one step were given, so `build()` exists only on a definition that has both.
//!
//! ```
//! # use std::time::Duration;
//! # use saga_core::{Definition, RetryPolicy};
//! # use serde::{Deserialize, Serialize};
//! #[derive(Serialize, Deserialize)]
//! struct Order { id: String, cents: i64 }
//! let definition = Definition::<Order>::new("order", 1)
//!     .trigger("order.requested", |o| o.id.clone())
//!     .tcc("reserve_funds", "balance", |o| serde_json::json!({ "cents": o.cents }))
//!     .with_timeout(Duration::from_secs(30)) // this step only
//!     .timeout(Duration::from_secs(5)) // every other step
//!     .build()
//!     .unwrap();
//! assert_eq!(definition.steps().len(), 1);
//! assert_eq!(definition.timeout_for("reserve_funds"), Duration::from_secs(30));
//! ```

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::{InputFn, Mode, SagaDefinition, StepDef, StepKind};
use crate::error::DefinitionError;
use crate::retry::RetryPolicy;

/// Typestate: no trigger given yet.
#[derive(Debug, Clone, Copy)]
pub struct NoTrigger;

/// Typestate: the trigger topic and idempotency key are given.
pub struct Trigger {
    topic: String,
    key: InputFn<String>,
}

/// Typestate: no step added yet.
#[derive(Debug, Clone, Copy)]
pub struct NoSteps;

/// Typestate: at least one step added.
#[derive(Debug, Clone, Copy)]
pub struct Steps;

/// A saga definition with a typed input `I`, built with chained calls. `T` and `S` record
/// whether a trigger and a step were given; [`Definition::build`] needs both.
pub struct Definition<I, T = NoTrigger, S = NoSteps> {
    name: String,
    version: u32,
    trigger: T,
    steps: Vec<StepDef>,
    mode: Mode,
    timeout: Duration,
    forward_retry: RetryPolicy,
    settle_retry: RetryPolicy,
    deadline: Option<Duration>,
    validate: InputFn<()>,
    _state: PhantomData<(fn(I), S)>,
}

fn typed<I: DeserializeOwned, T>(
    f: impl Fn(&I) -> Result<T, String> + Send + Sync + 'static,
) -> InputFn<T> {
    Arc::new(move |value: &Value| {
        let input = I::deserialize(value).map_err(|e| format!("invalid input: {e}"))?;
        f(&input)
    })
}

fn body<I: DeserializeOwned, C: Serialize>(
    f: impl Fn(&I) -> C + Send + Sync + 'static,
) -> InputFn<Value> {
    typed(move |input: &I| serde_json::to_value(f(input)).map_err(|e| e.to_string()))
}

impl<I: DeserializeOwned + 'static> Definition<I> {
    /// A definition named `name` at `version` with no trigger and no steps yet; sequential,
    /// a 5 s timeout, 5 forward attempts and 20 confirm/undo attempts unless changed.
    pub fn new(name: impl Into<String>, version: u32) -> Self {
        Definition {
            name: name.into(),
            version,
            trigger: NoTrigger,
            steps: Vec::new(),
            mode: Mode::Sequential,
            timeout: Duration::from_secs(5),
            forward_retry: RetryPolicy::default(),
            settle_retry: RetryPolicy::default().with_max_attempts(20),
            deadline: None,
            validate: typed(|_: &I| Ok(())),
            _state: PhantomData,
        }
    }
}

impl<I, T, S> Definition<I, T, S> {
    /// The same definition in another typestate, its trigger mapped by `trigger`.
    fn into_state<T2, S2>(self, trigger: impl FnOnce(T) -> T2) -> Definition<I, T2, S2> {
        Definition {
            name: self.name,
            version: self.version,
            trigger: trigger(self.trigger),
            steps: self.steps,
            mode: self.mode,
            timeout: self.timeout,
            forward_retry: self.forward_retry,
            settle_retry: self.settle_retry,
            deadline: self.deadline,
            validate: self.validate,
            _state: PhantomData,
        }
    }
}

impl<I: DeserializeOwned + 'static, S> Definition<I, NoTrigger, S> {
    /// Starts sagas from `topic`; `key` gives the trigger's idempotency key (one saga per key).
    pub fn trigger(
        self,
        topic: impl Into<String>,
        key: impl Fn(&I) -> String + Send + Sync + 'static,
    ) -> Definition<I, Trigger, S> {
        let trigger = Trigger {
            topic: topic.into(),
            key: typed(move |input: &I| Ok(key(input))),
        };
        self.into_state(|NoTrigger| trigger)
    }
}

impl<I: DeserializeOwned + 'static, T, S> Definition<I, T, S> {
    /// Refuses triggers whose input fails `check` (they go to the DLQ with its message).
    pub fn validate(
        mut self,
        check: impl Fn(&I) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.validate = typed(check);
        self
    }

    /// Adds a TCC branch at `participant`; try, confirm and cancel carry `body(input)`.
    pub fn tcc<C: Serialize>(
        self,
        step: impl Into<String>,
        participant: impl Into<String>,
        body_of: impl Fn(&I) -> C + Send + Sync + 'static,
    ) -> Definition<I, T, Steps> {
        let forward = body(body_of);
        self.push(
            step.into(),
            participant.into(),
            StepKind::Tcc,
            forward.clone(),
            forward,
        )
    }

    /// Adds a compensable step at `participant` with its action and compensation bodies.
    pub fn step<C: Serialize, U: Serialize>(
        self,
        step: impl Into<String>,
        participant: impl Into<String>,
        action: impl Fn(&I) -> C + Send + Sync + 'static,
        compensation: impl Fn(&I) -> U + Send + Sync + 'static,
    ) -> Definition<I, T, Steps> {
        let (forward, undo) = (body(action), body(compensation));
        self.push(
            step.into(),
            participant.into(),
            StepKind::Compensable,
            forward,
            undo,
        )
    }

    fn push(
        mut self,
        name: String,
        participant: String,
        kind: StepKind,
        forward: InputFn<Value>,
        undo: InputFn<Value>,
    ) -> Definition<I, T, Steps> {
        self.steps.push(StepDef {
            name,
            participant,
            kind,
            forward,
            undo,
            timeout: None,
            retry: None,
            settle_retry: None,
        });
        self.into_state(|trigger| trigger)
    }

    /// Runs the forward steps all at once.
    pub fn parallel(mut self) -> Self {
        self.mode = Mode::Parallel;
        self
    }

    /// Runs the forward steps one after the other (the default).
    pub fn sequential(mut self) -> Self {
        self.mode = Mode::Sequential;
        self
    }

    /// Waits `timeout` for each reply before sending the same command again (every step
    /// without a timeout of its own).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Gives every saga `deadline` to finish its forward steps, counted from its start on
    /// the database's clock. Past it no forward command is sent (participants refuse the
    /// ones still on their way) and the saga compensates; confirms and undos go on.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Retry policy of forward phases (every step without a policy of its own).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.forward_retry = policy;
        self
    }

    /// Retry policy of confirm, cancel and compensate (exhausted: the saga is parked).
    pub fn settle_retry(mut self, policy: RetryPolicy) -> Self {
        self.settle_retry = policy;
        self
    }
}

impl<I, T> Definition<I, T, Steps> {
    fn last_step(&mut self) -> &mut StepDef {
        self.steps
            .last_mut()
            .expect("the Steps typestate holds at least one step")
    }

    /// The step added last waits `timeout` for each reply, whatever the definition's default.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.last_step().timeout = Some(timeout);
        self
    }

    /// The step added last retries its forward phase by `policy`.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.last_step().retry = Some(policy);
        self
    }

    /// The step added last retries its confirm/cancel/compensate by `policy`.
    pub fn with_settle_retry(mut self, policy: RetryPolicy) -> Self {
        self.last_step().settle_retry = Some(policy);
        self
    }
}

impl<I> Definition<I, Trigger, Steps> {
    /// The checked definition, or why it is refused: a bad name, version 0, a step name
    /// used twice, an empty step or participant name, or a zero timeout or deadline.
    pub fn build(self) -> Result<SagaDefinition, DefinitionError> {
        check(&self.name, self.version, &self.steps, self.timeout)?;
        if self.deadline.is_some_and(|d| d.is_zero()) {
            return Err(DefinitionError::ZeroTimeout {
                definition: self.name,
                scope: "the saga deadline".into(),
            });
        }
        Ok(SagaDefinition {
            name: self.name,
            version: self.version,
            trigger_topic: self.trigger.topic,
            steps: self.steps,
            mode: self.mode,
            timeout: self.timeout,
            forward_retry: self.forward_retry,
            settle_retry: self.settle_retry,
            deadline: self.deadline,
            key: self.trigger.key,
            validate: self.validate,
        })
    }
}

fn check(
    name: &str,
    version: u32,
    steps: &[StepDef],
    timeout: Duration,
) -> Result<(), DefinitionError> {
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c));
    if !name_ok {
        return Err(DefinitionError::InvalidName(name.to_string()));
    }
    if version == 0 {
        return Err(DefinitionError::ZeroVersion(name.to_string()));
    }
    let definition = || name.to_string();
    if timeout.is_zero() {
        return Err(DefinitionError::ZeroTimeout {
            definition: definition(),
            scope: "every step".into(),
        });
    }
    for (i, step) in steps.iter().enumerate() {
        for (empty, what) in [
            (&step.name, "step name"),
            (&step.participant, "participant"),
        ] {
            if empty.trim().is_empty() {
                return Err(DefinitionError::EmptyName {
                    definition: definition(),
                    what,
                });
            }
        }
        let max = schemas::limits::STEP_NAME_MAX_CHARS;
        if step.name.chars().count() > max || step.name.contains('\0') {
            return Err(DefinitionError::LongStepName {
                definition: definition(),
                step: step.name.clone(),
                max,
            });
        }
        if steps[..i].iter().any(|s| s.name == step.name) {
            return Err(DefinitionError::DuplicateStep {
                definition: definition(),
                step: step.name.clone(),
            });
        }
        if step.timeout.is_some_and(|t| t.is_zero()) {
            return Err(DefinitionError::ZeroTimeout {
                definition: definition(),
                scope: format!("step `{}`", step.name),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Deserialize)]
    struct Order {
        id: String,
    }

    fn order() -> Definition<Order, Trigger, Steps> {
        Definition::<Order>::new("order", 1)
            .trigger("order.requested", |o| o.id.clone())
            .tcc("funds", "balance", |_| json!({}))
    }

    #[test]
    fn a_complete_definition_builds_with_its_trigger() {
        let built = order().build().unwrap();
        assert_eq!(built.trigger_topic(), "order.requested");
        let accepted = built.accept_trigger(&json!({ "id": "o-7" })).unwrap();
        assert_eq!(accepted.key, "o-7");
    }

    #[test]
    fn the_trigger_may_come_after_the_steps() {
        let built = Definition::<Order>::new("order", 1)
            .tcc("funds", "balance", |_| json!({}))
            .trigger("order.requested", |o| o.id.clone())
            .build();
        assert!(built.is_ok());
    }

    #[test]
    fn wrong_definitions_are_errors_not_panics() {
        let duplicate = order().step("funds", "x", |_| 1, |_| 2).build();
        assert_eq!(
            duplicate.unwrap_err(),
            DefinitionError::DuplicateStep {
                definition: "order".into(),
                step: "funds".into()
            }
        );
        let empty_participant = order().step("points", " ", |_| 1, |_| 2).build();
        assert!(matches!(
            empty_participant,
            Err(DefinitionError::EmptyName {
                what: "participant",
                ..
            })
        ));
        let long = "s".repeat(65);
        assert!(matches!(
            order().step(&long, "x", |_| 1, |_| 2).build(),
            Err(DefinitionError::LongStepName { max: 64, .. })
        ));
        assert!(matches!(
            order().timeout(Duration::ZERO).build(),
            Err(DefinitionError::ZeroTimeout { .. })
        ));
        assert!(matches!(
            order().with_timeout(Duration::ZERO).build(),
            Err(DefinitionError::ZeroTimeout { .. })
        ));
        assert!(matches!(
            order().deadline(Duration::ZERO).build(),
            Err(DefinitionError::ZeroTimeout { .. })
        ));
        let bad_name = Definition::<Order>::new("Order Saga", 1)
            .trigger("t", |o| o.id.clone())
            .tcc("funds", "balance", |_| json!({}))
            .build();
        assert!(matches!(bad_name, Err(DefinitionError::InvalidName(_))));
        let zero = Definition::<Order>::new("order", 0)
            .trigger("t", |o| o.id.clone())
            .tcc("funds", "balance", |_| json!({}))
            .build();
        assert!(matches!(zero, Err(DefinitionError::ZeroVersion(_))));
    }

    #[test]
    fn a_deadline_is_kept_and_none_is_the_default() {
        assert_eq!(order().build().unwrap().deadline(), None);
        let built = order().deadline(Duration::from_secs(90)).build().unwrap();
        assert_eq!(built.deadline(), Some(Duration::from_secs(90)));
    }

    #[test]
    fn step_overrides_win_over_the_defaults_for_that_step_only() {
        let fast = RetryPolicy::default().with_max_attempts(2);
        let patient = RetryPolicy::default().with_max_attempts(50);
        let built = order()
            .with_timeout(Duration::from_secs(30))
            .with_retry(fast.clone())
            .with_settle_retry(patient.clone())
            .step("points", "points", |_| 1, |_| 2)
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        use schemas::Phase;
        assert_eq!(built.timeout_for("funds"), Duration::from_secs(30));
        assert_eq!(built.timeout_for("points"), Duration::from_secs(3));
        assert_eq!(built.retry_for("funds", Phase::Try), &fast);
        assert_eq!(built.retry_for("funds", Phase::Cancel), &patient);
        assert_eq!(built.retry_for("points", Phase::Action).max_attempts(), 5);
        assert_eq!(
            built.retry_for("points", Phase::Compensate).max_attempts(),
            20
        );
    }
}
