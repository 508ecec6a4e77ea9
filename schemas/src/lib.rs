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
//! - [`limits`]: the bounds of every field, shared by the Rust checks and the schemas;
//! - [`checkout`]: the example — the checkout saga's trigger and step bodies, kept apart
//!   from the generic contract.
//!
//! The JSON Schema files in `schemas/json/` are generated from these types by
//! [`generated_schemas`]; a test fails when the checked-in files drift from the types.
//! Besides one file per payload type there is one per topic (`topic.<topic>.json`): the
//! envelope with the `kind` that topic takes and its payload type.

pub mod checkout;
mod envelope;
pub mod headers;
mod lifecycle;
pub mod limits;
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
    let mut files = schemas![
        "envelope.json" => Envelope,
        "reply_outcome.json" => ReplyOutcome,
        "lifecycle_event.json" => LifecycleEvent,
        "checkout_requested.json" => checkout::CheckoutRequested,
        "freeze_funds.json" => checkout::FreezeFunds,
        "deduct_points.json" => checkout::DeductPoints,
        "redeem_coupon.json" => checkout::RedeemCoupon,
    ];
    files.extend(
        topic_schemas()
            .into_iter()
            .map(|(topic, schema)| (topic, render(schema))),
    );
    files
}

/// The schema of each topic's messages as `(file name, schema)`: the envelope with the one
/// `kind` the topic takes and the topic's payload type (see [`topic_schema`]).
pub fn topic_schemas() -> Vec<(&'static str, schemars::Schema)> {
    use checkout::{CheckoutRequested, DeductPoints, FreezeFunds, RedeemCoupon};
    use MessageKind::{Command, Lifecycle, Reply, Trigger};
    vec![
        (
            "topic.checkout.requested.json",
            topic_schema::<CheckoutRequested>("checkout.requested", Trigger),
        ),
        (
            "topic.balance.commands.json",
            topic_schema::<FreezeFunds>("balance.commands", Command),
        ),
        (
            "topic.points.commands.json",
            topic_schema::<DeductPoints>("points.commands", Command),
        ),
        (
            "topic.coupons.commands.json",
            topic_schema::<RedeemCoupon>("coupons.commands", Command),
        ),
        (
            "topic.saga.replies.json",
            topic_schema::<ReplyOutcome>("saga.replies", Reply),
        ),
        (
            "topic.saga.lifecycle.json",
            topic_schema::<LifecycleEvent>("saga.lifecycle", Lifecycle),
        ),
    ]
}

/// The schema of a message on `topic` (unprefixed): an [`Envelope`] whose `kind` is `kind`
/// and whose payload is a `P`. Commands and replies also require `saga_id`, `step`,
/// `phase` and an `attempt` of at least 1 (what [`Envelope::into_step_message`] requires).
pub fn topic_schema<P: schemars::JsonSchema>(topic: &str, kind: MessageKind) -> schemars::Schema {
    use serde_json::{json, Value};
    let mut schema = schemars::schema_for!(Envelope<P>);
    let object = schema
        .as_object_mut()
        .expect("an envelope schema is an object");
    object.insert("title".into(), json!(format!("topic {topic}")));
    object.insert(
        "description".into(),
        json!(format!(
            "A message on `{topic}`: an envelope of kind `{kind}` whose payload is a `{}`.",
            P::schema_name()
        )),
    );
    let properties = object
        .get_mut("properties")
        .and_then(Value::as_object_mut)
        .expect("an envelope schema has properties");
    properties.insert(
        "kind".into(),
        json!({"description": format!("Always `{kind}` on this topic."), "const": kind.as_str()}),
    );
    if matches!(kind, MessageKind::Command | MessageKind::Reply) {
        for (field, drop_null) in [("saga_id", true), ("step", true), ("phase", false)] {
            let property = properties
                .get_mut(field)
                .and_then(Value::as_object_mut)
                .expect("the envelope has saga_id, step and phase");
            if drop_null {
                property.insert("type".into(), json!("string"));
            } else {
                let reference = json!({"$ref": "#/$defs/Phase"});
                property.remove("anyOf");
                property.extend(reference.as_object().cloned().unwrap_or_default());
            }
        }
        let attempt = properties
            .get_mut("attempt")
            .and_then(Value::as_object_mut)
            .expect("the envelope has attempt");
        attempt.remove("default");
        attempt.insert("minimum".into(), json!(1));
        attempt.insert(
            "description".into(),
            json!(if kind == MessageKind::Reply {
                "The attempt of the command this reply answers, copied from it (required): \
                 1 to 1,000,000."
            } else {
                "Delivery attempt of this command (required): 1 for the first, one more for \
                 each resend, up to 1,000,000."
            }),
        );
        let required = object
            .get_mut("required")
            .and_then(Value::as_array_mut)
            .expect("an envelope schema lists required fields");
        required.extend(["saga_id", "step", "phase", "attempt"].map(|field| json!(field)));
    }
    if let Some(defs) = object.get_mut("$defs").and_then(Value::as_object_mut) {
        defs.remove("MessageKind");
    }
    schema
}
