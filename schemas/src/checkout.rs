//! Messages of the reference checkout saga: its trigger and the command bodies of its steps.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Trigger payload on `checkout.requested`: pay for an order with balance, points and a coupon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequested {
    /// The order; also the idempotency key of the trigger.
    pub order_id: Uuid,
    /// The paying user.
    pub user_id: i64,
    /// Amount taken from the user's balance, in cents (positive).
    pub amount_cents: i64,
    /// Loyalty points spent (zero or more).
    pub points: i64,
    /// Coupon redeemed by the order.
    pub coupon_code: String,
}

impl CheckoutRequested {
    /// Checks what the types cannot: amounts in range, a coupon code present.
    pub fn validate(&self) -> Result<(), String> {
        if self.amount_cents <= 0 {
            return Err(format!(
                "amount_cents must be positive, got {}",
                self.amount_cents
            ));
        }
        if self.points < 0 {
            return Err(format!("points must not be negative, got {}", self.points));
        }
        if self.coupon_code.trim().is_empty() {
            return Err("coupon_code must not be empty".into());
        }
        Ok(())
    }
}

/// Balance TCC body (try freezes, confirm spends, cancel unfreezes `amount_cents`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeFunds {
    /// Whose balance.
    pub user_id: i64,
    /// How much, in cents.
    pub amount_cents: i64,
}

/// Points step body (action deducts, compensation refunds `points`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeductPoints {
    /// Whose points.
    pub user_id: i64,
    /// How many.
    pub points: i64,
}

/// Coupon step body (action marks the coupon used by the order, compensation restores it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemCoupon {
    /// The coupon.
    pub code: String,
    /// The order using it.
    pub order_id: Uuid,
}
