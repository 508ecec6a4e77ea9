//! A group of commands (what a partition lane fetched together) handled in one
//! transaction, with one statement per kit table: one barrier read, one barrier insert,
//! one outbox insert. The handler still runs once per command, in a savepoint of its own.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use saga_plumbing::outbox::enqueue;
use saga_plumbing::Result;
use schemas::ReplyOutcome;
use sqlx::PgConnection;
use tracing::Instrument;

use crate::kit::{answer, command_span, read_rows, reply_message, rows_of, HandlerFailure};
use crate::{Command, CommandHandler, Handled};

/// A command with the deadline its delivery carried.
pub struct Delivery {
    /// The command.
    pub command: Command,
    /// Its saga's `saga.deadline` header, if any.
    pub deadline: Option<DateTime<Utc>>,
}

/// Handles `deliveries` inside `tx` as [`crate::handle_command_in`] would one by one, or
/// returns `None` (having written nothing) when two of them touch the same saga step, whose
/// order then matters. Waits at most `lock_timeout` for any row lock: groups of different
/// lanes lock rows of many users at once, and rather than wait for another group (or
/// deadlock with it), the group fails and its commands are handled alone. A handler that
/// fails for a reason that may pass fails the group the same way, so `failed` is only ever
/// answered for a command handled alone.
pub async fn handle_group_in(
    tx: &mut PgConnection,
    handler: &dyn CommandHandler,
    deliveries: &[Delivery],
    reply_topic: &str,
    lock_timeout: Duration,
) -> Result<Option<Vec<Handled>>> {
    let mut steps = HashSet::with_capacity(deliveries.len());
    let distinct = deliveries
        .iter()
        .all(|d| steps.insert((d.command.saga_id, d.command.step.as_str())));
    if !distinct {
        return Ok(None);
    }
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(format!("{}ms", lock_timeout.as_millis().max(1)))
        .execute(&mut *tx)
        .await?;
    let commands: Vec<&Command> = deliveries.iter().map(|d| &d.command).collect();
    let rows = read_rows(tx, &commands).await?;
    let mut now = None;
    let mut handled = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let command = &delivery.command;
        let found = rows_of(command, &rows);
        let deadline = (delivery.deadline, &mut now);
        let outcome = answer(
            tx,
            handler,
            command,
            found,
            deadline,
            HandlerFailure::HandleAlone,
        )
        .instrument(command_span(command))
        .await?;
        handled.push(outcome);
    }
    // Only the handlers' row locks are worth giving up on; the commit's locks are not.
    sqlx::query("SET LOCAL lock_timeout TO DEFAULT")
        .execute(&mut *tx)
        .await?;
    record_replies(tx, &commands, &handled).await?;
    let replies = commands
        .iter()
        .zip(&handled)
        .map(|(command, handled)| reply_message(command, handled, reply_topic))
        .collect::<Result<Vec<_>>>()?;
    enqueue(tx, &replies).await?;
    Ok(Some(handled))
}

/// Stores the group's new final replies as barrier rows, in one statement. When another
/// delivery of one of the commands stored its answer first, the group fails and its
/// commands, handled alone, replay what is stored.
async fn record_replies(
    tx: &mut PgConnection,
    commands: &[&Command],
    handled: &[Handled],
) -> Result<()> {
    let (mut saga_ids, mut steps, mut phases, mut replies) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (command, handled) in commands.iter().zip(handled) {
        match handled {
            Handled::Answered(ReplyOutcome::Failed { .. }) | Handled::Replayed(_) => {}
            Handled::Answered(reply) => {
                saga_ids.push(command.saga_id);
                steps.push(command.step.as_str());
                phases.push(command.phase.as_str());
                replies.push(serde_json::to_value(reply)?);
            }
        }
    }
    if saga_ids.is_empty() {
        return Ok(());
    }
    let recorded = sqlx::query(
        "INSERT INTO barrier (saga_id, step, phase, reply)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&saga_ids)
    .bind(&steps)
    .bind(&phases)
    .bind(&replies)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if recorded != saga_ids.len() as u64 {
        return Err(saga_plumbing::Error::Deferred(format!(
            "{} of {} replies of a group were answered first by another delivery",
            saga_ids.len() as u64 - recorded,
            saga_ids.len()
        )));
    }
    Ok(())
}
