//! Effects applied twice, found by replaying the participants' barriers as a ledger.
//!
//! The barrier holds one row per `(saga, step, phase)` a domain service answered, written in
//! the same transaction as the business change. Folding the rows that took effect (an `ok`
//! reply that is not a null compensation) over the seeded values gives what each account,
//! points balance and coupon must hold if every effect was applied exactly once. A table
//! row that differs was changed more (or less) often than recorded; a reservation both
//! confirmed and cancelled, or a coupon redeemed by two orders at once, was settled twice.
//! [`find`] is pure; [`read`] loads its inputs.

use std::collections::{BTreeMap, HashMap};

use schemas::checkout::CheckoutRequested;
use schemas::{Phase, ReplyOutcome};
use sqlx::PgPool;
use uuid::Uuid;

use crate::demo::Workload;

/// One barrier row: which saga, which phase, what the service answered.
#[derive(Debug, Clone, PartialEq)]
pub struct BarrierRow {
    /// The saga the command belonged to.
    pub saga_id: Uuid,
    /// The phase answered.
    pub phase: Phase,
    /// The stored reply (`None` while the command was being handled).
    pub reply: Option<ReplyOutcome>,
}

impl BarrierRow {
    /// Whether this phase changed business data: answered `ok`, and not as a null
    /// compensation (an undo with nothing to undo).
    fn took_effect(&self) -> bool {
        match &self.reply {
            Some(ReplyOutcome::Ok { output }) => {
                output.get("null_compensation") != Some(&serde_json::Value::Bool(true))
            }
            _ => false,
        }
    }
}

/// The three domains' barrier rows.
#[derive(Debug, Clone, Default)]
pub struct Barriers {
    /// `reserve_funds`: try, confirm, cancel.
    pub balance: Vec<BarrierRow>,
    /// `deduct_points`: action, compensate.
    pub points: Vec<BarrierRow>,
    /// `redeem_coupon`: action, compensate.
    pub coupons: Vec<BarrierRow>,
}

/// The domains' business tables after the run.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    /// `(user_id, available, frozen, spent)`.
    pub accounts: Vec<(i64, i64, i64, i64)>,
    /// `(user_id, balance)`.
    pub points: Vec<(i64, i64)>,
    /// `(code, used_by_order)`.
    pub coupons: Vec<(String, Option<Uuid>)>,
}

/// Every effect applied more often than the barriers recorded, described; empty when each
/// was applied exactly once. `saga_of_order` maps each order to its saga id.
pub fn find(
    workload: &Workload,
    saga_of_order: &HashMap<Uuid, Uuid>,
    barriers: &Barriers,
    tables: &Tables,
) -> Vec<String> {
    let request_of: HashMap<Uuid, &CheckoutRequested> = workload
        .requests
        .iter()
        .filter_map(|r| Some((*saga_of_order.get(&r.body.order_id)?, &r.body)))
        .collect();
    let mut found = Vec::new();
    let effects = |rows: &[BarrierRow]| -> Vec<(Phase, &CheckoutRequested)> {
        rows.iter()
            .filter(|row| row.took_effect())
            .filter_map(|row| Some((row.phase, *request_of.get(&row.saga_id)?)))
            .collect()
    };

    // Balance: try freezes, confirm spends, cancel releases.
    let mut accounts: BTreeMap<i64, (i64, i64, i64)> = workload
        .balances
        .iter()
        .map(|(user, cents)| (*user, (*cents, 0, 0)))
        .collect();
    let mut settled: HashMap<Uuid, Vec<Phase>> = HashMap::new();
    for (phase, req) in effects(&barriers.balance) {
        let (available, frozen, spent) = accounts.entry(req.user_id).or_default();
        let amount = req.amount_cents;
        match phase {
            Phase::Try => (*available, *frozen) = (*available - amount, *frozen + amount),
            Phase::Confirm => (*frozen, *spent) = (*frozen - amount, *spent + amount),
            Phase::Cancel => (*frozen, *available) = (*frozen - amount, *available + amount),
            _ => {}
        }
        if matches!(phase, Phase::Confirm | Phase::Cancel) {
            settled.entry(req.order_id).or_default().push(phase);
        }
    }
    for (order, phases) in &settled {
        if phases.len() > 1 {
            found.push(format!(
                "order {order}: its reservation was both confirmed and cancelled"
            ));
        }
    }
    for (user, available, frozen, spent) in &tables.accounts {
        let expected = accounts.get(user).copied().unwrap_or_default();
        if (*available, *frozen, *spent) != expected {
            found.push(format!(
                "user {user}: account holds available/frozen/spent {available}/{frozen}/{spent}, \
                 its barrier records give {}/{}/{}",
                expected.0, expected.1, expected.2
            ));
        }
    }

    // Points: the action deducts, the compensation refunds.
    let mut points = workload.points.clone();
    for (phase, req) in effects(&barriers.points) {
        let balance = points.entry(req.user_id).or_default();
        match phase {
            Phase::Action => *balance -= req.points,
            Phase::Compensate => *balance += req.points,
            _ => {}
        }
    }
    for (user, balance) in &tables.points {
        let expected = points.get(user).copied().unwrap_or_default();
        if *balance != expected {
            found.push(format!(
                "user {user}: {balance} points, its barrier records give {expected}"
            ));
        }
    }

    // Coupons: the action marks the coupon used by the order, the compensation frees it.
    // An undo that took effect ran after its action (one arriving first is a null
    // compensation), so whatever order the rows are read in, an order holds its coupon
    // when its action took effect and its compensation did not.
    let coupon_effects = effects(&barriers.coupons);
    let compensated: Vec<Uuid> = coupon_effects
        .iter()
        .filter(|(phase, _)| *phase == Phase::Compensate)
        .map(|(_, req)| req.order_id)
        .collect();
    let mut holders: BTreeMap<&str, Vec<Uuid>> = BTreeMap::new();
    for (phase, req) in &coupon_effects {
        if *phase == Phase::Action && !compensated.contains(&req.order_id) {
            holders
                .entry(req.coupon_code.as_str())
                .or_default()
                .push(req.order_id);
        }
    }
    for (code, used_by) in &tables.coupons {
        if workload.used_coupons.contains(code) {
            continue; // used before the run by an order outside it
        }
        let held = holders.get(code.as_str()).cloned().unwrap_or_default();
        if held.len() > 1 {
            found.push(format!(
                "coupon {code}: redeemed by {} orders at once",
                held.len()
            ));
        }
        if held.len() <= 1 && *used_by != held.first().copied() {
            found.push(format!(
                "coupon {code}: used by {used_by:?}, its barrier records give {:?}",
                held.first()
            ));
        }
    }
    found
}

