//! Messages of the reference checkout saga: its trigger and the command bodies of its steps.
//!
//! Every field is bounded (see [`crate::limits`]); `validate` enforces the same bounds the
//! generated JSON Schema states. The checkout definition refuses an out-of-bounds trigger,
//! each participant refuses an out-of-bounds command, both as poison (dead-lettered).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::limits::{
    self, AMOUNT_CENTS_MAX, AMOUNT_CENTS_MIN, COUPON_CODE_MAX_CHARS, COUPON_CODE_MIN_CHARS,
    COUPON_CODE_PATTERN, POINTS_MAX, POINTS_MIN, USER_ID_MAX, USER_ID_MIN,
};

/// Trigger payload on `checkout.requested`: pay for an order with balance, points and a coupon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequested {
    /// The order (a hyphenated UUID); also the idempotency key of the trigger.
    #[serde(deserialize_with = "limits::wire::uuid")]
    pub order_id: Uuid,
    /// The paying user: 1 to 2^53 - 1.
    #[schemars(range(min = USER_ID_MIN, max = USER_ID_MAX))]
    pub user_id: i64,
    /// Amount taken from the user's balance, in cents: 1 to 10,000,000,000.
    #[schemars(range(min = AMOUNT_CENTS_MIN, max = AMOUNT_CENTS_MAX))]
    pub amount_cents: i64,
    /// Loyalty points spent: 0 to 1,000,000,000.
    #[schemars(range(min = POINTS_MIN, max = POINTS_MAX))]
    pub points: i64,
    /// Coupon redeemed by the order: 1 to 64 characters of `A-Z`, `a-z`, `0-9`, `_`, `-`.
    #[schemars(
        length(min = COUPON_CODE_MIN_CHARS, max = COUPON_CODE_MAX_CHARS),
        pattern(COUPON_CODE_PATTERN)
    )]
    pub coupon_code: String,
}

impl CheckoutRequested {
    /// Checks the bounds of [`crate::limits`]; the error names the field and its limit.
    pub fn validate(&self) -> Result<(), String> {
        check_user(self.user_id)?;
        check_amount(self.amount_cents)?;
        check_points(self.points)?;
        limits::check_coupon_code("coupon_code", &self.coupon_code)
    }
}

/// Balance TCC body (try freezes, confirm spends, cancel unfreezes `amount_cents`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeFunds {
    /// Whose balance: 1 to 2^53 - 1.
    #[schemars(range(min = USER_ID_MIN, max = USER_ID_MAX))]
    pub user_id: i64,
    /// How much, in cents: 1 to 10,000,000,000.
    #[schemars(range(min = AMOUNT_CENTS_MIN, max = AMOUNT_CENTS_MAX))]
    pub amount_cents: i64,
}

impl FreezeFunds {
    /// Checks the bounds of [`crate::limits`]; the error names the field and its limit.
    pub fn validate(&self) -> Result<(), String> {
        check_user(self.user_id)?;
        check_amount(self.amount_cents)
    }
}

/// Points step body (action deducts, compensation refunds `points`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeductPoints {
    /// Whose points: 1 to 2^53 - 1.
    #[schemars(range(min = USER_ID_MIN, max = USER_ID_MAX))]
    pub user_id: i64,
    /// How many: 0 to 1,000,000,000.
    #[schemars(range(min = POINTS_MIN, max = POINTS_MAX))]
    pub points: i64,
}

impl DeductPoints {
    /// Checks the bounds of [`crate::limits`]; the error names the field and its limit.
    pub fn validate(&self) -> Result<(), String> {
        check_user(self.user_id)?;
        check_points(self.points)
    }
}

/// Coupon step body (action marks the coupon used by the order, compensation restores it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemCoupon {
    /// The coupon: 1 to 64 characters of `A-Z`, `a-z`, `0-9`, `_`, `-`.
    #[schemars(
        length(min = COUPON_CODE_MIN_CHARS, max = COUPON_CODE_MAX_CHARS),
        pattern(COUPON_CODE_PATTERN)
    )]
    pub code: String,
    /// The order using it (a hyphenated UUID).
    #[serde(deserialize_with = "limits::wire::uuid")]
    pub order_id: Uuid,
}

impl RedeemCoupon {
    /// Checks the bounds of [`crate::limits`]; the error names the field and its limit.
    pub fn validate(&self) -> Result<(), String> {
        limits::check_coupon_code("code", &self.code)
    }
}

fn check_user(user_id: i64) -> Result<(), String> {
    limits::check_range("user_id", user_id, USER_ID_MIN, USER_ID_MAX)
}

fn check_amount(amount_cents: i64) -> Result<(), String> {
    limits::check_range(
        "amount_cents",
        amount_cents,
        AMOUNT_CENTS_MIN,
        AMOUNT_CENTS_MAX,
    )
}

fn check_points(points: i64) -> Result<(), String> {
    limits::check_range("points", points, POINTS_MIN, POINTS_MAX)
}
