//! Triggers deduplicated by their idempotency key: one saga per key, and the hash of the
//! payload it started with tells a redelivery (same hash: a quiet duplicate) from another
//! trigger reusing the key for different content (a conflict: refused, announced on the
//! lifecycle topic, dead-lettered by the caller).
//!
//! The saga id is derived from the definition and the key, so the saga's row is the
//! record of the key; the inbox holds the saga id too (consumer [`TRIGGER_CONSUMER`]), so
//! two different triggers that happen to share a `message_id` both count.

use std::time::Instant;

use saga_core::{digest, AcceptedTrigger, SagaDefinition, SagaInput};
use saga_plumbing::outbox::{self, OutboxMessage};
use saga_plumbing::trace::{self, TRACEPARENT_HEADER};
use schemas::{Envelope, LifecycleEvent, MessageKind};
use sqlx::{Connection, PgConnection};
use tracing::{debug, warn};
use uuid::Uuid;

use crate::metrics;
use crate::transition::{Applied, Source, Transitions};
use crate::{Error, Result};

/// Inbox consumer name of the trigger path; its message ids are saga ids.
pub const TRIGGER_CONSUMER: &str = "triggers";
/// Inbox consumer name that keeps a redelivered conflicting trigger from announcing its
/// conflict twice.
const CONFLICT_CONSUMER: &str = "trigger-conflicts";

/// The error a conflicting trigger is dead-lettered with.
pub const CONFLICT_ERROR: &str = "idempotency key reused with a different payload";

/// A trigger that passed its definition's checks, about to start its saga.
#[derive(Debug, Clone, Copy)]
pub struct Trigger<'a> {
    /// The definition it starts (the newest version of its name).
    pub definition: &'a SagaDefinition,
    /// Its saga id, idempotency key and input.
    pub accepted: &'a AcceptedTrigger,
    /// Its envelope's `message_id`.
    pub message_id: Uuid,
    /// The W3C trace id its saga's messages carry.
    pub trace_id: &'a str,
}

/// What a trigger did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Triggered {
    /// It started its saga.
    Started,
    /// Its saga already exists with the same payload: nothing changed.
    Duplicate,
    /// Its saga already exists with another payload: nothing changed but a
    /// `trigger_conflict` lifecycle event in the outbox.
    Conflict {
        /// Hash of the payload the saga started with.
        stored_payload_hash: String,
        /// Hash of this trigger's payload.
        payload_hash: String,
    },
}

