//! The bounds of every field of every message, in one place.
//!
//! The Rust checks at the edges (`Envelope::parse`, the checkout definition's trigger
//! validation, the participants' command validation) and the generated JSON Schema files
//! (through `schemars` attributes) are both built from these constants, so the published
//! contract says exactly what the engine enforces. A message outside them is refused as
//! poison (dead-lettered), never retried. The README's "Message limits" table lists them.
//!
//! Lengths count Unicode scalar values (characters), as JSON Schema's `maxLength` does.

use uuid::Uuid;

/// Largest delivery attempt an envelope may carry (`attempt` is `0..=ATTEMPT_MAX`).
pub const ATTEMPT_MAX: u32 = 1_000_000;
/// Shortest step name in an envelope, in characters.
pub const STEP_NAME_MIN_CHARS: usize = 1;
/// Longest step name in an envelope (and in a definition), in characters.
pub const STEP_NAME_MAX_CHARS: usize = 64;
/// Step names hold any character but NUL (which Postgres cannot store).
pub const STEP_NAME_PATTERN: &str = "^[^\u{0}]*$";

/// Smallest checkout amount, in cents.
pub const AMOUNT_CENTS_MIN: i64 = 1;
/// Largest checkout amount, in cents (100 million currency units).
pub const AMOUNT_CENTS_MAX: i64 = 10_000_000_000;
/// Fewest loyalty points a checkout spends.
pub const POINTS_MIN: i64 = 0;
/// Most loyalty points one checkout spends.
pub const POINTS_MAX: i64 = 1_000_000_000;
/// Smallest user id.
pub const USER_ID_MIN: i64 = 1;
/// Largest user id: 2^53 - 1, the largest integer every JSON parser reads exactly.
pub const USER_ID_MAX: i64 = 9_007_199_254_740_991;
/// Shortest coupon code, in characters.
pub const COUPON_CODE_MIN_CHARS: usize = 1;
/// Longest coupon code, in characters.
pub const COUPON_CODE_MAX_CHARS: usize = 64;
/// Coupon codes use ASCII letters, digits, `_` and `-` only.
pub const COUPON_CODE_PATTERN: &str = "^[A-Za-z0-9_-]*$";

/// Longest `reason` (rejected) or `error` (failed) of a reply, and `reason` of a parked
/// lifecycle event, in characters. Longer texts are cut to this length when serialized.
pub const REASON_MAX_CHARS: usize = 1_000;
/// Shortest definition name, in characters.
pub const DEFINITION_NAME_MIN_CHARS: usize = 1;
/// Longest definition name, in characters.
pub const DEFINITION_NAME_MAX_CHARS: usize = 64;
/// Definition names use `a-z`, `0-9`, `_`, `-` and `.` only.
pub const DEFINITION_NAME_PATTERN: &str = "^[a-z0-9_.-]*$";
/// Smallest definition version.
pub const DEFINITION_VERSION_MIN: u32 = 1;
/// Shortest idempotency key of a trigger, in characters.
pub const IDEMPOTENCY_KEY_MIN_CHARS: usize = 1;
/// Longest idempotency key of a trigger, in characters.
pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 256;
/// A payload hash: SHA-256 as 64 lowercase hex digits.
pub const PAYLOAD_HASH_PATTERN: &str = "^[0-9a-f]{64}$";

/// Checks `value` of `field` is within `min..=max`.
pub fn check_range<T>(field: &str, value: T, min: T, max: T) -> Result<(), String>
where
    T: PartialOrd + std::fmt::Display,
{
    if value < min || value > max {
        return Err(format!(
            "`{field}` must be within {min}..={max}, got {value}"
        ));
    }
    Ok(())
}

/// Checks text `value` of `field` is `min..=max` characters long.
pub fn check_length(field: &str, value: &str, min: usize, max: usize) -> Result<(), String> {
    let chars = value.chars().count();
    if chars < min || chars > max {
        return Err(format!(
            "`{field}` must be {min}..={max} characters long, got {chars}"
        ));
    }
    Ok(())
}

