//! Running one command through the barrier, the handler and the outbox, in one transaction.

use chrono::{DateTime, Utc};
use saga_plumbing::outbox::{enqueue, OutboxMessage};
use saga_plumbing::trace::TRACEPARENT_HEADER;
use saga_plumbing::Result;
use schemas::{Envelope, MessageKind, Phase, ReplyOutcome};
use sqlx::{Connection, PgConnection, PgPool};
use tracing::instrument;
use uuid::Uuid;

use crate::barrier::{deadline_refusal, plan, Origin, OwnRow, Plan, HANGING_REASON};
use crate::{Command, CommandHandler, StepError};

/// What the kit did with a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// First delivery: answered (by the handler, or by the barrier for a null compensation
    /// or a refused confirm).
    Answered(ReplyOutcome),
    /// Duplicate delivery: the stored reply was sent again; business data untouched.
    Replayed(ReplyOutcome),
}

impl Handled {
    /// The reply that was enqueued.
    pub fn reply(&self) -> &ReplyOutcome {
        match self {
            Handled::Answered(reply) | Handled::Replayed(reply) => reply,
        }
    }
}

/// The id of the reply to a command: the same for every delivery of the same command
/// attempt, so the engine's inbox drops a replayed reply it has already applied.
pub fn reply_message_id(command: &Command) -> Uuid {
    let name = format!(
        "{}/{}/{}/{}",
        command.saga_id, command.step, command.phase, command.attempt
    );
    Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes())
}

/// Handles `command` in one transaction of `pool`'s schema: barrier row, business write
/// (through `handler`) and the reply enqueued for `reply_topic` commit together or not at all.
///
/// Business writes of a rejected or failed handler are rolled back (a savepoint), while the
/// rejection itself is recorded and answered. A retryable failure leaves no barrier row, so
/// the next delivery runs the handler again. The barrier row is written once, with its
/// reply; when a concurrent delivery of the same command stored its answer first, this
/// returns `Error::Deferred` and writes nothing: handled again, the command replays that
/// answer (the worker retries it so).
pub async fn handle_command(
    pool: &PgPool,
    handler: &dyn CommandHandler,
    command: &Command,
    reply_topic: &str,
) -> Result<Handled> {
    handle_command_before(pool, handler, command, reply_topic, None).await
}

/// [`handle_command`] for a command of a saga that must finish its forward work by
/// `deadline` (the command's `saga.deadline` header). Past it (on the database's clock), a
/// new try or action is answered `rejected` with the reason `deadline passed` without
/// running the handler; the answer is kept in the barrier like any other, so a duplicate
/// gets it again. Confirm, cancel and compensate run whatever the deadline.
pub async fn handle_command_before(
    pool: &PgPool,
    handler: &dyn CommandHandler,
    command: &Command,
    reply_topic: &str,
    deadline: Option<DateTime<Utc>>,
) -> Result<Handled> {
    let mut tx = pool.begin().await?;
    let handled = handle_command_in(&mut tx, handler, command, reply_topic, deadline).await?;
    tx.commit().await?;
    Ok(handled)
}

/// [`handle_command_before`] inside the caller's transaction, which may hold other
/// commands too (a consumer's group commit); nothing is committed here.
#[instrument(skip_all, fields(saga.id = %command.saga_id, step = %command.step, phase = %command.phase), err)]
pub async fn handle_command_in(
    tx: &mut PgConnection,
    handler: &dyn CommandHandler,
    command: &Command,
    reply_topic: &str,
    deadline: Option<DateTime<Utc>>,
) -> Result<Handled> {
    let (own, origin_row) = read_rows(tx, command).await?;
    let origin = match (&own, command.phase.origin()) {
        (OwnRow::Existing(_), _) | (_, None) => Origin::NotApplicable,
        (OwnRow::New, Some(_)) => match origin_row {
            Some(reply) => Origin::Answered(reply),
            None if command.phase.is_undo() => mark_hanging(tx, command).await?,
            None => Origin::Missing,
        },
    };
    let handled = match plan(command.phase, own, origin) {
        Plan::Replay(reply) => Handled::Replayed(reply),
        Plan::Answer(reply) => Handled::Answered(reply),
        Plan::Run => {
            let now = match deadline {
                Some(_) => Some(
                    sqlx::query_scalar("SELECT now()")
                        .fetch_one(&mut *tx)
                        .await?,
                ),
                None => None,
            };
            match deadline_refusal(command.phase, deadline, now) {
                Some(refusal) => {
                    crate::metrics::deadline_refusal(&command.step);
                    Handled::Answered(refusal)
                }
                None => Handled::Answered(run_handler(tx, handler, command).await?),
            }
        }
    };
    if let Handled::Answered(reply) = &handled {
        record_reply(tx, command, reply).await?;
    }
    let envelope = Envelope {
        message_id: reply_message_id(command),
        ..Envelope::new(MessageKind::Reply, handled.reply())
            .for_saga(command.saga_id)
            .for_step(command.step.clone(), command.phase, command.attempt)
    };
    let mut message = OutboxMessage::envelope(reply_topic, command.saga_id.to_string(), &envelope)?;
    if let Some(traceparent) = &command.traceparent {
        message = message.with_header(TRACEPARENT_HEADER, traceparent.clone());
    }
    enqueue(tx, &[message]).await?;
    Ok(handled)
}