impl Transitions {
    /// Starts the saga of `trigger` unless its key already has one, inside the caller's
    /// transaction (which may hold other inputs' transitions too): each attempt runs in a
    /// savepoint, and a version conflict is decided again. A concurrent trigger for the same
    /// key waits on the inbox row of the first, then is compared with the saga that one
    /// started.
    pub async fn trigger(&self, tx: &mut PgConnection, trigger: Trigger<'_>) -> Result<Triggered> {
        let started = Instant::now();
        let saga_id = trigger.accepted.saga_id;
        let payload_hash = digest::payload_hash(&trigger.accepted.input);
        let input = SagaInput::Start {
            input: trigger.accepted.input.clone(),
            trace_id: trigger.trace_id.to_string(),
        };
        let source = Source {
            consumer: TRIGGER_CONSUMER,
            message_id: saga_id,
        };
        let (mut conflicts, mut compared_again) = (0, false);
        loop {
            let mut savepoint = tx.begin().await?;
            if let Some(stored) = stored_payload_hash(&mut savepoint, saga_id).await? {
                if stored == payload_hash {
                    savepoint.rollback().await?;
                    metrics::transition(&input, &Applied::Duplicate, None, started.elapsed());
                    return Ok(Triggered::Duplicate);
                }
                self.announce_conflict(&mut savepoint, trigger, &stored, &payload_hash)
                    .await?;
                savepoint.commit().await?;
                metrics::trigger_conflict(trigger.definition.name());
                return Ok(Triggered::Conflict {
                    stored_payload_hash: stored,
                    payload_hash,
                });
            }
            let applied = self
                .apply_in(
                    &mut savepoint,
                    Some(source),
                    saga_id,
                    &input,
                    Some(trigger.definition),
                )
                .await;
            match applied {
                // Another trigger for this key started the saga while this one waited on
                // the inbox row: compare with what it started.
                Ok(Applied::Duplicate) if !compared_again => {
                    savepoint.rollback().await?;
                    compared_again = true;
                }
                Ok(applied) => {
                    savepoint.commit().await?;
                    let source = Some(TRIGGER_CONSUMER);
                    metrics::transition(&input, &applied, source, started.elapsed());
                    return Ok(match applied {
                        Applied::Changed { .. } => Triggered::Started,
                        // The inbox remembers the key of a saga no longer kept.
                        _ => Triggered::Duplicate,
                    });
                }
                Err(Error::VersionConflict { .. }) if conflicts < self.conflict_retries() => {
                    conflicts += 1;
                    debug!(%saga_id, conflicts, "version conflict, starting again");
                    savepoint.rollback().await?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Puts the `trigger_conflict` lifecycle event of `trigger` in the outbox, once per
    /// refused message (a redelivery of it announces nothing new).
    async fn announce_conflict(
        &self,
        tx: &mut PgConnection,
        trigger: Trigger<'_>,
        stored_payload_hash: &str,
        payload_hash: &str,
    ) -> Result<()> {
        let saga_id = trigger.accepted.saga_id;
        warn!(%saga_id, definition = trigger.definition.name(),
            idempotency_key = %trigger.accepted.key, message_id = %trigger.message_id,
            stored_payload_hash, payload_hash, "{CONFLICT_ERROR}; the trigger is refused");
        let announcement = Uuid::new_v5(
            &saga_id,
            format!("{}/{payload_hash}", trigger.message_id).as_bytes(),
        );
        let first = saga_plumbing::inbox::record(tx, CONFLICT_CONSUMER, announcement).await?;
        if first == saga_plumbing::inbox::Receipt::Duplicate {
            return Ok(());
        }
        let event = LifecycleEvent::TriggerConflict {
            definition: trigger.definition.name().to_string(),
            idempotency_key: trigger.accepted.key.clone(),
            message_id: trigger.message_id,
            stored_payload_hash: stored_payload_hash.to_string(),
            payload_hash: payload_hash.to_string(),
        };
        let envelope = Envelope::new(MessageKind::Lifecycle, event).for_saga(saga_id);
        let message =
            OutboxMessage::envelope(self.topics().lifecycle(), saga_id.to_string(), &envelope)?
                .with_header(
                    TRACEPARENT_HEADER,
                    trace::child_traceparent(trigger.trace_id),
                );
        outbox::enqueue(tx, &[message]).await
    }
}

/// The payload hash saga `saga_id` started with, if the saga exists. Sagas started before
/// hashes were stored get the hash of their stored input, which is the same payload.
async fn stored_payload_hash(tx: &mut PgConnection, saga_id: Uuid) -> Result<Option<String>> {
    let row: Option<(Option<String>, serde_json::Value)> =
        sqlx::query_as("SELECT payload_hash, input FROM sagas WHERE id = $1")
            .bind(saga_id)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(row.map(|(hash, input)| hash.unwrap_or_else(|| digest::payload_hash(&input))))
}

/// [`stored_payload_hash`] of every saga of `saga_ids` that exists, in one query.
pub(crate) async fn stored_payload_hashes(
    tx: &mut PgConnection,
    saga_ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, String>> {
    let rows: Vec<(Uuid, Option<String>, serde_json::Value)> =
        sqlx::query_as("SELECT id, payload_hash, input FROM sagas WHERE id = ANY($1)")
            .bind(saga_ids)
            .fetch_all(&mut *tx)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, hash, input)| (id, hash.unwrap_or_else(|| digest::payload_hash(&input))))
        .collect())
}
