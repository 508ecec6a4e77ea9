//! Content digests: a canonical JSON text and its SHA-256, so two JSON values that differ
//! only in key order or whitespace get the same digest.
//!
//! The canonical text is compact JSON with every object's keys sorted by their UTF-8
//! bytes; strings and numbers are written as `serde_json` writes them (so `1` and `1.0`
//! are different numbers, as they are to a typed reader).

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The canonical text of `value`: compact, object keys sorted, nested values likewise.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&fields[key], out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Lower-case hex SHA-256 of `text`.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The digest stored with a saga to tell a redelivered trigger (same digest) from another
/// trigger reusing its idempotency key (different digest): SHA-256 hex of the canonical
/// JSON of the trigger's payload.
pub fn payload_hash(payload: &Value) -> String {
    sha256_hex(&canonical_json(payload))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a: Value =
            serde_json::from_str(r#"{ "b": [1, {"y": 2, "x": "é"}], "a": null }"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":null,"b":[1,{"x":"é","y":2}]}"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":null,"b":[1,{"x":"é","y":2}]}"#);
        assert_eq!(payload_hash(&a), payload_hash(&b));
    }

    #[test]
    fn content_matters() {
        let base = json!({"order_id": "o-1", "amount": 100});
        for other in [
            json!({"order_id": "o-1", "amount": 101}),
            json!({"order_id": "o-1", "amount": "100"}),
            json!({"order_id": "o-1", "amount": 100, "note": null}),
            json!({"order_id": "o-1", "amount": 100.5}),
            json!([{"order_id": "o-1", "amount": 100}]),
        ] {
            assert_ne!(payload_hash(&base), payload_hash(&other), "{other}");
        }
        // Array order is content.
        assert_ne!(payload_hash(&json!([1, 2])), payload_hash(&json!([2, 1])));
    }

    #[test]
    fn keys_and_strings_are_escaped() {
        let value = json!({"a\"b": "line\nbreak", "": 1});
        assert_eq!(canonical_json(&value), r#"{"":1,"a\"b":"line\nbreak"}"#);
    }

    #[test]
    fn digest_is_sha256_hex() {
        // SHA-256 of the empty string and of "abc" (FIPS 180-2 test vectors).
        assert_eq!(
            sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            payload_hash(&json!({"b": 1, "a": 2})),
            sha256_hex(r#"{"a":2,"b":1}"#)
        );
    }
}
