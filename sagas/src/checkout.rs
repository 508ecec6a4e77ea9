//! The checkout saga: balance by TCC, points and coupon by compensable steps.

use saga_core::{Definition, DefinitionError, RetryPolicy, SagaDefinition};
use schemas::checkout::{CheckoutRequested, DeductPoints, FreezeFunds, RedeemCoupon};

use crate::settings::CheckoutSettings;

/// Definition name.
pub const NAME: &str = "checkout";
/// Unprefixed trigger topic.
pub const TRIGGER_TOPIC: &str = "checkout.requested";

/// The checkout definition, with its mode, timeout, retries and deadline from `settings`.
pub fn checkout(settings: &CheckoutSettings) -> Result<SagaDefinition, DefinitionError> {
    let retry = |attempts| {
        RetryPolicy::exponential(settings.retry_initial_backoff, settings.retry_max_backoff)
            .with_max_attempts(attempts)
    };
    let definition = Definition::<CheckoutRequested>::new(NAME, 1)
        .trigger(TRIGGER_TOPIC, |req| req.order_id.to_string())
        .validate(CheckoutRequested::validate)
        .tcc("reserve_funds", "balance", |req| FreezeFunds {
            user_id: req.user_id,
            amount_cents: req.amount_cents,
        })
        .step("deduct_points", "points", deduct_points, deduct_points)
        .step("redeem_coupon", "coupons", redeem_coupon, redeem_coupon)
        .timeout(settings.step_timeout)
        .retry(retry(settings.forward_attempts))
        .settle_retry(retry(settings.settle_attempts));
    let definition = match settings.deadline {
        Some(deadline) => definition.deadline(deadline),
        None => definition,
    };
    if settings.parallel {
        definition.parallel().build()
    } else {
        definition.sequential().build()
    }
}

/// The points body; the action deducts it, the compensation refunds it.
fn deduct_points(req: &CheckoutRequested) -> DeductPoints {
    DeductPoints {
        user_id: req.user_id,
        points: req.points,
    }
}

/// The coupon body; the action redeems it for the order, the compensation restores it.
fn redeem_coupon(req: &CheckoutRequested) -> RedeemCoupon {
    RedeemCoupon {
        code: req.coupon_code.clone(),
        order_id: req.order_id,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use saga_core::{Mode, StepKind};
    use schemas::Phase;

    use super::*;

    #[test]
    fn triggers_out_of_bounds_are_refused_naming_field_and_limit() {
        let definition = checkout(&CheckoutSettings::default()).unwrap();
        let trigger = |amount_cents: i64, points: i64, coupon_code: &str| {
            serde_json::json!({
                "order_id": "6f1c3e0a-8a4b-4c7d-9e2f-0123456789ab", "user_id": 1,
                "amount_cents": amount_cents, "points": points, "coupon_code": coupon_code,
            })
        };
        let max = schemas::limits::AMOUNT_CENTS_MAX;
        assert!(definition.accept_trigger(&trigger(max, 0, "A")).is_ok());
        assert_eq!(
            definition
                .accept_trigger(&trigger(max + 1, 0, "A"))
                .unwrap_err(),
            format!("`amount_cents` must be within 1..={max}, got {}", max + 1)
        );
        let points = schemas::limits::POINTS_MAX;
        assert!(definition
            .accept_trigger(&trigger(1, points + 1, "A"))
            .unwrap_err()
            .contains("`points` must be within 0..="));
        assert!(definition
            .accept_trigger(&trigger(1, 0, &"A".repeat(65)))
            .unwrap_err()
            .contains("`coupon_code` must be 1..=64 characters long"));
    }

    #[test]
    fn the_definition_follows_its_settings() {
        let settings = CheckoutSettings {
            parallel: false,
            step_timeout: Duration::from_millis(300),
            forward_attempts: 9,
            ..CheckoutSettings::default()
        };
        let definition = checkout(&settings).unwrap();
        assert_eq!(definition.mode(), Mode::Sequential);
        assert_eq!(
            definition.timeout_for("redeem_coupon"),
            Duration::from_millis(300)
        );
        assert_eq!(
            definition
                .retry_for("deduct_points", Phase::Action)
                .max_attempts(),
            9
        );
        assert_eq!(
            definition
                .retry_for("reserve_funds", Phase::Cancel)
                .max_attempts(),
            20
        );
        let kinds: Vec<_> = definition.steps().iter().map(|s| s.kind()).collect();
        assert_eq!(
            kinds,
            [StepKind::Tcc, StepKind::Compensable, StepKind::Compensable]
        );
        let parallel = checkout(&CheckoutSettings::default()).unwrap();
        assert_eq!(parallel.mode(), Mode::Parallel);
    }
}
