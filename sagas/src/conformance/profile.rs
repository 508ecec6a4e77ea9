//! What the conformance kit sends to one participant: its step, the step's shape and
//! three command bodies (one it accepts, one it rejects, one outside its contract).
//!
//! The checkout's three participants have built-in profiles; any other participant is
//! described with `--step`, `--tcc` and the body flags. A body is JSON text in which
//! `{{saga_id}}` stands for the case's saga id (the coupons' `order_id`, say).

use schemas::Phase;
use serde_json::Value;
use uuid::Uuid;

/// The phases a step has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `try`, then `confirm` or `cancel`.
    Tcc,
    /// `action`, then perhaps `compensate`.
    Compensable,
}

impl Shape {
    /// The phase that does the work: `try` or `action`.
    pub fn forward(self) -> Phase {
        match self {
            Shape::Tcc => Phase::Try,
            Shape::Compensable => Phase::Action,
        }
    }

    /// The phase that undoes it: `cancel` or `compensate`.
    pub fn undo(self) -> Phase {
        match self {
            Shape::Tcc => Phase::Cancel,
            Shape::Compensable => Phase::Compensate,
        }
    }
}

/// One participant as the kit sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The participant's name; its commands travel on `<prefix><name>.commands`.
    pub participant: String,
    /// The step the commands name.
    pub step: String,
    /// TCC or compensable.
    pub shape: Shape,
    /// A body the participant accepts, with a visible effect (template).
    pub accepted_body: String,
    /// A valid body the participant rejects for a business reason (template).
    pub rejected_body: String,
    /// A body outside the participant's contract: poison (template).
    pub invalid_body: String,
}

/// What the user gave on the command line to describe or adjust a profile.
#[derive(Debug, Clone, Default)]
pub struct ProfileFlags {
    /// `--step`.
    pub step: Option<String>,
    /// `--tcc`: the step is TCC rather than compensable.
    pub tcc: bool,
    /// `--accepted-body`.
    pub accepted_body: Option<String>,
    /// `--rejected-body`.
    pub rejected_body: Option<String>,
    /// `--invalid-body`.
    pub invalid_body: Option<String>,
}

/// The largest user id of the contract: no seeded user has it, so it is "unknown".
const UNKNOWN_USER: i64 = schemas::limits::USER_ID_MAX;

