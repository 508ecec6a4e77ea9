//! One lane: its partitions' messages, in order, applied in groups.
//!
//! When the lane takes a message it also takes whatever else is queued (up to
//! `max_batch`) and applies them all in one transaction, each in a savepoint of its own:
//! one commit for the group, and the offsets stored after it. A message refused as poison
//! only rolls back its own savepoint; the group commits with it as its last message, the
//! dead letter is kept, and the messages after it form the next group, so effects still
//! happen in message order. When a message fails for a retryable reason (the database, a
//! conflict), the group commits what came before it, and that message and every later one
//! are handled alone, in order, each retried with backoff as usual. A group whose commit
//! fails, or that the handler failed to apply at once ([`MessageHandler::handle_group`]
//! returned an error: a lock it would not wait for, say), is handled alone, message by
//! message, each in a transaction of its own.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use sqlx::Connection;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{pause, Grouped, HandleError, Handled, LaneContext, MessageHandler};
use crate::kafka::kafka_error;
use crate::{dlq, outbox};

/// How a message of a group ended inside the group's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
enum InGroup {
    /// Applied; committed with the group.
    Done,
    /// To be dead-lettered after the commit (its own writes rolled back, or kept when the
    /// handler said [`Handled::Refused`]).
    DeadLetter(String),
}

/// Takes messages until the queue closes or shutdown; returns when it should stop.
pub(super) async fn run<H: MessageHandler>(
    mut messages: mpsc::Receiver<OwnedMessage>,
    context: Arc<LaneContext<H>>,
) {
    let max_batch = context.settings.max_batch.max(1);
    let mut group = Vec::with_capacity(max_batch);
    while let Some(first) = messages.recv().await {
        group.push(first);
        while group.len() < max_batch {
            match messages.try_recv() {
                Ok(message) => group.push(message),
                Err(_) => break,
            }
        }
        // After shutdown, queued messages stay unhandled (and uncommitted) for the next owner.
        if context.shutdown.is_cancelled() {
            break;
        }
        // Taken away by a rebalance: its next owner handles it from the committed offset.
        let held = context.consumer.context();
        group.retain(|message| held.holds(message.topic(), message.partition()));
        if !handle_group(&group, &context).await {
            break;
        }
        group.clear();
    }
}

/// Handles `messages` to the end: in groups while there are several, then alone from
/// where a group stopped for a retryable failure. Returns false when shutdown interrupted
/// it.
async fn handle_group<H: MessageHandler>(
    messages: &[OwnedMessage],
    context: &LaneContext<H>,
) -> bool {
    let mut rest = messages;
    while rest.len() > 1 {
        let committed = match apply_group(rest, context).await {
            Ok(committed) => committed,
            Err(error) => {
                warn!(consumer = %context.name, %error, messages = rest.len(),
                    "group transaction failed; handling its messages one by one");
                break;
            }
        };
        crate::metrics::group_committed(&context.name, committed.len());
        for (message, outcome) in rest.iter().zip(&committed) {
            if let InGroup::DeadLetter(reason) = outcome {
                if !dead_letter(message, reason, context).await {
                    return false;
                }
            }
            store_offset(message, context);
        }
        let ended_by_dead_letter = matches!(committed.last(), Some(InGroup::DeadLetter(_)));
        rest = &rest[committed.len()..];
        if !ended_by_dead_letter {
            break;
        }
    }
    for message in rest {
        if !process(message, context).await {
            return false;
        }
        store_offset(message, context);
    }
    true
}

/// Applies `messages` in one transaction, each in its own savepoint, and commits it. The
/// group ends early after a message to dead-letter (so its dead letter is kept before any
/// later message takes effect), or before a message that fails for a retryable reason.
/// Returns the outcomes of the messages committed, in order.
async fn apply_group<H: MessageHandler>(
    messages: &[OwnedMessage],
    context: &LaneContext<H>,
) -> crate::Result<Vec<InGroup>> {
    let mut tx = context.handler.pool().begin().await?;
    outbox::wake::quiet(&mut tx).await?;
    let whole = apply_whole(&mut tx, messages, context).await?;
    crate::metrics::group_applied(&context.name, whole.label());
    match whole {
        Whole::Applied => {
            tx.commit().await?;
            outbox::wake::committed();
            return Ok(vec![InGroup::Done; messages.len()]);
        }
        // Nothing committed: the caller handles every message alone.
        Whole::Failed => return Ok(Vec::new()),
        Whole::OneByOne => {}
    }
    let mut committed = Vec::with_capacity(messages.len());
    for message in messages {
        let mut savepoint = tx.begin().await?;
        let outcome = match context.handler.handle_in(&mut savepoint, message).await {
            Ok(Handled::Done) => {
                savepoint.commit().await?;
                InGroup::Done
            }
            Ok(Handled::Refused(reason)) => {
                savepoint.commit().await?;
                InGroup::DeadLetter(reason)
            }
            Err(HandleError::Poison(reason)) => {
                savepoint.rollback().await?;
                InGroup::DeadLetter(reason)
            }
            Err(HandleError::Infra(error)) if !error.is_retryable() => {
                savepoint.rollback().await?;
                InGroup::DeadLetter(error.to_string())
            }
            Err(HandleError::Infra(error)) => {
                debug!(consumer = %context.name, %error, topic = message.topic(),
                    offset = message.offset(), "group stops before a failing message");
                savepoint.rollback().await?;
                break;
            }
        };
        let dead_letter = matches!(outcome, InGroup::DeadLetter(_));
        committed.push(outcome);
        if dead_letter {
            break;
        }
    }
    tx.commit().await?;
    outbox::wake::committed();
    Ok(committed)
}

