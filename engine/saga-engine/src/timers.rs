//! The timer poller: claims due timers and feeds them through the transition path.

use std::time::Duration;

use saga_core::{SagaInput, TimerKind};
use schemas::Phase;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};
use uuid::Uuid;

use crate::breaker::{CommandRef, Signal};
use crate::transition::{Applied, Transitions};
use crate::{Error, Result};

/// How the timer poller looks for due timers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimerSettings {
    /// How long the poller waits after finding no due timer (default 50 ms): the lateness
    /// of a timeout or retry at most.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for TimerSettings {
    fn default() -> Self {
        TimerSettings {
            poll_interval: Duration::from_millis(50),
        }
    }
}

/// Outcome of one [`fire_due_timer`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerOutcome {
    /// A due timer was claimed and applied.
    Fired,
    /// No timer is due.
    Empty,
    /// A due timer failed to fire; it was put off with backoff so the others go first.
    PutOff,
}

/// How long a timer that failed to fire once waits before its next try; each further
/// failure doubles it, up to [`PUT_OFF_MAX_DELAY`].
pub const PUT_OFF_FIRST_DELAY: Duration = Duration::from_millis(100);

/// The longest a failing timer waits between two tries: a timer that keeps failing is
/// still tried once a minute, and never holds back the other timers.
pub const PUT_OFF_MAX_DELAY: Duration = Duration::from_secs(60);

/// The longest the poller pauses after a failed poll (the database is down or refusing):
/// it retries with the [`put_off_delay`] backoff capped here, so it notices a recovered
/// database within this long.
pub const POLL_FAILURE_MAX_PAUSE: Duration = Duration::from_secs(5);

/// How long a timer that failed `failures` times in a row waits before its next try:
/// [`PUT_OFF_FIRST_DELAY`] doubling, at most [`PUT_OFF_MAX_DELAY`].
pub fn put_off_delay(failures: u32) -> Duration {
    let delay = PUT_OFF_FIRST_DELAY.saturating_mul(1 << failures.min(10));
    delay.min(PUT_OFF_MAX_DELAY)
}

/// Acknowledgements [`start_acknowledged_timeouts`] takes per call, oldest first: bounds
/// the rows one statement locks; the poller calls it once per poll (see [`FIRES_PER_POLL`]),
/// so a larger backlog drains over several polls.
const ACKS_PER_CALL: i64 = 1000;

/// Starts the reply timeouts whose commands the broker has acknowledged (the relay records
/// each acknowledgement in `command_acks`): each runs its `wait` from the moment of the
/// acknowledgement. A timer a transition holds right now is skipped and its
/// acknowledgement kept for the next call; an acknowledgement whose timeout is gone (the
/// reply came first) or was replaced is dropped. Returns how many timeouts started.
pub async fn start_acknowledged_timeouts(pool: &sqlx::PgPool) -> Result<u64> {
    let started = sqlx::query_scalar::<_, i64>(
        "WITH acks AS (
             SELECT * FROM command_acks ORDER BY acked_at LIMIT $1 FOR UPDATE SKIP LOCKED
         ), started AS (
             UPDATE timers t
             SET fire_at = a.acked_at + t.wait, armed_at = a.acked_at, wait = NULL
             FROM (SELECT t.saga_id, t.step, a.acked_at
                   FROM timers t JOIN acks a USING (saga_id, step, phase, attempt)
                   WHERE t.kind = $2 AND t.wait IS NOT NULL
                   FOR UPDATE OF t SKIP LOCKED) a
             WHERE t.saga_id = a.saga_id AND t.step = a.step
             RETURNING t.saga_id, t.step
         ), done AS (
             DELETE FROM command_acks c USING acks a
             WHERE (c.saga_id, c.step, c.phase, c.attempt)
                   = (a.saga_id, a.step, a.phase, a.attempt)
               AND ((a.saga_id, a.step) IN (SELECT saga_id, step FROM started)
                    OR NOT EXISTS (SELECT 1 FROM timers t
                                   WHERE (t.saga_id, t.step, t.phase, t.attempt)
                                         = (a.saga_id, a.step, a.phase, a.attempt)
                                     AND t.kind = $2 AND t.wait IS NOT NULL))
         )
         SELECT count(*) FROM started",
    )
    .bind(ACKS_PER_CALL)
    .bind(TimerKind::Timeout.as_str())
    .fetch_one(pool)
    .await?;
    Ok(started as u64)
}

