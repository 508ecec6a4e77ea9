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
/// the next delivery runs the handler again.
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
    let own = claim_own_row(tx, command).await?;
    let origin = match own {
        OwnRow::New => read_origin(tx, command).await?,
        OwnRow::Existing(_) => Origin::NotApplicable,
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
        settle_own_row(tx, command, reply).await?;
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

/// Inserts the command's own barrier row, or reads the reply stored by an earlier delivery.
async fn claim_own_row(tx: &mut PgConnection, command: &Command) -> Result<OwnRow> {
    let inserted = sqlx::query(
        "INSERT INTO barrier (saga_id, step, phase) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(command.saga_id)
    .bind(&command.step)
    .bind(command.phase.as_str())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(OwnRow::New);
    }
    let reply = stored_reply(tx, command, command.phase).await?;
    Ok(OwnRow::Existing(reply.unwrap_or(ReplyOutcome::Failed {
        error: "barrier row without a reply".into(),
    })))
}

/// For confirm, cancel and compensate: what the forward phase answered. An undo phase that
/// finds no forward row writes a rejected one in its place, so a late forward command is
/// refused (hanging) while this one becomes a null compensation.
async fn read_origin(tx: &mut PgConnection, command: &Command) -> Result<Origin> {
    let Some(origin) = command.phase.origin() else {
        return Ok(Origin::NotApplicable);
    };
    if command.phase.is_undo() {
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
    }
    Ok(match stored_reply(tx, command, origin).await? {
        Some(reply) => Origin::Answered(reply),
        None => Origin::Missing,
    })
}

async fn stored_reply(
    tx: &mut PgConnection,
    command: &Command,
    phase: Phase,
) -> Result<Option<ReplyOutcome>> {
    let reply: Option<(Option<sqlx::types::Json<ReplyOutcome>>,)> =
        sqlx::query_as("SELECT reply FROM barrier WHERE saga_id = $1 AND step = $2 AND phase = $3")
            .bind(command.saga_id)
            .bind(&command.step)
            .bind(phase.as_str())
            .fetch_optional(&mut *tx)
            .await?;
    Ok(reply.and_then(|(reply,)| reply).map(|json| json.0))
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

/// Stores a final reply on the command's barrier row; a transient failure removes the row
/// instead, so the next delivery of the command runs again.
async fn settle_own_row(
    tx: &mut PgConnection,
    command: &Command,
    reply: &ReplyOutcome,
) -> Result<()> {
    let (sql, stored) = match reply {
        ReplyOutcome::Failed { .. } => (
            "DELETE FROM barrier WHERE saga_id = $1 AND step = $2 AND phase = $3",
            None,
        ),
        _ => (
            "UPDATE barrier SET reply = $4 WHERE saga_id = $1 AND step = $2 AND phase = $3",
            Some(serde_json::to_value(reply)?),
        ),
    };
    let mut query = sqlx::query(sql)
        .bind(command.saga_id)
        .bind(&command.step)
        .bind(command.phase.as_str());
    if let Some(stored) = stored {
        query = query.bind(stored);
    }
    query.execute(&mut *tx).await?;
    Ok(())
}