/// How applying a group at once ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Whole {
    /// Applied; to be committed.
    Applied,
    /// The handler asked for one message at a time.
    OneByOne,
    /// The handler failed; the group is to be handled message by message, each alone.
    Failed,
}

impl Whole {
    /// The metric's label for it.
    fn label(self) -> &'static str {
        match self {
            Whole::Applied => "at_once",
            Whole::OneByOne => "one_by_one",
            Whole::Failed => "alone",
        }
    }
}

/// Lets the handler apply `messages` all at once ([`MessageHandler::handle_group`]), in a
/// savepoint; what it wrote is rolled back unless it applied them.
async fn apply_whole<H: MessageHandler>(
    tx: &mut sqlx::PgConnection,
    messages: &[OwnedMessage],
    context: &LaneContext<H>,
) -> crate::Result<Whole> {
    let mut savepoint = tx.begin().await?;
    let whole = match context.handler.handle_group(&mut savepoint, messages).await {
        Ok(Grouped::Applied) => {
            savepoint.commit().await?;
            return Ok(Whole::Applied);
        }
        Ok(Grouped::OneByOne) => Whole::OneByOne,
        Err(error) => {
            debug!(consumer = %context.name, ?error, messages = messages.len(),
                "group applied at once failed; handling its messages alone");
            Whole::Failed
        }
    };
    savepoint.rollback().await?;
    Ok(whole)
}

/// Handles one message in a transaction of its own to the end (done or dead-lettered).
/// Returns false when shutdown interrupted it: the offset must not be stored then.
async fn process<H: MessageHandler>(message: &OwnedMessage, context: &LaneContext<H>) -> bool {
    let (settings, shutdown) = (&context.settings, &context.shutdown);
    let mut backoff = settings.retry_initial_backoff;
    let poison = loop {
        match apply_alone(message, context).await {
            Ok(Handled::Done) => return true,
            Ok(Handled::Refused(reason)) | Err(HandleError::Poison(reason)) => break reason,
            Err(HandleError::Infra(error)) if !error.is_retryable() => break error.to_string(),
            Err(HandleError::Infra(error)) => {
                warn!(consumer = %context.name, %error, ?backoff, topic = message.topic(),
                    offset = message.offset(), "handling failed, retrying");
                crate::metrics::handle_retried(&context.name);
                if !pause(backoff, shutdown).await {
                    return false;
                }
                backoff = next_backoff(backoff, settings.retry_max_backoff);
            }
        }
    };
    dead_letter(message, &poison, context).await
}

/// One message in its own transaction: committed when handled (also when refused with its
/// writes kept), rolled back on an error.
async fn apply_alone<H: MessageHandler>(
    message: &OwnedMessage,
    context: &LaneContext<H>,
) -> Result<Handled, HandleError> {
    let mut tx = context.handler.pool().begin().await.map_err(infra)?;
    outbox::wake::quiet(&mut tx).await?;
    let handled = context.handler.handle_in(&mut tx, message).await?;
    tx.commit().await.map_err(infra)?;
    outbox::wake::committed();
    Ok(handled)
}

fn infra(error: sqlx::Error) -> HandleError {
    HandleError::Infra(error.into())
}

/// Keeps `message` as a dead letter, retrying while Postgres fails. Returns false when
/// shutdown interrupted it.
async fn dead_letter<H: MessageHandler>(
    message: &OwnedMessage,
    reason: &str,
    context: &LaneContext<H>,
) -> bool {
    let settings = &context.settings;
    let mut backoff = settings.retry_initial_backoff;
    // Only Postgres failing to keep the dead letter ends here; the message waits for it.
    while let Err(error) = dlq::send(&context.dlq, message, reason).await {
        warn!(%error, ?backoff, topic = message.topic(), offset = message.offset(),
            "keeping the dead letter failed, retrying");
        if !pause(backoff, &context.shutdown).await {
            return false;
        }
        backoff = next_backoff(backoff, settings.retry_max_backoff);
    }
    true
}

/// Marks `message` done for the next commit of the consumer's offsets.
fn store_offset<H>(message: &OwnedMessage, context: &LaneContext<H>) {
    let stored =
        context
            .consumer
            .store_offset(message.topic(), message.partition(), message.offset());
    if let Err(source) = stored {
        let error = kafka_error("store offset", message.topic(), source);
        warn!(consumer = %context.name, %error,
            "offset not stored; the message will come again");
    }
}

fn next_backoff(backoff: Duration, max: Duration) -> Duration {
    (backoff * 2).min(max)
}
