//! The coupons domain: a compensable step over single-use coupons.
//!
//! The action marks a coupon used by the order (one guarded `UPDATE`, so of several orders
//! racing for a coupon exactly one wins); the compensation frees it again, but only if
//! this order is the one holding it. Expiry is judged by the database clock.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use saga_participant::{
    CommandHandler, Compensable, CompensableParticipant, StepError, StepResultExt,
};
use schemas::checkout::RedeemCoupon;
use serde_json::{json, Value};
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The Postgres schema that holds the coupons tables.
pub const SCHEMA: &str = "coupons";

/// The coupons tables (`coupons`), applied after the participant kit's migrations.
pub static MIGRATIONS: Migrator = Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("../migrations/coupons")
};

/// The coupons participant: answers action / compensate of [`RedeemCoupon`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Coupons;

/// The coupons participant as a command handler for the participant kit.
pub fn handler() -> Arc<dyn CommandHandler> {
    Arc::new(Compensable(Coupons))
}

/// Makes each `(code, expires_at)` an unused coupon expiring then, creating the coupons
/// that do not exist.
pub async fn seed_coupons<S: AsRef<str>>(
    pool: &PgPool,
    coupons: &[(S, DateTime<Utc>)],
) -> saga_plumbing::Result<()> {
    let codes: Vec<&str> = coupons.iter().map(|(code, _)| code.as_ref()).collect();
    let expiries: Vec<DateTime<Utc>> = coupons.iter().map(|(_, at)| *at).collect();
    sqlx::query(
        "INSERT INTO coupons (code, expires_at)
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[])
         ON CONFLICT (code) DO UPDATE
         SET expires_at = EXCLUDED.expires_at, used_by_order = NULL, used_at = NULL",
    )
    .bind(codes)
    .bind(expiries)
    .execute(pool)
    .await?;
    Ok(())
}

/// A coupon as the action finds it when it could not redeem it.
#[derive(sqlx::FromRow)]
struct Found {
    expires_at: DateTime<Utc>,
    expired: bool,
    used_by_order: Option<Uuid>,
    used_at: Option<DateTime<Utc>>,
}

impl CompensableParticipant for Coupons {
    type Command = RedeemCoupon;

    /// A code of the wrong length or characters is poison: the worker dead-letters it.
    fn validate(&self, cmd: &RedeemCoupon) -> Result<(), String> {
        cmd.validate()
    }

    async fn action(&self, tx: &mut PgConnection, cmd: &RedeemCoupon) -> Result<Value, StepError> {
        // Checked again for callers that bypass the worker's validation.
        cmd.validate().map_err(StepError::Rejected)?;
        let redeemed: Option<DateTime<Utc>> = sqlx::query_scalar(
            "UPDATE coupons SET used_by_order = $2, used_at = now()
             WHERE code = $1 AND used_by_order IS NULL AND expires_at > now()
             RETURNING used_at",
        )
        .bind(&cmd.code)
        .bind(cmd.order_id)
        .fetch_optional(&mut *tx)
        .await
        .retryable()?;
        if let Some(used_at) = redeemed {
            return Ok(redeemed_output(cmd, used_at));
        }
        let found: Option<Found> = sqlx::query_as(
            "SELECT expires_at, expires_at <= now() AS expired, used_by_order, used_at
             FROM coupons WHERE code = $1",
        )
        .bind(&cmd.code)
        .fetch_optional(&mut *tx)
        .await
        .retryable()?;
        let code = &cmd.code;
        let Some(found) = found else {
            return Err(StepError::Rejected(format!("coupon {code} is unknown")));
        };
        match (found.used_by_order, found.used_at) {
            // Already redeemed by this very order: the redemption stands.
            (Some(order), Some(used_at)) if order == cmd.order_id => {
                Ok(redeemed_output(cmd, used_at))
            }
            (Some(_), _) => Err(StepError::Rejected(format!(
                "coupon {code} is already used"
            ))),
            (None, _) if found.expired => Err(StepError::Rejected(format!(
                "coupon {code} expired at {}",
                found.expires_at.to_rfc3339()
            ))),
            // Freed by a concurrent compensation between the two statements.
            (None, _) => Err(StepError::Retryable(format!(
                "coupon {code} changed while redeeming it"
            ))),
        }
    }

    async fn compensate(&self, tx: &mut PgConnection, cmd: &RedeemCoupon) -> Result<(), StepError> {
        cmd.validate().map_err(StepError::Rejected)?;
        // Only the order holding the coupon frees it; for any other order there is nothing
        // to restore.
        sqlx::query(
            "UPDATE coupons SET used_by_order = NULL, used_at = NULL
             WHERE code = $1 AND used_by_order = $2",
        )
        .bind(&cmd.code)
        .bind(cmd.order_id)
        .execute(&mut *tx)
        .await
        .retryable()?;
        Ok(())
    }
}

fn redeemed_output(cmd: &RedeemCoupon, used_at: DateTime<Utc>) -> Value {
    json!({ "code": cmd.code, "order_id": cmd.order_id, "used_at": used_at })
}
