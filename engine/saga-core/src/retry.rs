//! Retry policy: how often and how soon a step's command is sent again.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Attempts and exponential backoff for one kind of phase. A value with defaults, built
/// with the `with_*` methods, stored with the definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::exponential(Duration::from_millis(100), Duration::from_secs(10))
    }
}

impl RetryPolicy {
    /// Doubling backoff from `initial` up to `max`, five attempts.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: initial,
            max_backoff: max.max(initial),
            multiplier: 2.0,
        }
    }

    /// The same policy with `attempts` attempts in all.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The same policy with the wait growing by `multiplier` per attempt (at least 1).
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_finite() {
            multiplier.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// Attempts in all, the first one included (at least 1).
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Wait before the second attempt after a transient failure.
    pub fn initial_backoff(&self) -> Duration {
        self.initial_backoff
    }

    /// Longest wait between attempts.
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// Growth of the wait per attempt.
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// How long to wait after attempt `attempt` (from 1) failed transiently.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30) as i32;
        let wait = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exponent);
        Duration::from_secs_f64(wait.min(self.max_backoff.as_secs_f64()))
    }

    /// Whether another attempt may follow attempt `attempt`.
    pub fn allows_after(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy =
            RetryPolicy::exponential(Duration::from_millis(50), Duration::from_millis(300));
        let waits: Vec<u128> = (1..=5).map(|a| policy.backoff(a).as_millis()).collect();
        assert_eq!(waits, [50, 100, 200, 300, 300]);
    }

    #[test]
    fn attempts_are_bounded() {
        let policy = RetryPolicy::default().with_max_attempts(3);
        assert!(policy.allows_after(2));
        assert!(!policy.allows_after(3));
        assert_eq!(
            RetryPolicy::default().with_max_attempts(0).max_attempts(),
            1
        );
    }
}