/// Reads the barrier rows of `pool`'s domain.
async fn barrier_rows(pool: &PgPool) -> anyhow::Result<Vec<BarrierRow>> {
    let rows: Vec<(Uuid, String, Option<sqlx::types::Json<ReplyOutcome>>)> =
        sqlx::query_as("SELECT saga_id, phase, reply FROM barrier")
            .fetch_all(pool)
            .await?;
    rows.into_iter()
        .map(|(saga_id, phase, reply)| {
            Ok(BarrierRow {
                saga_id,
                phase: phase.parse().map_err(|e| anyhow::anyhow!("{e}"))?,
                reply: reply.map(|json| json.0),
            })
        })
        .collect()
}

/// Reads the barriers and business tables of the three domains.
pub async fn read(
    balance: &PgPool,
    points: &PgPool,
    coupons: &PgPool,
) -> anyhow::Result<(Barriers, Tables)> {
    let barriers = Barriers {
        balance: barrier_rows(balance).await?,
        points: barrier_rows(points).await?,
        coupons: barrier_rows(coupons).await?,
    };
    let tables = Tables {
        accounts: sqlx::query_as("SELECT user_id, available, frozen, spent FROM accounts")
            .fetch_all(balance)
            .await?,
        points: sqlx::query_as("SELECT user_id, balance FROM points")
            .fetch_all(points)
            .await?,
        coupons: sqlx::query_as("SELECT code, used_by_order FROM coupons")
            .fetch_all(coupons)
            .await?,
    };
    Ok((barriers, tables))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::demo::generate;

    /// A two-request workload: request 0 completes, request 1 compensates after its
    /// reservation and points deduction took effect.
    fn world() -> (Workload, HashMap<Uuid, Uuid>) {
        let mut workload = generate(2, 1);
        workload.used_coupons.clear();
        let saga_of_order = workload
            .requests
            .iter()
            .map(|r| (r.body.order_id, Uuid::new_v4()))
            .collect();
        (workload, saga_of_order)
    }

    fn row(saga: Uuid, phase: Phase, reply: ReplyOutcome) -> BarrierRow {
        BarrierRow {
            saga_id: saga,
            phase,
            reply: Some(reply),
        }
    }

    fn ok() -> ReplyOutcome {
        ReplyOutcome::ok()
    }

    /// The barriers and the tables as they are when every effect applied once.
    fn consistent(workload: &Workload, sagas: &HashMap<Uuid, Uuid>) -> (Barriers, Tables) {
        let (a, b) = (&workload.requests[0].body, &workload.requests[1].body);
        let (sa, sb) = (sagas[&a.order_id], sagas[&b.order_id]);
        let barriers = Barriers {
            balance: vec![
                row(sa, Phase::Try, ok()),
                row(sa, Phase::Confirm, ok()),
                row(sb, Phase::Try, ok()),
                row(sb, Phase::Cancel, ok()),
            ],
            points: vec![
                row(sa, Phase::Action, ok()),
                row(sb, Phase::Compensate, ok()),
                row(sb, Phase::Action, ok()),
            ],
            // Rows come back in any order: b's compensation is read before its action.
            coupons: vec![
                row(sb, Phase::Compensate, ok()),
                row(sa, Phase::Action, ok()),
                row(sb, Phase::Action, ok()),
            ],
        };
        let user = a.user_id;
        let seeded = workload.balances[&user];
        let tables = Tables {
            accounts: vec![(user, seeded - a.amount_cents, 0, a.amount_cents)],
            points: vec![(user, workload.points[&user] - a.points)],
            coupons: vec![
                (a.coupon_code.clone(), Some(a.order_id)),
                (b.coupon_code.clone(), None),
            ],
        };
        (barriers, tables)
    }

    #[test]
    fn tables_that_are_the_fold_of_the_barriers_have_nothing_doubled() {
        let (workload, sagas) = world();
        let (barriers, tables) = consistent(&workload, &sagas);
        assert_eq!(
            find(&workload, &sagas, &barriers, &tables),
            Vec::<String>::new()
        );
    }

    #[test]
    fn rejections_and_null_compensations_change_nothing() {
        let (workload, sagas) = world();
        let (mut barriers, tables) = consistent(&workload, &sagas);
        let sb = sagas[&workload.requests[1].body.order_id];
        let rejected = ReplyOutcome::Rejected {
            reason: "coupon expired".into(),
        };
        let null = ReplyOutcome::Ok {
            output: json!({ "null_compensation": true }),
        };
        barriers.coupons.retain(|row| row.saga_id != sb);
        barriers.coupons.push(row(sb, Phase::Action, rejected));
        barriers.coupons.push(row(sb, Phase::Compensate, null));
        assert_eq!(
            find(&workload, &sagas, &barriers, &tables),
            Vec::<String>::new()
        );
        // Were the null compensation counted as a refund, the points would not add up.
        barriers.points.retain(|row| row.saga_id != sb);
        barriers.points.push(row(
            sb,
            Phase::Compensate,
            ReplyOutcome::Ok {
                output: json!({ "null_compensation": true }),
            },
        ));
        assert_eq!(
            find(&workload, &sagas, &barriers, &tables),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_deduction_applied_twice_is_found() {
        let (workload, sagas) = world();
        let (barriers, mut tables) = consistent(&workload, &sagas);
        tables.points[0].1 -= workload.requests[0].body.points;
        let found = find(&workload, &sagas, &barriers, &tables);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("points"), "{found:?}");
    }

    #[test]
    fn a_spend_applied_twice_is_found() {
        let (workload, sagas) = world();
        let (barriers, mut tables) = consistent(&workload, &sagas);
        let amount = workload.requests[0].body.amount_cents;
        tables.accounts[0].1 -= amount;
        tables.accounts[0].3 += amount;
        assert_eq!(find(&workload, &sagas, &barriers, &tables).len(), 1);
    }

    #[test]
    fn a_reservation_both_confirmed_and_cancelled_is_found() {
        let (workload, sagas) = world();
        let (mut barriers, mut tables) = consistent(&workload, &sagas);
        let a = &workload.requests[0].body;
        barriers
            .balance
            .push(row(sagas[&a.order_id], Phase::Cancel, ok()));
        // The table agrees with the barrier, yet the reservation was settled twice.
        tables.accounts[0].1 += a.amount_cents;
        tables.accounts[0].2 -= a.amount_cents;
        let found = find(&workload, &sagas, &barriers, &tables);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("both confirmed and cancelled"));
    }

    #[test]
    fn a_coupon_held_by_two_orders_or_freed_behind_the_barrier_is_found() {
        let (workload, sagas) = world();
        let (mut barriers, mut tables) = consistent(&workload, &sagas);
        tables.coupons[0].1 = None;
        assert_eq!(find(&workload, &sagas, &barriers, &tables).len(), 1);

        let (a, b) = (&workload.requests[0].body, &workload.requests[1].body);
        tables.coupons[0].1 = Some(a.order_id);
        let mut b_on_a_coupon = workload.clone();
        b_on_a_coupon.requests[1].body.coupon_code = a.coupon_code.clone();
        barriers.coupons = vec![
            row(sagas[&a.order_id], Phase::Action, ok()),
            row(sagas[&b.order_id], Phase::Action, ok()),
        ];
        tables.coupons.truncate(1);
        let found = find(&b_on_a_coupon, &sagas, &barriers, &tables);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("2 orders"));
    }
}
