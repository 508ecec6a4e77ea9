//! The checkout saga: balance by TCC, points and coupon by compensable steps.

use std::time::Duration;

use saga_engine::saga::{Definition, RetryPolicy, SagaDefinition};
use saga_schemas::{CheckoutRequested, DeductPoints, FreezeFunds, RedeemCoupon};

/// Definition name.
pub const NAME: &str = "checkout";
/// Unprefixed trigger topic.
pub const TRIGGER_TOPIC: &str = "checkout.requested";

/// The checkout definition; `parallel` runs the three forward steps at once.
pub fn checkout(parallel: bool) -> SagaDefinition {
    let definition = Definition::<CheckoutRequested>::new(NAME, 1)
        .trigger(TRIGGER_TOPIC, |req| req.order_id.to_string())
        .validate(CheckoutRequested::validate)
        .tcc("reserve_funds", "balance", |req| FreezeFunds {
            user_id: req.user_id,
            amount_cents: req.amount_cents,
        })
        .step(
            "deduct_points",
            "points",
            |req| DeductPoints {
                user_id: req.user_id,
                points: req.points,
            },
            |req| DeductPoints {
                user_id: req.user_id,
                points: req.points,
            },
        )
        .step(
            "redeem_coupon",
            "coupons",
            |req| RedeemCoupon {
                code: req.coupon_code.clone(),
                order_id: req.order_id,
            },
            |req| RedeemCoupon {
                code: req.coupon_code.clone(),
                order_id: req.order_id,
            },
        )
        .timeout(Duration::from_secs(15))
        .retry(RetryPolicy::exponential(
            Duration::from_millis(50),
            Duration::from_secs(10),
        ));
    if parallel {
        definition.parallel().build()
    } else {
        definition.build()
    }
}