/// Checks a coupon code: length and character set.
pub fn check_coupon_code(field: &str, code: &str) -> Result<(), String> {
    check_length(field, code, COUPON_CODE_MIN_CHARS, COUPON_CODE_MAX_CHARS)?;
    if let Some(bad) = code
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "`{field}` may hold only A-Z, a-z, 0-9, `_` and `-`, got {bad:?}"
        ));
    }
    Ok(())
}

/// Checks a definition name: length and character set.
pub fn check_definition_name(field: &str, name: &str) -> Result<(), String> {
    check_length(
        field,
        name,
        DEFINITION_NAME_MIN_CHARS,
        DEFINITION_NAME_MAX_CHARS,
    )?;
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(*c)))
    {
        return Err(format!(
            "`{field}` may hold only a-z, 0-9, `_`, `-` and `.`, got {bad:?}"
        ));
    }
    Ok(())
}

/// `text` cut to at most `max` characters.
pub fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Serde helpers that keep the wire form of fields to what the JSON Schema says.
pub(crate) mod wire {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::*;

    /// Reads a UUID only in its hyphenated form (`8-4-4-4-12` hex digits), the form JSON
    /// Schema's `uuid` format takes; the `uuid` crate alone also reads braced, URN and
    /// unhyphenated forms.
    pub fn uuid<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Uuid, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        parse_uuid(&text).map_err(serde::de::Error::custom)
    }

    /// [`uuid`] for an optional field (`null` or absent is `None`).
    pub fn option_uuid<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Uuid>, D::Error> {
        let text = <Option<std::borrow::Cow<'de, str>>>::deserialize(deserializer)?;
        text.map(|text| parse_uuid(&text))
            .transpose()
            .map_err(serde::de::Error::custom)
    }

    fn parse_uuid(text: &str) -> Result<Uuid, String> {
        let hyphenated = text.len() == 36
            && text.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_hexdigit(),
            });
        if !hyphenated {
            return Err(format!(
                "invalid UUID `{}`: expected the hyphenated form",
                truncate(text, 40)
            ));
        }
        Uuid::parse_str(text).map_err(|e| e.to_string())
    }

    /// Writes a reason cut to [`REASON_MAX_CHARS`].
    pub fn reason<S: Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(truncate(text, REASON_MAX_CHARS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_the_field_and_the_limit() {
        assert_eq!(
            check_range("points", 11, 0, 10).unwrap_err(),
            "`points` must be within 0..=10, got 11"
        );
        assert!(check_range("points", 10, 0, 10).is_ok());
        assert_eq!(
            check_length("code", "abc", 1, 2).unwrap_err(),
            "`code` must be 1..=2 characters long, got 3"
        );
        assert_eq!(
            check_coupon_code("code", "a b").unwrap_err(),
            "`code` may hold only A-Z, a-z, 0-9, `_` and `-`, got ' '"
        );
        assert!(check_definition_name("definition", "checkout.v2-x_y").is_ok());
        assert!(check_definition_name("definition", "Checkout").is_err());
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("hi", 5), "hi");
    }

    #[test]
    fn uuids_are_read_only_hyphenated() {
        let read = |text: &str| wire::uuid(serde_json::Value::String(text.into()));
        assert!(read("67e55044-10b1-426f-9247-bb680e5fe0c8").is_ok());
        assert!(read("67E55044-10B1-426F-9247-BB680E5FE0C8").is_ok());
        assert!(read("67e5504410b1426f9247bb680e5fe0c8").is_err());
        assert!(read("{67e55044-10b1-426f-9247-bb680e5fe0c8}").is_err());
        assert!(read("urn:uuid:67e55044-10b1-426f-9247-bb680e5fe0c8").is_err());
    }
}