/// Claims one due timer (`SKIP LOCKED`, so any number of pollers may run), deletes it and
/// applies it to its saga, in one transaction. Only timers of sagas whose definition
/// version this process registers are claimed: the others are left alone (not fired, not
/// deleted, not moved) for a process that knows their version.
pub async fn fire_due_timer(transitions: &Transitions) -> Result<TimerOutcome> {
    let (names, versions) = transitions.registry().versions();
    let known: Vec<String> = names
        .iter()
        .zip(&versions)
        .map(|(name, version)| format!("{name}@{version}"))
        .collect();
    let mut tx = transitions.pool().begin().await?;
    // The saga's version is looked up per due timer (a scalar subquery, never a join), so
    // the scan starts from the due end of `timers_fire_at` and costs the same however many
    // finished sagas are kept.
    let due: Option<(Uuid, String, String, Option<String>, i32)> = sqlx::query_as(
        "DELETE FROM timers WHERE (saga_id, step) = (
             SELECT t.saga_id, t.step FROM timers t
             WHERE t.fire_at <= now()
               AND (SELECT s.definition || '@' || s.definition_version
                    FROM sagas s WHERE s.id = t.saga_id) = ANY($1::text[])
             ORDER BY t.fire_at LIMIT 1 FOR UPDATE OF t SKIP LOCKED)
         RETURNING saga_id, step, kind, phase, attempt",
    )
    .bind(&known)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((saga_id, step, kind, phase, attempt)) = due else {
        tx.commit().await?;
        return Ok(TimerOutcome::Empty);
    };
    let kind = TimerKind::try_from(kind).map_err(Error::Config)?;
    let phase = phase
        .map(Phase::try_from)
        .transpose()
        .map_err(Error::Config)?;
    debug!(%saga_id, %step, %kind, ?phase, attempt, "timer fired");
    let span = tracing::info_span!("timer", saga.id = %saga_id, step = %step,
        kind = %kind, attempt);
    let saga: Option<(Option<String>, String, i32)> = sqlx::query_as(
        "SELECT state->>'trace_id', definition, definition_version FROM sagas WHERE id = $1",
    )
    .bind(saga_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((Some(trace_id), _, _)) = &saga {
        saga_plumbing::trace::continue_trace_id(&span, trace_id);
    }
    let input = timer_input(kind, &step, phase, attempt as u32)?;
    match transitions
        .apply_in(&mut tx, None, saga_id, &input, None)
        .instrument(span)
        .await
    {
        // Not ours to fire (its version was checked as the timer was claimed, so only a
        // changed row gets here): the rollback leaves the timer as it was.
        Ok(Applied::UnknownDefinition { .. }) => tx.rollback().await?,
        Ok(applied) => {
            tx.commit().await?;
            crate::metrics::timer_fired();
            // A reply timeout that the saga still waited for counts against the
            // participant's circuit breaker.
            if let (TimerKind::Timeout, Applied::Changed { .. }, Some((_, name, version))) =
                (kind, applied, &saga)
            {
                let participant = transitions
                    .registry()
                    .get(name, *version as u32)
                    .and_then(|d| d.step(&step).map(|(_, s)| s.participant().to_string()));
                if let Some(participant) = participant {
                    let command = CommandRef::new(saga_id, step.clone(), attempt as u32);
                    transitions
                        .breakers()
                        .record(&participant, &command, Signal::Failed);
                }
            }
        }
        // Someone else moved the saga on; the timer is still there after the rollback.
        Err(Error::VersionConflict { .. }) => tx.rollback().await?,
        Err(error) => {
            tx.rollback().await?;
            put_off(transitions, saga_id, &step, attempt, &error).await?;
            return Ok(TimerOutcome::PutOff);
        }
    }
    Ok(TimerOutcome::Fired)
}

