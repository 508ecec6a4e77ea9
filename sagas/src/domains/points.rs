//! The points domain: a compensable step over users' loyalty points.
//!
//! The action deducts points (never below zero, one guarded `UPDATE`); the compensation
//! refunds them.

use std::sync::Arc;

use saga_participant::{
    CommandHandler, Compensable, CompensableParticipant, StepError, StepResultExt,
};
use schemas::checkout::DeductPoints;
use serde_json::{json, Value};
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool};

/// The Postgres schema that holds the points tables.
pub const SCHEMA: &str = "points";

/// The points tables (`points`), applied after the participant kit's migrations.
pub static MIGRATIONS: Migrator = Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("../migrations/points")
};

/// The points participant: answers action / compensate of [`DeductPoints`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Points;

/// The points participant as a command handler for the participant kit.
pub fn handler() -> Arc<dyn CommandHandler> {
    Arc::new(Compensable(Points))
}

/// Sets each `(user_id, balance)` to that many points, creating the users that do not exist.
pub async fn seed_points(pool: &PgPool, balances: &[(i64, i64)]) -> saga_plumbing::Result<()> {
    let (users, points): (Vec<i64>, Vec<i64>) = balances.iter().copied().unzip();
    sqlx::query(
        "INSERT INTO points (user_id, balance)
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[])
         ON CONFLICT (user_id) DO UPDATE SET balance = EXCLUDED.balance",
    )
    .bind(users)
    .bind(points)
    .execute(pool)
    .await?;
    Ok(())
}

impl CompensableParticipant for Points {
    type Command = DeductPoints;

    /// Out-of-bounds points or user ids are poison: the worker dead-letters them.
    fn validate(&self, cmd: &DeductPoints) -> Result<(), String> {
        cmd.validate()
    }

    async fn action(&self, tx: &mut PgConnection, cmd: &DeductPoints) -> Result<Value, StepError> {
        check_points(cmd)?;
        let deducted = sqlx::query(
            "UPDATE points SET balance = balance - $2 WHERE user_id = $1 AND balance >= $2",
        )
        .bind(cmd.user_id)
        .bind(cmd.points)
        .execute(&mut *tx)
        .await
        .retryable()?
        .rows_affected();
        if deducted == 0 {
            let balance: Option<i64> =
                sqlx::query_scalar("SELECT balance FROM points WHERE user_id = $1")
                    .bind(cmd.user_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .retryable()?;
            return Err(match balance {
                None => unknown_user(cmd.user_id),
                Some(balance) => StepError::Rejected(format!(
                    "not enough points: user {} has {balance}, {} needed",
                    cmd.user_id, cmd.points
                )),
            });
        }
        Ok(json!({ "deducted_points": cmd.points }))
    }

    async fn compensate(&self, tx: &mut PgConnection, cmd: &DeductPoints) -> Result<(), StepError> {
        check_points(cmd)?;
        let refunded = sqlx::query("UPDATE points SET balance = balance + $2 WHERE user_id = $1")
            .bind(cmd.user_id)
            .bind(cmd.points)
            .execute(&mut *tx)
            .await
            .retryable()?
            .rows_affected();
        if refunded == 0 {
            return Err(unknown_user(cmd.user_id));
        }
        Ok(())
    }
}

/// The contract's bounds (points from zero up to the maximum, a valid user id), checked
/// again inside the handler for callers that bypass the worker's validation.
fn check_points(cmd: &DeductPoints) -> Result<(), StepError> {
    cmd.validate().map_err(StepError::Rejected)
}

fn unknown_user(user_id: i64) -> StepError {
    StepError::Rejected(format!("unknown user {user_id}"))
}
