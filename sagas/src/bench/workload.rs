//! The bench's requests (pure): the demo's workload generator, one batch per phase of the
//! run, each with its own orders, users and coupons so that a batch can be seeded while
//! earlier ones are still in flight; and the union of what was published, for the
//! invariant checks at the end.

use uuid::Uuid;

use crate::demo::{generate, Kind, Workload};

/// Which requests the bench publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mix {
    /// The demo's mix: 70% that complete, the rest compensated by one of the steps.
    Demo,
    /// Only requests that complete.
    Happy,
}

/// The share of happy requests in the demo's mix (see [`crate::demo::Kind`]).
const HAPPY_SHARE: f64 = 0.7;

/// The requests of phase `phase` (from 0): `count` requests of `mix` over `users` users of
/// its own. Orders carry the phase in bits 64..96, users are numbered from
/// `phase × users + 1`, coupon codes start with `P<phase>-`. Duplicate deliveries are not
/// part of the bench: every request is published once.
pub fn phase(phase: u32, count: usize, users: usize, mix: Mix) -> Workload {
    let users = users.max(1);
    let generated = match mix {
        Mix::Demo => count,
        Mix::Happy => (count as f64 / HAPPY_SHARE).ceil() as usize + 100,
    };
    let mut workload = generate(generated, users);
    if mix == Mix::Happy {
        workload.requests.retain(|r| r.kind == Kind::Happy);
    }
    workload.requests.truncate(count);
    let user_offset = i64::from(phase) * users as i64;
    let order_offset = u128::from(phase) << 64;
    let code = |code: &str| format!("P{phase}-{code}");
    for request in &mut workload.requests {
        request.duplicated = false;
        let body = &mut request.body;
        body.order_id = Uuid::from_u128(body.order_id.as_u128() + order_offset);
        body.user_id += user_offset;
        body.coupon_code = code(&body.coupon_code);
    }
    for map in [&mut workload.balances, &mut workload.points] {
        *map = std::mem::take(map)
            .into_iter()
            .map(|(user, amount)| (user + user_offset, amount))
            .collect();
    }
    for codes in [
        &mut workload.valid_coupons,
        &mut workload.expired_coupons,
        &mut workload.used_coupons,
    ] {
        for c in codes.iter_mut() {
            *c = code(c);
        }
    }
    workload
}

/// Adds the first `published` requests of `batch` and everything it seeded to `all`.
pub fn merge(all: &mut Workload, batch: &Workload, published: usize) {
    all.requests
        .extend(batch.requests.iter().take(published).cloned());
    all.balances.extend(batch.balances.clone());
    all.points.extend(batch.points.clone());
    all.valid_coupons
        .extend(batch.valid_coupons.iter().cloned());
    all.expired_coupons
        .extend(batch.expired_coupons.iter().cloned());
    all.used_coupons.extend(batch.used_coupons.iter().cloned());
}

/// A workload with nothing in it, to [`merge`] batches into.
pub fn empty() -> Workload {
    generate(0, 0)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn phases_share_no_order_user_or_coupon() {
        let a = phase(0, 200, 10, Mix::Demo);
        let b = phase(1, 200, 10, Mix::Demo);
        let orders: HashSet<Uuid> = a
            .requests
            .iter()
            .chain(&b.requests)
            .map(|r| r.body.order_id)
            .collect();
        assert_eq!(orders.len(), 400);
        assert!(a.balances.keys().all(|u| (1..=10).contains(u)));
        assert!(b.balances.keys().all(|u| (11..=20).contains(u)));
        assert!(b
            .requests
            .iter()
            .all(|r| b.balances.contains_key(&r.body.user_id)));
        let codes: HashSet<&String> = a.valid_coupons.iter().chain(&b.valid_coupons).collect();
        assert_eq!(codes.len(), a.valid_coupons.len() + b.valid_coupons.len());
        assert!(b
            .requests
            .iter()
            .all(|r| r.body.coupon_code.starts_with("P1-")));
        assert!(b.used_coupons.iter().all(|c| c.starts_with("P1-")));
        assert!(a.requests.iter().all(|r| !r.duplicated));
    }

    #[test]
    fn the_happy_mix_holds_only_happy_requests_and_as_many_as_asked() {
        let happy = phase(2, 500, 10, Mix::Happy);
        assert_eq!(happy.requests.len(), 500);
        assert!(happy.requests.iter().all(|r| r.kind == Kind::Happy));
        let demo = phase(2, 500, 10, Mix::Demo);
        assert!(demo.requests.iter().any(|r| r.kind != Kind::Happy));
    }

    #[test]
    fn merging_keeps_only_what_was_published_but_every_seeded_row() {
        let batch = phase(0, 100, 5, Mix::Demo);
        let mut all = empty();
        merge(&mut all, &batch, 30);
        assert_eq!(all.requests.len(), 30);
        assert_eq!(all.balances, batch.balances);
        assert_eq!(all.valid_coupons, batch.valid_coupons);
    }
}