/// The input a fired timer of `kind` feeds to its saga. Step timers have a phase; the
/// saga's deadline timer has none.
fn timer_input(
    kind: TimerKind,
    step: &str,
    phase: Option<Phase>,
    attempt: u32,
) -> Result<SagaInput> {
    let phase = || {
        phase.ok_or_else(|| Error::Config(format!("{kind} timer of step `{step}` without a phase")))
    };
    Ok(match kind {
        TimerKind::Deadline => SagaInput::DeadlinePassed,
        TimerKind::Deferred => SagaInput::DeferralEnded {
            step: step.to_string(),
            phase: phase()?,
            attempt,
        },
        TimerKind::Timeout | TimerKind::Backoff => SagaInput::TimerFired {
            step: step.to_string(),
            phase: phase()?,
            attempt,
        },
    })
}

/// Records that firing the timer of `saga_id`'s step failed with `error` and moves its
/// `fire_at` later, by [`put_off_delay`], unless the timer changed meanwhile.
async fn put_off(
    transitions: &Transitions,
    saga_id: Uuid,
    step: &str,
    attempt: i32,
    error: &Error,
) -> Result<()> {
    let failures: Option<i32> = sqlx::query_scalar(
        "SELECT failures FROM timers WHERE saga_id = $1 AND step = $2 AND attempt = $3",
    )
    .bind(saga_id)
    .bind(step)
    .bind(attempt)
    .fetch_optional(transitions.pool())
    .await?;
    let Some(failures) = failures else {
        return Ok(());
    };
    let delay = put_off_delay(failures.max(0) as u32);
    sqlx::query(
        "UPDATE timers SET failures = failures + 1, last_error = $4,
             fire_at = clock_timestamp() + $5
         WHERE saga_id = $1 AND step = $2 AND attempt = $3",
    )
    .bind(saga_id)
    .bind(step)
    .bind(attempt)
    .bind(error.to_string())
    .bind(chrono::Duration::from_std(delay).unwrap_or_default())
    .execute(transitions.pool())
    .await?;
    warn!(%saga_id, %step, attempt, failures = failures + 1, ?delay, %error,
        "timer failed to fire; put off, the other timers go on");
    crate::metrics::timer_failed();
    Ok(())
}

/// Timers one poll fires at most before it takes the acknowledged commands again: a burst
/// of due timers costs one acknowledgement statement per this many timers, not one each.
pub const FIRES_PER_POLL: usize = 64;

/// Fires due timers until `shutdown`, checking every `settings.poll_interval` when none
/// is due. When the database fails, waits longer each time (up to
/// [`POLL_FAILURE_MAX_PAUSE`]) and says so.
pub async fn run(transitions: Transitions, settings: TimerSettings, shutdown: CancellationToken) {
    let mut failing = 0u32;
    while !shutdown.is_cancelled() {
        let pause = match poll(&transitions, &shutdown).await {
            Ok(Poll::More) => {
                failing = 0;
                continue;
            }
            Ok(Poll::Drained) => {
                failing = 0;
                settings.poll_interval
            }
            Err(error) => {
                let pause = put_off_delay(failing).min(POLL_FAILURE_MAX_PAUSE);
                failing += 1;
                warn!(%error, ?pause, "timer poll failed, retrying");
                pause.max(settings.poll_interval)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// How a poll ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Poll {
    /// No timer was left due.
    Drained,
    /// [`FIRES_PER_POLL`] timers fired (or were put off); more may be due.
    More,
}

/// One poll: starts the timeouts of acknowledged commands, then fires due timers until none
/// is due, at most [`FIRES_PER_POLL`] of them.
async fn poll(transitions: &Transitions, shutdown: &CancellationToken) -> Result<Poll> {
    start_acknowledged_timeouts(transitions.pool()).await?;
    for _ in 0..FIRES_PER_POLL {
        if shutdown.is_cancelled() || fire_due_timer(transitions).await? == TimerOutcome::Empty {
            return Ok(Poll::Drained);
        }
    }
    Ok(Poll::More)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_off_timers_wait_longer_each_time_up_to_a_minute() {
        assert_eq!(put_off_delay(0), Duration::from_millis(100));
        assert_eq!(put_off_delay(3), Duration::from_millis(800));
        assert_eq!(put_off_delay(30), Duration::from_secs(60));
    }
}
