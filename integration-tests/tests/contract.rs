//! The published JSON Schema files and the engine's Rust validation agree on one corpus.
//!
//! Every message of the corpus goes through both:
//! - the per-topic schema file in `schemas/json/` (`topic.<topic>.json`), validated with the
//!   `jsonschema` crate, formats (`uuid`, `date-time`) included;
//! - what the engine or participant applies to the same bytes at the edge:
//!   `Envelope::parse`, then the checkout definition's `accept_trigger` (triggers), the
//!   participant's `validate` as the worker calls it (commands), the reply decoding of the
//!   engine (replies), or `Envelope::parse` alone (lifecycle events).
//!
//! Each case says whether the message is valid; the test fails when either side disagrees
//! with that, so it fails if a bound is dropped from the Rust checks or from the schemas.
//! Needs no services.

use std::path::PathBuf;

use saga_participant::{Command, CommandHandler};
use sagas::settings::CheckoutSettings;
use schemas::limits::*;
use schemas::{Envelope, MessageKind, ReplyOutcome};
use serde_json::{json, Value};

/// The consumers' default body limit is larger than any message here.
const BODY_LIMIT: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topic {
    Trigger,
    Balance,
    Points,
    Coupons,
    Replies,
    Lifecycle,
}

impl Topic {
    fn schema_file(self) -> &'static str {
        match self {
            Topic::Trigger => "topic.checkout.requested.json",
            Topic::Balance => "topic.balance.commands.json",
            Topic::Points => "topic.points.commands.json",
            Topic::Coupons => "topic.coupons.commands.json",
            Topic::Replies => "topic.saga.replies.json",
            Topic::Lifecycle => "topic.saga.lifecycle.json",
        }
    }

    fn kind(self) -> MessageKind {
        match self {
            Topic::Trigger => MessageKind::Trigger,
            Topic::Balance | Topic::Points | Topic::Coupons => MessageKind::Command,
            Topic::Replies => MessageKind::Reply,
            Topic::Lifecycle => MessageKind::Lifecycle,
        }
    }

    /// A valid message of this topic, the base every case changes.
    fn good(self) -> Value {
        let order = "6f1c3e0a-8a4b-4c7d-9e2f-0123456789ab";
        let saga = "0b5a7c2d-1e3f-4a5b-8c7d-9e0f1a2b3c4d";
        let address = |step: &str, phase: &str| json!({"saga_id": saga, "step": step, "phase": phase, "attempt": 1});
        let (mut envelope, payload) = match self {
            Topic::Trigger => (
                json!({}),
                json!({"order_id": order, "user_id": 1, "amount_cents": 100, "points": 0,
                       "coupon_code": "WELCOME"}),
            ),
            Topic::Balance => (
                address("reserve_funds", "try"),
                json!({"user_id": 1, "amount_cents": 100}),
            ),
            Topic::Points => (
                address("deduct_points", "action"),
                json!({"user_id": 1, "points": 5}),
            ),
            Topic::Coupons => (
                address("redeem_coupon", "compensate"),
                json!({"code": "WELCOME", "order_id": order}),
            ),
            Topic::Replies => (
                address("reserve_funds", "try"),
                json!({"outcome": "rejected", "reason": "insufficient funds"}),
            ),
            Topic::Lifecycle => (
                json!({"saga_id": saga}),
                json!({"event": "started", "definition": "checkout", "version": 1}),
            ),
        };
        let fields = envelope.as_object_mut().unwrap();
        fields.insert(
            "message_id".into(),
            json!("c2d7e1f0-3a4b-4c5d-8e6f-7a8b9c0d1e2f"),
        );
        fields.insert("kind".into(), json!(self.kind().as_str()));
        fields.insert("occurred_at".into(), json!("2026-11-24T10:00:00Z"));
        fields.insert("payload".into(), payload);
        envelope
    }
}

/// One corpus entry: the base message of `topic` with `changes` applied (a JSON pointer
/// and the new value, `None` to remove the field).
struct Case {
    name: String,
    topic: Topic,
    changes: Vec<(&'static str, Option<Value>)>,
    valid: bool,
    /// For an invalid case: a text the Rust error must contain (field name and limit).
    error_names: Option<String>,
}

fn case(name: impl Into<String>, topic: Topic, valid: bool) -> Case {
    Case {
        name: name.into(),
        topic,
        changes: Vec::new(),
        valid,
        error_names: None,
    }
}

impl Case {
    fn set(mut self, pointer: &'static str, value: Value) -> Self {
        self.changes.push((pointer, Some(value)));
        self
    }

