//! The timer poller: claims due timers and feeds them through the transition path.

use std::time::Duration;

use saga_core::SagaInput;
use schemas::Phase;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};
use uuid::Uuid;

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
    /// How far a timer of a saga whose definition version this process does not know is
    /// put back, for a process that knows it (default 5 s).
    #[serde(with = "humantime_serde")]
    pub unknown_definition_delay: Duration,
}

impl Default for TimerSettings {
    fn default() -> Self {
        TimerSettings {
            poll_interval: Duration::from_millis(50),
            unknown_definition_delay: Duration::from_secs(5),
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
}

/// Claims one due timer (`SKIP LOCKED`, so any number of pollers may run), deletes it and
/// applies it to its saga, in one transaction.
pub async fn fire_due_timer(
    transitions: &Transitions,
    settings: &TimerSettings,
) -> Result<TimerOutcome> {
    let mut tx = transitions.pool().begin().await?;
    let due: Option<(Uuid, String, String, i32)> = sqlx::query_as(
        "DELETE FROM timers WHERE (saga_id, step) = (
             SELECT saga_id, step FROM timers WHERE fire_at <= now()
             ORDER BY fire_at LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING saga_id, step, phase, attempt",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some((saga_id, step, phase, attempt)) = due else {
        tx.commit().await?;
        return Ok(TimerOutcome::Empty);
    };
    let phase = Phase::try_from(phase).map_err(Error::Config)?;
    debug!(%saga_id, %step, %phase, attempt, "timer fired");
    let step_name = step.clone();
    let span = tracing::info_span!("timer", saga.id = %saga_id, step = %step,
        phase = %phase, attempt);
    let trace_id: Option<String> =
        sqlx::query_scalar("SELECT state->>'trace_id' FROM sagas WHERE id = $1")
            .bind(saga_id)
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
    if let Some(trace_id) = trace_id {
        saga_plumbing::trace::continue_trace_id(&span, &trace_id);
    }
    let input = SagaInput::TimerFired {
        step,
        phase,
        attempt: attempt as u32,
    };
    match transitions
        .apply_in(&mut tx, None, saga_id, &input, None)
        .instrument(span)
        .await
    {
        Ok(Applied::UnknownDefinition) => {
            // Not ours to fire: put it back a little later for a process that knows the
            // saga's definition version.
            tx.rollback().await?;
            sqlx::query("UPDATE timers SET fire_at = now() + $3 WHERE saga_id = $1 AND step = $2")
                .bind(saga_id)
                .bind(step_name)
                .bind(settings.unknown_definition_delay)
                .execute(transitions.pool())
                .await?;
        }
        Ok(_) => {
            tx.commit().await?;
            crate::metrics::timer_fired();
        }
        // Someone else moved the saga on; the timer is still there after the rollback.
        Err(Error::VersionConflict { .. }) => tx.rollback().await?,
        Err(error) => return Err(error),
    }
    Ok(TimerOutcome::Fired)
}

/// Fires due timers until `shutdown`, checking every `settings.poll_interval` when none
/// is due.
pub async fn run(transitions: Transitions, settings: TimerSettings, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        match fire_due_timer(&transitions, &settings).await {
            Ok(TimerOutcome::Fired) => continue,
            Ok(TimerOutcome::Empty) => {}
            Err(error) => warn!(%error, "timer poll failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(settings.poll_interval) => {}
        }
    }
}