/// Reads, in one statement, the replies stored for the command's own phase and for the
/// forward phase it settles (confirm, cancel, compensate): the own row says whether this is
/// a duplicate, the forward row what the undo or confirm finds.
async fn read_rows(
    tx: &mut PgConnection,
    command: &Command,
) -> Result<(OwnRow, Option<ReplyOutcome>)> {
    let origin = command.phase.origin();
    let phases: Vec<&str> = [Some(command.phase), origin]
        .into_iter()
        .flatten()
        .map(|phase| phase.as_str())
        .collect();
    let rows: Vec<(String, Option<sqlx::types::Json<ReplyOutcome>>)> = sqlx::query_as(
        "SELECT phase, reply FROM barrier WHERE saga_id = $1 AND step = $2 AND phase = ANY($3)",
    )
    .bind(command.saga_id)
    .bind(&command.step)
    .bind(&phases)
    .fetch_all(&mut *tx)
    .await?;
    // A row always holds its reply; one without (never written by this kit) reads as a
    // transient failure, so the engine tries again.
    let reply_of = |phase: Phase| {
        rows.iter()
            .find(|(stored, _)| stored == phase.as_str())
            .map(|(_, reply)| {
                reply.as_ref().map_or_else(
                    || ReplyOutcome::Failed {
                        error: "barrier row without a reply".into(),
                    },
                    |json| json.0.clone(),
                )
            })
    };
    let own = reply_of(command.phase).map_or(OwnRow::New, OwnRow::Existing);
    Ok((own, origin.and_then(reply_of)))
}

/// For an undo that finds no forward row: writes a rejected one in its place, so a late
/// forward command is refused (hanging) while this undo becomes a null compensation. When
/// a forward command answered meanwhile (its row appeared after the read), that answer
/// decides instead.
async fn mark_hanging(tx: &mut PgConnection, command: &Command) -> Result<Origin> {
    let Some(origin) = command.phase.origin() else {
        return Ok(Origin::NotApplicable);
    };
    let marker = serde_json::to_value(ReplyOutcome::Rejected {
        reason: HANGING_REASON.into(),
    })?;
    let marked = sqlx::query(
        "INSERT INTO barrier (saga_id, step, phase, reply) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
    )
    .bind(command.saga_id)
    .bind(&command.step)
    .bind(origin.as_str())
    .bind(marker)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if marked == 1 {
        return Ok(Origin::MarkedNow);
    }
    let (_, answered) = read_rows(tx, command).await?;
    Ok(answered.map_or(Origin::Missing, Origin::Answered))
}

/// Stores a final reply as the command's barrier row, written once. A transient failure
/// stores nothing, so the next delivery of the command runs again. When another delivery
/// of the same command stored its answer first (a rebalance handed the partition over
/// mid-command), this one fails for now and, retried, replays that answer.
async fn record_reply(
    tx: &mut PgConnection,
    command: &Command,
    reply: &ReplyOutcome,
) -> Result<()> {
    if matches!(reply, ReplyOutcome::Failed { .. }) {
        return Ok(());
    }
    let recorded = sqlx::query(
        "INSERT INTO barrier (saga_id, step, phase, reply) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
    )
    .bind(command.saga_id)
    .bind(&command.step)
    .bind(command.phase.as_str())
    .bind(serde_json::to_value(reply)?)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if recorded == 0 {
        return Err(saga_plumbing::Error::Deferred(format!(
            "saga {} step {} {}: another delivery of this command answered first",
            command.saga_id, command.step, command.phase
        )));
    }
    Ok(())
}

/// Runs the handler in a savepoint: its writes survive only if it succeeds.
async fn run_handler(
    tx: &mut PgConnection,
    handler: &dyn CommandHandler,
    command: &Command,
) -> Result<ReplyOutcome> {
    let mut savepoint = tx.begin().await?;
    match handler.handle(&mut savepoint, command).await {
        Ok(output) => {
            savepoint.commit().await?;
            Ok(ReplyOutcome::Ok { output })
        }
        Err(error) => {
            savepoint.rollback().await?;
            Ok(match error {
                StepError::Rejected(reason) => ReplyOutcome::Rejected { reason },
                StepError::Retryable(error) => ReplyOutcome::Failed { error },
            })
        }
    }
}
