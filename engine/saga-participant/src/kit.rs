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
    let rows = read_rows(tx, &[command]).await?;
    let (own, origin_row) = rows_of(command, &rows);
    let handled = answer(
        tx,
        handler,
        command,
        (own, origin_row),
        (deadline, &mut None),
        HandlerFailure::Answer,
    )
    .await?;
    if let Handled::Answered(reply) = &handled {
        record_reply(tx, command, reply).await?;
    }
    enqueue(tx, &[reply_message(command, &handled, reply_topic)?]).await?;
    Ok(handled)
}

/// The span a command is handled in, continuing the trace its `traceparent` names.
pub(crate) fn command_span(command: &Command) -> tracing::Span {
    let span = tracing::info_span!("command", saga.id = %command.saga_id,
        step = %command.step, phase = %command.phase, attempt = command.attempt);
    if let Some(traceparent) = &command.traceparent {
        saga_plumbing::trace::continue_trace(&span, traceparent);
    }
    span
}

/// What to do when the handler fails for a reason that may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandlerFailure {
    /// Answer `failed` (the command was handled alone: the engine retries it later).
    Answer,
    /// Fail the whole transaction: the command is one of a group, whose members are then
    /// handled alone (a lock another group held, say, is no reason to answer `failed`).
    HandleAlone,
}

/// Decides, from the command's barrier rows (`own` and the forward phase's reply), what the
/// answer is, running the handler when it has to. Writes nothing of its own except the
/// marker of a null compensation. `now` caches the transaction's time once read (the same
/// for every command of a group).
pub(crate) async fn answer(
    tx: &mut PgConnection,
    handler: &dyn CommandHandler,
    command: &Command,
    (own, origin_row): (OwnRow, Option<ReplyOutcome>),
    (deadline, now): (Option<DateTime<Utc>>, &mut Option<DateTime<Utc>>),
    on_failure: HandlerFailure,
) -> Result<Handled> {
    let origin = match (&own, command.phase.origin()) {
        (OwnRow::Existing(_), _) | (_, None) => Origin::NotApplicable,
        (OwnRow::New, Some(_)) => match origin_row {
            Some(reply) => Origin::Answered(reply),
            None if command.phase.is_undo() => mark_hanging(tx, command).await?,
            None => Origin::Missing,
        },
    };
    Ok(match plan(command.phase, own, origin) {
        Plan::Replay(reply) => Handled::Replayed(reply),
        Plan::Answer(reply) => Handled::Answered(reply),
        Plan::Run => {
            if deadline.is_some() && now.is_none() {
                *now = Some(
                    sqlx::query_scalar("SELECT now()")
                        .fetch_one(&mut *tx)
                        .await?,
                );
            }
            match deadline_refusal(command.phase, deadline, *now) {
                Some(refusal) => {
                    crate::metrics::deadline_refusal(&command.step);
                    Handled::Answered(refusal)
                }
                None => Handled::Answered(run_handler(tx, handler, command, on_failure).await?),
            }
        }
    })
}

/// The reply to `command` as it goes into the outbox: keyed by the saga, with the id every
/// delivery of this attempt shares and the command's `traceparent`.
pub(crate) fn reply_message(
    command: &Command,
    handled: &Handled,
    reply_topic: &str,
) -> Result<OutboxMessage> {
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
    Ok(message)
}

/// One barrier row: the reply a participant gave to `(saga_id, step, phase)`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct BarrierRow {
    saga_id: Uuid,
    step: String,
    phase: String,
    reply: Option<sqlx::types::Json<ReplyOutcome>>,
}

/// Reads, in one statement, the replies stored for each command's own phase and for the
/// forward phase it settles (confirm, cancel, compensate): the own row says whether this is
/// a duplicate, the forward row what the undo or confirm finds.
pub(crate) async fn read_rows(
    tx: &mut PgConnection,
    commands: &[&Command],
) -> Result<Vec<BarrierRow>> {
    let (mut saga_ids, mut steps, mut phases) = (Vec::new(), Vec::new(), Vec::new());
    for command in commands {
        for phase in [Some(command.phase), command.phase.origin()]
            .into_iter()
            .flatten()
        {
            saga_ids.push(command.saga_id);
            steps.push(command.step.as_str());
            phases.push(phase.as_str());
        }
    }
    Ok(sqlx::query_as(
        "SELECT saga_id, step, phase, reply FROM barrier
         JOIN UNNEST($1::uuid[], $2::text[], $3::text[]) AS wanted (saga_id, step, phase)
         USING (saga_id, step, phase)",
    )
    .bind(&saga_ids)
    .bind(&steps)
    .bind(&phases)
    .fetch_all(&mut *tx)
    .await?)
}

/// What `rows` hold for `command`: its own row, and the reply of the forward phase it
/// settles.
pub(crate) fn rows_of(command: &Command, rows: &[BarrierRow]) -> (OwnRow, Option<ReplyOutcome>) {
    // A row always holds its reply; one without (never written by this kit) reads as a
    // transient failure, so the engine tries again.
    let reply_of = |phase: Phase| {
        rows.iter()
            .find(|row| {
                row.saga_id == command.saga_id
                    && row.step == command.step
                    && row.phase == phase.as_str()
            })
            .map(|row| {
                row.reply.as_ref().map_or_else(
                    || ReplyOutcome::Failed {
                        error: "barrier row without a reply".into(),
                    },
                    |json| json.0.clone(),
                )
            })
    };
    let own = reply_of(command.phase).map_or(OwnRow::New, OwnRow::Existing);
    (own, command.phase.origin().and_then(reply_of))
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
    let rows = read_rows(tx, &[command]).await?;
    let (_, answered) = rows_of(command, &rows);
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
    on_failure: HandlerFailure,
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
                StepError::Retryable(error) if on_failure == HandlerFailure::HandleAlone => {
                    return Err(saga_plumbing::Error::Deferred(format!(
                        "saga {} step {} {}: the handler failed inside a group ({error}); \
                         the group's commands are handled alone",
                        command.saga_id, command.step, command.phase
                    )));
                }
                StepError::Retryable(error) => ReplyOutcome::Failed { error },
            })
        }
    }
}
