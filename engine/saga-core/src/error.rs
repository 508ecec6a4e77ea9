//! Errors of the saga logic: each says whether retrying can help.

/// Why a participant's handler did not succeed, and whether retrying can help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    /// A business rejection (insufficient funds, coupon used...): never retried; the saga
    /// compensates.
    #[error("rejected: {0}")]
    Rejected(String),
    /// A transient failure: the engine sends the same command again after a backoff.
    #[error("retryable: {0}")]
    Retryable(String),
}

impl StepError {
    /// Whether sending the same command again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StepError::Retryable(_))
    }
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

/// Why [`crate::Definition::build`] refused a definition. A programming error in the
/// definition; a binary reports it when it starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    /// The name is empty or holds characters other than `a-z`, `0-9`, `_`, `-`, `.`.
    #[error("definition name `{0}` must be non-empty and use only a-z, 0-9, `_`, `-` and `.`")]
    InvalidName(String),
    /// Versions start at 1.
    #[error("definition `{0}` has version 0; versions start at 1")]
    ZeroVersion(String),
    /// Two steps share a name (the name is the step's identity in the barrier).
    #[error("definition `{definition}` has two steps named `{step}`")]
    DuplicateStep {
        /// Definition name.
        definition: String,
        /// The repeated step name.
        step: String,
    },
    /// A step or participant name is empty.
    #[error("definition `{definition}` has a step with an empty {what}")]
    EmptyName {
        /// Definition name.
        definition: String,
        /// `step name` or `participant`.
        what: &'static str,
    },
    /// A step name longer than the wire contract's limit (its commands would be refused).
    #[error("definition `{definition}`: step name `{step}` is longer than {max} characters")]
    LongStepName {
        /// Definition name.
        definition: String,
        /// The step name.
        step: String,
        /// The contract's limit.
        max: usize,
    },
    /// A timeout of zero would re-send every command at once.
    #[error("definition `{definition}`: the timeout of {scope} must be longer than zero")]
    ZeroTimeout {
        /// Definition name.
        definition: String,
        /// `every step` or `step <name>`.
        scope: String,
    },
}
