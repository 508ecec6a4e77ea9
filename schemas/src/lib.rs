//! The wire contract of the saga engine.
//!
//! Every message on every topic is one JSON [`Envelope`]:
//! - triggers (`<definition>.requested`) carry the business input as payload, keyed by the
//!   business idempotency key;
//! - commands (`<participant>.commands`) carry the participant's command, keyed by saga id;
//! - replies (`saga.replies`) carry a [`ReplyOutcome`], keyed by saga id;
//! - lifecycle events (`saga.lifecycle`) carry a [`LifecycleEvent`];
//! - dead letters (`saga.dlq`) keep the original body and say why in [`headers`].
//!
//! Map of the crate:
//! - [`envelope`](Envelope): the envelope, [`MessageKind`] and [`Phase`];
//! - [`parse`](Envelope::parse): the one place bytes become a checked envelope, and a command
//!   or reply its [`StepAddress`];
//! - [`ReplyOutcome`], [`LifecycleEvent`]: the generic payloads;
//! - [`headers`]: Kafka header names (trace context, definition, dead-letter details);
//! - [`checkout`]: the example — the checkout saga's trigger and step bodies, kept apart
//!   from the generic contract.
//!
//! The JSON Schema files in `schemas/json/` are generated from these types by
//! [`generated_schemas`]; a test fails when the checked-in files drift from the types.

pub mod checkout;
mod envelope;
pub mod headers;
mod lifecycle;
mod parse;
mod reply;

pub use envelope::{Envelope, MessageKind, Phase};
pub use lifecycle::{LifecycleEvent, SagaOutcome};
pub use parse::{EnvelopeError, StepAddress};
pub use reply::ReplyOutcome;

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
        "checkout_requested.json" => checkout::CheckoutRequested,
        "freeze_funds.json" => checkout::FreezeFunds,
        "deduct_points.json" => checkout::DeductPoints,
        "redeem_coupon.json" => checkout::RedeemCoupon,
    ]
}