impl Profile {
    /// The built-in profile of a checkout participant, if `participant` is one. They expect
    /// user 1 with some money and points, and an unused coupon `CONFORMANCE`.
    pub fn builtin(participant: &str) -> Option<Profile> {
        let (step, shape, accepted, rejected, invalid) = match participant {
            "balance" => (
                "reserve_funds",
                Shape::Tcc,
                r#"{"user_id": 1, "amount_cents": 1}"#.to_string(),
                format!(r#"{{"user_id": {UNKNOWN_USER}, "amount_cents": 1}}"#),
                r#"{"user_id": 1, "amount_cents": 0}"#,
            ),
            "points" => (
                "deduct_points",
                Shape::Compensable,
                r#"{"user_id": 1, "points": 1}"#.to_string(),
                format!(r#"{{"user_id": {UNKNOWN_USER}, "points": 1}}"#),
                r#"{"user_id": 1, "points": -1}"#,
            ),
            "coupons" => (
                "redeem_coupon",
                Shape::Compensable,
                r#"{"code": "CONFORMANCE", "order_id": "{{saga_id}}"}"#.to_string(),
                r#"{"code": "NO-SUCH-COUPON", "order_id": "{{saga_id}}"}"#.to_string(),
                r#"{"code": "", "order_id": "{{saga_id}}"}"#,
            ),
            _ => return None,
        };
        Some(Profile {
            participant: participant.to_string(),
            step: step.to_string(),
            shape,
            accepted_body: accepted,
            rejected_body: rejected,
            invalid_body: invalid.to_string(),
        })
    }

    /// The profile of `participant`: the built-in one adjusted by `flags`, or one made of
    /// `flags` alone (which must then name the step and the three bodies). Every body is
    /// checked to be JSON once its placeholder is filled.
    pub fn resolve(participant: &str, flags: ProfileFlags) -> Result<Profile, String> {
        let mut profile = match Profile::builtin(participant) {
            Some(profile) => profile,
            None => {
                let missing: Vec<&str> = [
                    ("--step", flags.step.is_none()),
                    ("--accepted-body", flags.accepted_body.is_none()),
                    ("--rejected-body", flags.rejected_body.is_none()),
                    ("--invalid-body", flags.invalid_body.is_none()),
                ]
                .into_iter()
                .filter_map(|(flag, absent)| absent.then_some(flag))
                .collect();
                if !missing.is_empty() {
                    return Err(format!(
                        "`{participant}` has no built-in profile (balance, points, coupons \
                         have); give {}",
                        missing.join(", ")
                    ));
                }
                Profile {
                    participant: participant.to_string(),
                    step: String::new(),
                    shape: Shape::Compensable,
                    accepted_body: String::new(),
                    rejected_body: String::new(),
                    invalid_body: String::new(),
                }
            }
        };
        if let Some(step) = flags.step {
            profile.step = step;
        }
        if flags.tcc {
            profile.shape = Shape::Tcc;
        }
        for (slot, given) in [
            (&mut profile.accepted_body, flags.accepted_body),
            (&mut profile.rejected_body, flags.rejected_body),
            (&mut profile.invalid_body, flags.invalid_body),
        ] {
            if let Some(given) = given {
                *slot = given;
            }
        }
        for (flag, template) in [
            ("--accepted-body", &profile.accepted_body),
            ("--rejected-body", &profile.rejected_body),
            ("--invalid-body", &profile.invalid_body),
        ] {
            fill(template, Uuid::nil()).map_err(|e| format!("{flag}: {e}"))?;
        }
        Ok(profile)
    }
}

/// The body `template` for the saga `saga_id`.
pub fn fill(template: &str, saga_id: Uuid) -> Result<Value, String> {
    let text = template.replace("{{saga_id}}", &saga_id.hyphenated().to_string());
    serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkout_participants_have_built_in_profiles() {
        let coupons = Profile::resolve("coupons", ProfileFlags::default()).unwrap();
        assert_eq!(coupons.step, "redeem_coupon");
        assert_eq!(coupons.shape.undo(), Phase::Compensate);
        let saga = Uuid::new_v4();
        assert_eq!(
            fill(&coupons.accepted_body, saga).unwrap()["order_id"],
            saga.to_string()
        );
        let balance = Profile::resolve("balance", ProfileFlags::default()).unwrap();
        assert_eq!(balance.shape.forward(), Phase::Try);
    }

    #[test]
    fn another_participant_needs_its_step_and_bodies() {
        let error = Profile::resolve(
            "shipping",
            ProfileFlags {
                step: Some("ship".into()),
                ..ProfileFlags::default()
            },
        )
        .unwrap_err();
        assert!(error.contains("--accepted-body, --rejected-body, --invalid-body"));
        let shipping = Profile::resolve(
            "shipping",
            ProfileFlags {
                step: Some("ship".into()),
                tcc: true,
                accepted_body: Some(r#"{"parcel": 1}"#.into()),
                rejected_body: Some(r#"{"parcel": 2}"#.into()),
                invalid_body: Some(r#"{"parcel": -1}"#.into()),
            },
        )
        .unwrap();
        assert_eq!(shipping.shape, Shape::Tcc);
    }

    #[test]
    fn a_body_that_is_not_json_is_named_by_its_flag() {
        let error = Profile::resolve(
            "points",
            ProfileFlags {
                rejected_body: Some("{points: 1".into()),
                ..ProfileFlags::default()
            },
        )
        .unwrap_err();
        assert!(error.starts_with("--rejected-body: not JSON"), "{error}");
    }
}
