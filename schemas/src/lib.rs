//! The wire contract of the saga engine.
//!
//! Every message on every topic is one JSON [`Envelope`]:
//! - triggers (`<definition>.requested`) carry the business input as payload, keyed by the
//!   business idempotency key;
//! - commands (`<participant>.commands`) carry the participant's command, keyed by saga id;
//! - replies (`saga.replies`) carry a [`ReplyOutcome`], keyed by saga id;
//! - lifecycle events (`saga.lifecycle`) carry a [`LifecycleEvent`];
//! - the checkout saga's trigger and step bodies are in [`CheckoutRequested`] and friends.
//!
//! The JSON Schema files in `schemas/json/` are generated from these types by
//! [`generated_schemas`]; a test fails when the checked-in files drift from the types.

mod checkout;
mod envelope;
mod lifecycle;
mod reply;

pub use checkout::{CheckoutRequested, DeductPoints, FreezeFunds, RedeemCoupon};
pub use envelope::{Envelope, MessageKind, Phase};
pub use lifecycle::{LifecycleEvent, SagaOutcome};
pub use reply::ReplyOutcome;

/// Header that carries W3C trace context across Kafka.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Every generated schema as `(file name, pretty JSON text)`, in a stable order.
pub fn generated_schemas() -> Vec<(&'static str, String)> {
    fn render(schema: schemars::Schema) -> String {
        let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
        text.push('\n');
        text
    }
    macro_rules! schemas {
        ($($file:literal => $ty:ty),* $(,)?) => {
            vec![$(($file, render(schemars::schema_for!($ty)))),*]
        };
    }
    schemas![
        "envelope.json" => Envelope,
        "reply_outcome.json" => ReplyOutcome,
        "lifecycle_event.json" => LifecycleEvent,
        "checkout_requested.json" => CheckoutRequested,
        "freeze_funds.json" => FreezeFunds,
        "deduct_points.json" => DeductPoints,
        "redeem_coupon.json" => RedeemCoupon,
    ]
}
