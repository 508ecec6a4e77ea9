//! The demo's workload (pure): users, coupons and checkout requests covering every outcome.

use std::collections::BTreeMap;

use saga_core::SagaStatus;
use schemas::checkout::CheckoutRequested;
use uuid::Uuid;

/// What a request is meant to exercise, and so how its saga must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Everything succeeds: `completed`.
    Happy,
    /// The amount exceeds the balance: `compensated`.
    InsufficientFunds,
    /// More points than the user has: `compensated`.
    NotEnoughPoints,
    /// The coupon does not exist: `compensated`.
    UnknownCoupon,
    /// The coupon was used by another order: `compensated`.
    UsedCoupon,
    /// The coupon expired: `compensated`.
    ExpiredCoupon,
}

impl Kind {
    /// Every kind, in report order.
    pub const ALL: [Kind; 6] = [
        Kind::Happy,
        Kind::InsufficientFunds,
        Kind::NotEnoughPoints,
        Kind::UnknownCoupon,
        Kind::UsedCoupon,
        Kind::ExpiredCoupon,
    ];

    /// Label in the report.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Happy => "happy path",
            Kind::InsufficientFunds => "insufficient funds",
            Kind::NotEnoughPoints => "not enough points",
            Kind::UnknownCoupon => "unknown coupon",
            Kind::UsedCoupon => "coupon already used",
            Kind::ExpiredCoupon => "coupon expired",
        }
    }

    /// The status a saga of this kind must end in.
    pub fn expected_status(self) -> SagaStatus {
        match self {
            Kind::Happy => SagaStatus::Completed,
            _ => SagaStatus::Compensated,
        }
    }

    /// Out of every 100 requests, which kind request `i` is.
    fn of(i: usize) -> Kind {
        match i % 100 {
            0..=69 => Kind::Happy,
            70..=77 => Kind::InsufficientFunds,
            78..=84 => Kind::NotEnoughPoints,
            85..=89 => Kind::UnknownCoupon,
            90..=94 => Kind::UsedCoupon,
            _ => Kind::ExpiredCoupon,
        }
    }
}

/// One checkout request of the workload.
#[derive(Debug, Clone)]
pub struct Request {
    /// The trigger payload.
    pub body: CheckoutRequested,
    /// What it exercises.
    pub kind: Kind,
    /// Whether the trigger is published twice (a duplicate delivery).
    pub duplicated: bool,
}

/// Everything the demo seeds and publishes.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The requests, in publish order.
    pub requests: Vec<Request>,
    /// user → starting balance in cents.
    pub balances: BTreeMap<i64, i64>,
    /// user → starting points.
    pub points: BTreeMap<i64, i64>,
    /// Valid coupon codes.
    pub valid_coupons: Vec<String>,
    /// Expired coupon codes.
    pub expired_coupons: Vec<String>,
    /// Coupon codes already used by an earlier order.
    pub used_coupons: Vec<String>,
}

/// A deterministic workload of `count` requests over `users` users.
pub fn generate(count: usize, users: usize) -> Workload {
    let users = users.max(1) as i64;
    let mut next = 0x2545_f491_4f6c_dd1d_u64;
    let mut random = move |below: i64| {
        next ^= next << 13;
        next ^= next >> 7;
        next ^= next << 17;
        (next % below as u64) as i64
    };
    let mut workload = Workload {
        requests: Vec::with_capacity(count),
        balances: (1..=users).map(|u| (u, 0)).collect(),
        points: (1..=users).map(|u| (u, 0)).collect(),
        valid_coupons: Vec::new(),
        expired_coupons: Vec::new(),
        used_coupons: Vec::new(),
    };
    for i in 0..count {
        let kind = Kind::of(i);
        let user_id = 1 + (i as i64 % users);
        let mut body = CheckoutRequested {
            order_id: Uuid::from_u128(0x5a6a_0000_0000_0000_0000_0000_0000_0000 + i as u128),
            user_id,
            amount_cents: 100 + random(900),
            points: random(50),
            coupon_code: format!("SAVE-{i:06}"),
        };
        match kind {
            Kind::Happy => {}
            Kind::InsufficientFunds => body.amount_cents = 1_000_000_000,
            Kind::NotEnoughPoints => body.points = 1_000_000_000,
            Kind::UnknownCoupon => body.coupon_code = format!("NOPE-{i:06}"),
            Kind::UsedCoupon => body.coupon_code = format!("USED-{i:06}"),
            Kind::ExpiredCoupon => body.coupon_code = format!("OLD-{i:06}"),
        }
        match kind {
            Kind::UnknownCoupon => {}
            Kind::UsedCoupon => workload.used_coupons.push(body.coupon_code.clone()),
            Kind::ExpiredCoupon => workload.expired_coupons.push(body.coupon_code.clone()),
            _ => workload.valid_coupons.push(body.coupon_code.clone()),
        }
        // Fund every request that is meant to pass the balance and points checks, plus a
        // margin, so only the intended step rejects.
        if kind != Kind::InsufficientFunds {
            *workload.balances.entry(user_id).or_default() += body.amount_cents;
        }
        if kind != Kind::NotEnoughPoints {
            *workload.points.entry(user_id).or_default() += body.points;
        }
        workload.requests.push(Request {
            body,
            kind,
            duplicated: i % 33 == 7,
        });
    }
    for balance in workload.balances.values_mut() {
        *balance += 1_000;
    }
    for points in workload.points.values_mut() {
        *points += 10;
    }
    workload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_and_some_duplicates_are_in_a_thousand_requests() {
        let workload = generate(1_000, 100);
        assert_eq!(workload.requests.len(), 1_000);
        for kind in Kind::ALL {
            assert!(
                workload.requests.iter().any(|r| r.kind == kind),
                "{kind:?} missing"
            );
        }
        let duplicated = workload.requests.iter().filter(|r| r.duplicated).count();
        assert!((20..=40).contains(&duplicated), "{duplicated} duplicates");
    }

    #[test]
    fn the_workload_is_deterministic_and_orders_are_unique() {
        let a = generate(300, 10);
        let b = generate(300, 10);
        assert_eq!(
            a.requests
                .iter()
                .map(|r| r.body.clone())
                .collect::<Vec<_>>(),
            b.requests
                .iter()
                .map(|r| r.body.clone())
                .collect::<Vec<_>>()
        );
        let mut ids: Vec<_> = a.requests.iter().map(|r| r.body.order_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 300);
    }

    #[test]
    fn users_can_afford_every_request_meant_to_pass_funds_and_points() {
        let workload = generate(1_000, 50);
        let mut needed: BTreeMap<i64, i64> = BTreeMap::new();
        for r in workload
            .requests
            .iter()
            .filter(|r| r.kind != Kind::InsufficientFunds)
        {
            *needed.entry(r.body.user_id).or_default() += r.body.amount_cents;
        }
        for (user, cents) in needed {
            assert!(workload.balances[&user] >= cents);
        }
    }
}
