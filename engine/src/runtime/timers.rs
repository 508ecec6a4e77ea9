//! The timer poller: claims due timers and feeds them through the transition path.

use std::time::Duration;

use saga_schemas::Phase;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use super::transition::{Applied, Transitions};
use crate::saga::SagaInput;
use crate::{Error, Result};

/// How long a timer of a saga whose definition version this process does not know waits
/// before any process looks at it again.
const UNKNOWN_DEFINITION_DELAY: Duration = Duration::from_secs(5);

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
pub async fn fire_due_timer(transitions: &Transitions) -> Result<TimerOutcome> {
    let mut tx = transitions.pool.begin().await?;
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
    let phase: Phase = phase.parse().map_err(Error::Config)?;
    debug!(%saga_id, %step, %phase, attempt, "timer fired");
    let step_name = step.clone();
    let input = SagaInput::TimerFired {
        step,
        phase,
        attempt: attempt as u32,
    };
    match transitions
        .apply_in(&mut tx, None, saga_id, &input, None)
        .await
    {
        Ok(Applied::UnknownDefinition) => {
            // Not ours to fire: put it back a little later for a process that knows the
            // saga's definition version.
            tx.rollback().await?;
            sqlx::query("UPDATE timers SET fire_at = now() + $3 WHERE saga_id = $1 AND step = $2")
                .bind(saga_id)
                .bind(step_name)
                .bind(UNKNOWN_DEFINITION_DELAY)
                .execute(&transitions.pool)
                .await?;
        }
        Ok(_) => tx.commit().await?,
        // Someone else moved the saga on; the timer is still there after the rollback.
        Err(Error::VersionConflict { .. }) => tx.rollback().await?,
        Err(error) => return Err(error),
    }
    Ok(TimerOutcome::Fired)
}

/// Fires due timers until `shutdown`, checking every `interval` when none is due.
pub async fn run(transitions: Transitions, interval: Duration, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        match fire_due_timer(&transitions).await {
            Ok(TimerOutcome::Fired) => continue,
            Ok(TimerOutcome::Empty) => {}
            Err(error) => warn!(%error, "timer poll failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