    fn remove(mut self, pointer: &'static str) -> Self {
        self.changes.push((pointer, None));
        self
    }

    fn naming(mut self, text: impl Into<String>) -> Self {
        self.error_names = Some(text.into());
        self
    }

    fn message(&self) -> Value {
        let mut message = self.topic.good();
        for (pointer, value) in &self.changes {
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            let parent = message
                .pointer_mut(parent)
                .and_then(Value::as_object_mut)
                .unwrap_or_else(|| panic!("{}: no object at {parent}", self.name));
            match value {
                Some(value) => parent.insert(key.to_string(), value.clone()),
                None => parent.remove(key),
            };
        }
        message
    }
}

/// Within `min..=max` at both edges, and refused one past each.
fn range_cases(topic: Topic, pointer: &'static str, field: &str, min: i64, max: i64) -> Vec<Case> {
    let limit = format!("`{field}` must be within {min}..={max}");
    vec![
        case(format!("{field} = min"), topic, true).set(pointer, json!(min)),
        case(format!("{field} = max"), topic, true).set(pointer, json!(max)),
        case(format!("{field} = min - 1"), topic, false)
            .set(pointer, json!(min - 1))
            .naming(&limit),
        case(format!("{field} = max + 1"), topic, false)
            .set(pointer, json!(max + 1))
            .naming(&limit),
    ]
}

/// `len` characters of `c`.
fn text(c: char, len: usize) -> Value {
    json!(std::iter::repeat_n(c, len).collect::<String>())
}

fn corpus() -> Vec<Case> {
    use Topic::*;
    let mut cases = vec![
        case("good trigger", Trigger, true),
        case("good balance command", Balance, true),
        case("good points command", Points, true),
        case("good coupons command", Coupons, true),
        case("good reply", Replies, true),
        case("good lifecycle event", Lifecycle, true),
    ];
    // Trigger payload bounds.
    cases.extend(range_cases(
        Trigger,
        "/payload/amount_cents",
        "amount_cents",
        AMOUNT_CENTS_MIN,
        AMOUNT_CENTS_MAX,
    ));
    cases.extend(range_cases(
        Trigger,
        "/payload/points",
        "points",
        POINTS_MIN,
        POINTS_MAX,
    ));
    cases.extend(range_cases(
        Trigger,
        "/payload/user_id",
        "user_id",
        USER_ID_MIN,
        USER_ID_MAX,
    ));
    let coupon = "`coupon_code` must be 1..=64 characters long";
    cases.extend([
        case("amount_cents = i64::MAX", Trigger, false)
            .set("/payload/amount_cents", json!(i64::MAX))
            .naming("amount_cents"),
        case("amount_cents beyond i64", Trigger, false)
            .set("/payload/amount_cents", json!(u64::MAX)),
        case("amount_cents as a string", Trigger, false).set("/payload/amount_cents", json!("100")),
        case("amount_cents with a fraction", Trigger, false)
            .set("/payload/amount_cents", json!(100.5)),
        case("coupon of max length", Trigger, true)
            .set("/payload/coupon_code", text('A', COUPON_CODE_MAX_CHARS)),
        case("coupon one past max length", Trigger, false)
            .set("/payload/coupon_code", text('A', COUPON_CODE_MAX_CHARS + 1))
            .naming(coupon),
        case("coupon of 1 MB", Trigger, false)
            .set("/payload/coupon_code", text('A', 1_000_000))
            .naming(coupon),
        case("empty coupon", Trigger, false)
            .set("/payload/coupon_code", json!(""))
            .naming(coupon),
        case("coupon with a space", Trigger, false)
            .set("/payload/coupon_code", json!("WEL COME"))
            .naming("`coupon_code` may hold only"),
        case("coupon with a non-ASCII letter", Trigger, false)
            .set("/payload/coupon_code", json!("CAFÉ"))
            .naming("`coupon_code` may hold only"),
        case("coupon with a NUL", Trigger, false).set("/payload/coupon_code", json!("A\u{0}B")),
        case("coupon of every allowed character", Trigger, true)
            .set("/payload/coupon_code", json!("Az09_-")),
        case("order_id without hyphens", Trigger, false).set(
            "/payload/order_id",
            json!("6f1c3e0a8a4b4c7d9e2f0123456789ab"),
        ),
        case("order_id braced", Trigger, false).set(
            "/payload/order_id",
            json!("{6f1c3e0a-8a4b-4c7d-9e2f-0123456789ab}"),
        ),
        case("order_id upper case", Trigger, true).set(
            "/payload/order_id",
            json!("6F1C3E0A-8A4B-4C7D-9E2F-0123456789AB"),
        ),
        case("order_id not a uuid", Trigger, false).set("/payload/order_id", json!("order-1")),
        case("missing order_id", Trigger, false).remove("/payload/order_id"),
        case("missing coupon_code", Trigger, false).remove("/payload/coupon_code"),
        case("unknown payload field", Trigger, false).set("/payload/note", json!("hi")),
    ]);
    // Envelope bounds and shape.
    cases.extend([
        case("trigger of kind command", Trigger, false).set("/kind", json!("command")),
        case("unknown kind", Trigger, false).set("/kind", json!("event")),
        case("missing message_id", Trigger, false).remove("/message_id"),
        case("message_id without hyphens", Trigger, false)
            .set("/message_id", json!("c2d7e1f03a4b4c5d8e6f7a8b9c0d1e2f")),
        case("missing payload", Trigger, false).remove("/payload"),
        case("missing occurred_at", Trigger, false).remove("/occurred_at"),
        case("occurred_at not a time", Trigger, false).set("/occurred_at", json!("yesterday")),
        case("occurred_at with an offset", Trigger, true)
            .set("/occurred_at", json!("2026-11-24T10:00:00.250+02:00")),
        case("unknown envelope field", Trigger, false).set("/priority", json!(1)),
        case("attempt = max", Balance, true).set("/attempt", json!(ATTEMPT_MAX)),
        case("attempt = max + 1", Balance, false)
            .set("/attempt", json!(ATTEMPT_MAX + 1))
            .naming(format!("`attempt` must be within 0..={ATTEMPT_MAX}")),
        case("attempt negative", Balance, false).set("/attempt", json!(-1)),
        case("attempt absent on a trigger", Trigger, true).remove("/attempt"),
        case("command without attempt", Balance, false)
            .remove("/attempt")
            .naming("command envelope without `attempt`"),
        case("command of attempt 0", Points, false)
            .set("/attempt", json!(0))
            .naming("command envelope without `attempt`"),
        case("reply without attempt", Replies, false)
            .remove("/attempt")
            .naming("reply envelope without `attempt`"),
        case("reply of attempt 0", Replies, false).set("/attempt", json!(0)),
        case("reply of attempt 2", Replies, true).set("/attempt", json!(2)),
        case("step of max length", Balance, true).set("/step", text('s', STEP_NAME_MAX_CHARS)),
        case("step one past max length", Balance, false)
            .set("/step", text('s', STEP_NAME_MAX_CHARS + 1))
            .naming("`step` must be 1..=64 characters long"),
        case("empty step", Balance, false)
            .set("/step", json!(""))
            .naming("`step` must be 1..=64 characters long"),
        case("step with a NUL", Balance, false).set("/step", json!("reserve\u{0}funds")),
        case("step on a trigger is ignored", Trigger, true).set("/step", json!("anything")),
        case("step too long on a trigger", Trigger, false)
            .set("/step", text('s', STEP_NAME_MAX_CHARS + 1)),
    ]);
    // Commands: the envelope address and each participant's body.
    cases.extend([
        case("command without saga_id", Balance, false).remove("/saga_id"),
        case("command with a null saga_id", Balance, false).set("/saga_id", Value::Null),
        case("command without step", Balance, false).remove("/step"),
        case("command with a null phase", Balance, false).set("/phase", Value::Null),
        case("command with an unknown phase", Balance, false).set("/phase", json!("undo")),
        case("command of kind reply", Balance, false).set("/kind", json!("reply")),
        case("command of kind trigger", Points, false).set("/kind", json!("trigger")),
        case("balance body with an extra field", Balance, false).set("/payload/points", json!(1)),
        case("balance body without amount", Balance, false).remove("/payload/amount_cents"),
        case("coupon body with a long code", Coupons, false)
            .set("/payload/code", text('C', COUPON_CODE_MAX_CHARS + 1))
            .naming("`code` must be 1..=64 characters long"),
        case("coupon body with a bad character", Coupons, false)
            .set("/payload/code", json!("WEL/COME"))
            .naming("`code` may hold only"),
        case("coupon body with a braced order_id", Coupons, false).set(
            "/payload/order_id",
            json!("{6f1c3e0a-8a4b-4c7d-9e2f-0123456789ab}"),
        ),
    ]);
    cases.extend(range_cases(
        Balance,
        "/payload/amount_cents",
        "amount_cents",
        AMOUNT_CENTS_MIN,
        AMOUNT_CENTS_MAX,
    ));
    cases.extend(range_cases(
        Balance,
        "/payload/user_id",
        "user_id",
        USER_ID_MIN,
        USER_ID_MAX,
    ));
    cases.extend(range_cases(
        Points,
        "/payload/points",
        "points",
        POINTS_MIN,
        POINTS_MAX,
    ));
    // Replies.
    let reason = format!("`reason` must be 0..={REASON_MAX_CHARS} characters long");
    cases.extend([
        case("reason of max length", Replies, true)
            .set("/payload/reason", text('r', REASON_MAX_CHARS)),
        case("reason one past max length", Replies, false)
            .set("/payload/reason", text('r', REASON_MAX_CHARS + 1))
            .naming(reason),
        case("failed error one past max length", Replies, false)
            .set("/payload/outcome", json!("failed"))
            .remove("/payload/reason")
            .set("/payload/error", text('e', REASON_MAX_CHARS + 1))
            .naming("`error` must be"),
        case("ok with any output", Replies, true)
            .set("/payload/outcome", json!("ok"))
            .remove("/payload/reason")
            .set(
                "/payload/output",
                json!({"frozen_cents": 100, "list": [1, 2]}),
            ),
        case("rejected without reason", Replies, false).remove("/payload/reason"),
        case("unknown outcome", Replies, false).set("/payload/outcome", json!("maybe")),
        case("reply without saga_id", Replies, false).remove("/saga_id"),
        case("reply of kind command", Replies, false).set("/kind", json!("command")),
    ]);
    // Lifecycle events.
    let hash = "a".repeat(64);
    cases.extend([
        case("started at version 0", Lifecycle, false)
            .set("/payload/version", json!(0))
            .naming("`version` must be within 1.."),
        case("definition in upper case", Lifecycle, false)
            .set("/payload/definition", json!("Checkout"))
            .naming("`definition` may hold only"),
        case("definition of max length", Lifecycle, true)
            .set("/payload/definition", text('d', DEFINITION_NAME_MAX_CHARS)),
        case("definition one past max length", Lifecycle, false)
            .set(
                "/payload/definition",
                text('d', DEFINITION_NAME_MAX_CHARS + 1),
            )
            .naming("`definition` must be 1..=64 characters long"),
        case("parked reason of max length", Lifecycle, true)
            .set("/payload/event", json!("parked"))
            .remove("/payload/version")
            .set("/payload/reason", text('p', REASON_MAX_CHARS)),
        case("parked reason one past max length", Lifecycle, false)
            .set("/payload/event", json!("parked"))
            .remove("/payload/version")
            .set("/payload/reason", text('p', REASON_MAX_CHARS + 1))
            .naming("`reason` must be"),
        case("trigger conflict", Lifecycle, true)
            .set("/payload/event", json!("trigger_conflict"))
            .remove("/payload/version")
            .set(
                "/payload/idempotency_key",
                text('k', IDEMPOTENCY_KEY_MAX_CHARS),
            )
            .set(
                "/payload/message_id",
                json!("c2d7e1f0-3a4b-4c5d-8e6f-7a8b9c0d1e2f"),
            )
            .set("/payload/stored_payload_hash", json!(hash))
            .set("/payload/payload_hash", json!(hash)),
        case("trigger conflict with an upper-case hash", Lifecycle, false)
            .set("/payload/event", json!("trigger_conflict"))
            .remove("/payload/version")
            .set("/payload/idempotency_key", json!("k"))
            .set(
                "/payload/message_id",
                json!("c2d7e1f0-3a4b-4c5d-8e6f-7a8b9c0d1e2f"),
            )
            .set("/payload/stored_payload_hash", json!(hash.to_uppercase()))
            .set("/payload/payload_hash", json!(hash))
            .naming("`stored_payload_hash` must be 64 lowercase hex digits"),
        case("trigger conflict with a long key", Lifecycle, false)
            .set("/payload/event", json!("trigger_conflict"))
            .remove("/payload/version")
            .set(
                "/payload/idempotency_key",
                text('k', IDEMPOTENCY_KEY_MAX_CHARS + 1),
            )
            .set(
                "/payload/message_id",
                json!("c2d7e1f0-3a4b-4c5d-8e6f-7a8b9c0d1e2f"),
            )
            .set("/payload/stored_payload_hash", json!(hash))
            .set("/payload/payload_hash", json!(hash))
            .naming("`idempotency_key` must be 1..=256 characters long"),
        case("lifecycle of kind trigger", Lifecycle, false).set("/kind", json!("trigger")),
    ]);
    cases
}

/// What the engine or participant does with `bytes` arriving on `topic`: `Ok` when it
/// would process the message, `Err` with the reason it dead-letters it.
fn rust_verdict(topic: Topic, bytes: &[u8]) -> Result<(), String> {
    let envelope =
        Envelope::parse(Some(bytes), topic.kind(), BODY_LIMIT).map_err(|e| e.to_string())?;
    let handler: std::sync::Arc<dyn CommandHandler> = match topic {
        Topic::Trigger => {
            let definition = sagas::checkout::checkout(&CheckoutSettings::default()).unwrap();
            return definition.accept_trigger(&envelope.payload).map(|_| ());
        }
        Topic::Lifecycle => return Ok(()),
        Topic::Replies => {
            let (_, payload) = envelope.into_step_message().map_err(|e| e.to_string())?;
            return serde_json::from_value::<ReplyOutcome>(payload)
                .map(|_| ())
                .map_err(|e| e.to_string());
        }
        Topic::Balance => sagas::domains::balance::handler(),
        Topic::Points => sagas::domains::points::handler(),
        Topic::Coupons => sagas::domains::coupons::handler(),
    };
    let (address, payload) = envelope.into_step_message().map_err(|e| e.to_string())?;
    handler.validate(&Command {
        saga_id: address.saga_id,
        step: address.step,
        phase: address.phase,
        attempt: address.attempt,
        payload,
        traceparent: None,
    })
}

fn validator(topic: Topic) -> jsonschema::Validator {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../schemas/json")
        .join(topic.schema_file());
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_json_schemas_and_the_rust_validation_agree_on_the_corpus() {
    let cases = corpus();
    assert!(cases.len() >= 90, "corpus of {} cases", cases.len());
    let mut disagreements = Vec::new();
    for case in &cases {
        let message = case.message();
        let bytes = serde_json::to_vec(&message).unwrap();
        let schema_errors: Vec<String> = validator(case.topic)
            .iter_errors(&message)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .map(|e| schemas::limits::truncate(&e, 200).to_string())
            .collect();
        let rust = rust_verdict(case.topic, &bytes);
        let schema_ok = schema_errors.is_empty();
        let problem = if schema_ok != case.valid || rust.is_ok() != case.valid {
            Some(format!(
                "expected valid={}, schema said {:?}, Rust said {:?}",
                case.valid,
                schema_errors,
                rust.as_ref().map_err(|e| schemas::limits::truncate(e, 200))
            ))
        } else {
            match (&case.error_names, &rust) {
                (Some(needle), Err(error)) if !error.contains(needle.as_str()) => {
                    Some(format!("Rust error {error:?} does not name {needle:?}"))
                }
                _ => None,
            }
        };
        if let Some(problem) = problem {
            disagreements.push(format!("{:?} / {}: {problem}", case.topic, case.name));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} cases disagree:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.join("\n")
    );
}

#[test]
fn every_topic_schema_takes_only_its_kind() {
    for topic in [
        Topic::Trigger,
        Topic::Balance,
        Topic::Points,
        Topic::Coupons,
        Topic::Replies,
        Topic::Lifecycle,
    ] {
        let validator = validator(topic);
        for kind in ["trigger", "command", "reply", "lifecycle"] {
            let mut message = topic.good();
            message["kind"] = json!(kind);
            let bytes = serde_json::to_vec(&message).unwrap();
            let expected = kind == topic.kind().as_str();
            assert_eq!(validator.is_valid(&message), expected, "{topic:?} {kind}");
            assert_eq!(
                rust_verdict(topic, &bytes).is_ok(),
                expected,
                "{topic:?} {kind}"
            );
        }
    }
}
