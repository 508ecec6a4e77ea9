//! Replies the engine ignores (stale attempt, unknown or ended saga, a phase it does not wait
//! for): each is counted by reason (`saga_replies_ignored_total`) and logged at the default
//! level, at most one line per reason every [`LOG_EVERY`], saying how many more were ignored
//! for that reason since its last line. The reasons are `saga_core`'s [`IgnoredReply`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use saga_core::{why_ignored, IgnoredReply, SagaInput, SagaState};
use tracing::info;
use uuid::Uuid;

use crate::metrics;

/// The shortest time between two log lines about ignored replies of one reason.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Counts and logs ignored replies; clones share the rate limit.
#[derive(Debug, Clone, Default)]
pub struct IgnoredReplies {
    windows: Arc<Mutex<HashMap<&'static str, Window>>>,
}

/// When a reason was last logged, and how many of it went unlogged since.
#[derive(Debug, Clone, Copy)]
struct Window {
    logged_at: Instant,
    unlogged: u64,
}

impl IgnoredReplies {
    /// Counts and logs `input` when it is a reply that the saga in `state` (`None`: no such
    /// saga) ignores; anything else passes unnoticed.
    pub fn note(&self, saga_id: Uuid, state: Option<&SagaState>, input: &SagaInput) {
        if let Some(reason) = reason(state, input) {
            self.record(saga_id, input, &reason);
        }
    }

    /// Counts and logs the reply `input`, ignored for `reason`.
    pub fn record(&self, saga_id: Uuid, input: &SagaInput, reason: &IgnoredReply) {
        let SagaInput::Reply {
            step,
            phase,
            attempt,
            outcome,
        } = input
        else {
            return;
        };
        metrics::reply_ignored(reason.label());
        if let Some(unlogged) = self.admit(reason, Instant::now()) {
            info!(%saga_id, step = %step, phase = %phase, attempt, outcome = outcome_name(outcome),
                reason = reason.label(), ignored_since_last_line = unlogged,
                "reply ignored: {reason}");
        }
    }

    /// Whether a line about `reason` may be written at `now`: `Some(n)` with the `n` replies
    /// of that reason ignored without a line since the last one, `None` to stay quiet.
    fn admit(&self, reason: &IgnoredReply, now: Instant) -> Option<u64> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        match windows.get_mut(reason.label()) {
            Some(window) if now.duration_since(window.logged_at) < LOG_EVERY => {
                window.unlogged += 1;
                None
            }
            Some(window) => {
                let unlogged = window.unlogged;
                *window = Window {
                    logged_at: now,
                    unlogged: 0,
                };
                Some(unlogged)
            }
            None => {
                windows.insert(
                    reason.label(),
                    Window {
                        logged_at: now,
                        unlogged: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

/// Why the saga in `state` ignores `input`, when it is a reply that changes nothing.
pub fn reason(state: Option<&SagaState>, input: &SagaInput) -> Option<IgnoredReply> {
    match input {
        SagaInput::Reply {
            step,
            phase,
            attempt,
            outcome,
        } => why_ignored(state, step, *phase, *attempt, outcome),
        _ => None,
    }
}

fn outcome_name(outcome: &schemas::ReplyOutcome) -> &'static str {
    match outcome {
        schemas::ReplyOutcome::Ok { .. } => "ok",
        schemas::ReplyOutcome::Rejected { .. } => "rejected",
        schemas::ReplyOutcome::Failed { .. } => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_reason_per_window_counting_the_quiet_ones() {
        let replies = IgnoredReplies::default();
        let start = Instant::now();
        let stale = IgnoredReply::StaleAttempt {
            attempt: 1,
            latest: 2,
        };
        assert_eq!(replies.admit(&stale, start), Some(0));
        assert_eq!(replies.admit(&stale, start + Duration::from_secs(1)), None);
        assert_eq!(replies.admit(&stale, start + Duration::from_secs(2)), None);
        assert_eq!(
            replies.admit(&IgnoredReply::UnknownSaga, start + Duration::from_secs(2)),
            Some(0),
            "another reason has its own window"
        );
        assert_eq!(replies.admit(&stale, start + LOG_EVERY), Some(2));
        assert_eq!(replies.admit(&stale, start + LOG_EVERY), None);
    }
}
