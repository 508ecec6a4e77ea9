//! Consumed-message deduplication: the inbox.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::Result;

/// Whether a message was seen before by the same consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// First delivery: process it.
    First,
    /// Already processed (its effects are committed): skip it.
    Duplicate,
}

/// Records that `consumer` processed `message_id`, inside the caller's transaction.
///
/// Commit the caller's transaction to make the record stick; roll it back and the message
/// counts as unseen again. Two transactions recording the same message at once serialize
/// on the primary key: the second one sees [`Receipt::Duplicate`] once the first commits.
pub async fn record(tx: &mut PgConnection, consumer: &str, message_id: Uuid) -> Result<Receipt> {
    let inserted = sqlx::query(
        "INSERT INTO inbox (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(message_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(if inserted == 1 {
        Receipt::First
    } else {
        Receipt::Duplicate
    })
}

/// [`record`] for many messages at once, in one statement: returns the `(consumer,
/// message_id)` pairs recorded now, the first deliveries. A pair given twice is recorded
/// once; the caller tells its second occurrence apart.
pub async fn record_all(
    tx: &mut PgConnection,
    messages: &[(&str, Uuid)],
) -> Result<std::collections::HashSet<(String, Uuid)>> {
    if messages.is_empty() {
        return Ok(Default::default());
    }
    let (consumers, ids): (Vec<&str>, Vec<Uuid>) = messages.iter().copied().unzip();
    let firsts: Vec<(String, Uuid)> = sqlx::query_as(
        "INSERT INTO inbox (consumer, message_id)
         SELECT * FROM UNNEST($1::text[], $2::uuid[])
         ON CONFLICT DO NOTHING
         RETURNING consumer, message_id",
    )
    .bind(&consumers)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    Ok(firsts.into_iter().collect())
}
