//! The checkout saga's domain services (balance, points, coupons) against real Postgres,
//! driven through the participant kit exactly as a worker would drive them.

use chrono::{Duration, Utc};
use futures::future::join_all;
use integration_tests::fresh_database;
use saga_participant::{handle_command, Command, CompensableParticipant, Handled};
use saga_plumbing::db::PoolSettings;
use saga_plumbing::Connections;
use sagas::domains::coupons::Coupons;
use sagas::domains::{self, balance, coupons, points, Domain};
use schemas::checkout::{DeductPoints, FreezeFunds, RedeemCoupon};
use schemas::{Phase, ReplyOutcome};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

const REPLIES: &str = "test.replies";

/// `domain`'s schema in the database at `url`, migrated.
async fn connect(url: &str, domain: Domain) -> PgPool {
    let connections = Connections::new(url, "unused:9092");
    domains::connect(&connections, &PoolSettings::default(), domain)
        .await
        .unwrap()
}

/// A fresh database with `domain`'s schema migrated.
async fn database(domain: Domain) -> PgPool {
    connect(&fresh_database().await, domain).await
}

fn command(saga_id: Uuid, step: &str, phase: Phase, body: &impl Serialize) -> Command {
    Command {
        saga_id,
        step: step.into(),
        phase,
        attempt: 1,
        payload: serde_json::to_value(body).unwrap(),
        traceparent: None,
    }
}

async fn handle(pool: &PgPool, domain: Domain, command: &Command) -> Handled {
    handle_command(pool, domain.handler().as_ref(), command, REPLIES)
        .await
        .unwrap()
}

/// The rejection reason of a reply, failing the test if it is not a rejection.
fn rejection(handled: &Handled) -> &str {
    match handled.reply() {
        ReplyOutcome::Rejected { reason } => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn ok(output: serde_json::Value) -> ReplyOutcome {
    ReplyOutcome::Ok { output }
}

fn null_compensation() -> ReplyOutcome {
    ok(json!({ "null_compensation": true }))
}

mod balance_tcc {
    use super::*;

    const STEP: &str = "reserve_funds";
    const USER: i64 = 7;

    async fn seeded(available: i64) -> PgPool {
        let pool = database(Domain::Balance).await;
        balance::seed_accounts(&pool, &[(USER, available), (8, 5)])
            .await
            .unwrap();
        pool
    }

    fn freeze(saga: Uuid, phase: Phase, amount_cents: i64) -> Command {
        let body = FreezeFunds {
            user_id: USER,
            amount_cents,
        };
        command(saga, STEP, phase, &body)
    }

    async fn run(pool: &PgPool, command: &Command) -> Handled {
        handle(pool, Domain::Balance, command).await
    }

    /// (available, frozen, spent) of `user`.
    async fn account(pool: &PgPool, user: i64) -> (i64, i64, i64) {
        sqlx::query_as("SELECT available, frozen, spent FROM accounts WHERE user_id = $1")
            .bind(user)
            .fetch_one(pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn try_freezes_and_confirm_spends() {
        let pool = seeded(1_000).await;
        let saga = Uuid::new_v4();

        let tried = run(&pool, &freeze(saga, Phase::Try, 300)).await;
        assert_eq!(tried, Handled::Answered(ok(json!({ "frozen_cents": 300 }))));
        assert_eq!(account(&pool, USER).await, (700, 300, 0));

        let confirmed = run(&pool, &freeze(saga, Phase::Confirm, 300)).await;
        assert_eq!(confirmed, Handled::Answered(ReplyOutcome::ok()));
        assert_eq!(account(&pool, USER).await, (700, 0, 300));
        assert_eq!(
            account(&pool, 8).await,
            (5, 0, 0),
            "other accounts untouched"
        );
    }

    #[tokio::test]
    async fn try_then_cancel_gives_the_money_back() {
        let pool = seeded(1_000).await;
        let saga = Uuid::new_v4();

        assert!(run(&pool, &freeze(saga, Phase::Try, 250))
            .await
            .reply()
            .is_ok());
        assert_eq!(account(&pool, USER).await, (750, 250, 0));
        let cancelled = run(&pool, &freeze(saga, Phase::Cancel, 250)).await;
        assert_eq!(cancelled, Handled::Answered(ReplyOutcome::ok()));
        assert_eq!(account(&pool, USER).await, (1_000, 0, 0));
    }

    #[tokio::test]
    async fn insufficient_funds_are_rejected_with_nothing_frozen() {
        let pool = seeded(100).await;
        let saga = Uuid::new_v4();

        let tried = run(&pool, &freeze(saga, Phase::Try, 101)).await;
        let reason = rejection(&tried);
        assert!(reason.starts_with("insufficient funds: "), "{reason}");
        assert!(reason.contains("100") && reason.contains("101"), "{reason}");
        assert_eq!(account(&pool, USER).await, (100, 0, 0));

        // The saga then cancels the branch: nothing was reserved, so nothing moves.
        let cancelled = run(&pool, &freeze(saga, Phase::Cancel, 101)).await;
        assert_eq!(cancelled, Handled::Answered(null_compensation()));
        assert_eq!(account(&pool, USER).await, (100, 0, 0));
    }

    #[tokio::test]
    async fn unknown_accounts_and_non_positive_amounts_are_rejected() {
        let pool = seeded(100).await;
        let body = FreezeFunds {
            user_id: 999,
            amount_cents: 1,
        };
        let tried = run(&pool, &command(Uuid::new_v4(), STEP, Phase::Try, &body)).await;
        assert_eq!(rejection(&tried), "unknown account 999");

        for amount in [0, -50] {
            let tried = run(&pool, &freeze(Uuid::new_v4(), Phase::Try, amount)).await;
            assert!(rejection(&tried).contains("`amount_cents` must be within 1..="));
        }
        assert_eq!(account(&pool, USER).await, (100, 0, 0));
    }

    #[tokio::test]
    async fn duplicate_phases_apply_once() {
        let pool = seeded(1_000).await;
        let saga = Uuid::new_v4();
        let try_ = freeze(saga, Phase::Try, 300);

        let first = run(&pool, &try_).await;
        let second = run(&pool, &try_).await;
        assert!(matches!(first, Handled::Answered(_)));
        assert_eq!(second, Handled::Replayed(first.reply().clone()));
        assert_eq!(account(&pool, USER).await, (700, 300, 0));

        let confirm = freeze(saga, Phase::Confirm, 300);
        run(&pool, &confirm).await;
        let again = run(&pool, &confirm).await;
        assert_eq!(again, Handled::Replayed(ReplyOutcome::ok()));
        assert_eq!(account(&pool, USER).await, (700, 0, 300));
    }

    #[tokio::test]
    async fn concurrent_tries_never_overdraw_and_money_is_conserved() {
        let pool = seeded(1_000).await;
        let sagas: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();

        let tries = sagas.iter().map(|saga| {
            let pool = pool.clone();
            let command = freeze(*saga, Phase::Try, 300);
            async move { run(&pool, &command).await }
        });
        let replies = join_all(tries).await;
        let frozen = replies.iter().filter(|h| h.reply().is_ok()).count();
        assert_eq!(frozen, 3, "{replies:?}");
        assert_eq!(account(&pool, USER).await, (100, 900, 0));

        // Confirm the first winner, cancel everything else: frozen ends at zero.
        let mut confirmed = false;
        for (saga, reply) in sagas.iter().zip(&replies) {
            let phase = if reply.reply().is_ok() && !confirmed {
                confirmed = true;
                Phase::Confirm
            } else {
                Phase::Cancel
            };
            assert!(run(&pool, &freeze(*saga, phase, 300)).await.reply().is_ok());
        }
        let (available, frozen, spent) = account(&pool, USER).await;
        assert_eq!((available, frozen, spent), (700, 0, 300));
        assert_eq!(available + frozen + spent, 1_000);
    }
}

mod points_step {
    use super::*;

    const STEP: &str = "deduct_points";
    const USER: i64 = 42;

    async fn seeded(balance: i64) -> PgPool {
        let pool = database(Domain::Points).await;
        points::seed_points(&pool, &[(USER, balance)])
            .await
            .unwrap();
        pool
    }

    fn deduct(saga: Uuid, phase: Phase, points: i64) -> Command {
        let body = DeductPoints {
            user_id: USER,
            points,
        };
        command(saga, STEP, phase, &body)
    }

    async fn run(pool: &PgPool, command: &Command) -> Handled {
        handle(pool, Domain::Points, command).await
    }

    async fn balance_of(pool: &PgPool) -> i64 {
        sqlx::query_scalar("SELECT balance FROM points WHERE user_id = $1")
            .bind(USER)
            .fetch_one(pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn action_deducts_and_compensation_refunds() {
        let pool = seeded(50).await;
        let saga = Uuid::new_v4();

        let acted = run(&pool, &deduct(saga, Phase::Action, 20)).await;
        assert_eq!(
            acted,
            Handled::Answered(ok(json!({ "deducted_points": 20 })))
        );
        assert_eq!(balance_of(&pool).await, 30);

        let compensated = run(&pool, &deduct(saga, Phase::Compensate, 20)).await;
        assert_eq!(compensated, Handled::Answered(ReplyOutcome::ok()));
        assert_eq!(balance_of(&pool).await, 50);

        // A redelivered compensation refunds nothing more.
        let again = run(&pool, &deduct(saga, Phase::Compensate, 20)).await;
        assert!(matches!(again, Handled::Replayed(_)));
        assert_eq!(balance_of(&pool).await, 50);
    }

    #[tokio::test]
    async fn not_enough_points_is_rejected_and_nothing_is_deducted() {
        let pool = seeded(50).await;
        let saga = Uuid::new_v4();

        let acted = run(&pool, &deduct(saga, Phase::Action, 51)).await;
        let reason = rejection(&acted);
        assert!(reason.starts_with("not enough points: "), "{reason}");
        assert_eq!(balance_of(&pool).await, 50);

        let compensated = run(&pool, &deduct(saga, Phase::Compensate, 51)).await;
        assert_eq!(compensated, Handled::Answered(null_compensation()));
        assert_eq!(balance_of(&pool).await, 50);
    }

    #[tokio::test]
    async fn zero_points_succeed_and_unknown_users_or_negative_points_are_rejected() {
        let pool = seeded(50).await;

        let zero = run(&pool, &deduct(Uuid::new_v4(), Phase::Action, 0)).await;
        assert_eq!(zero.reply(), &ok(json!({ "deducted_points": 0 })));

        let body = DeductPoints {
            user_id: 1,
            points: 1,
        };
        let unknown = run(&pool, &command(Uuid::new_v4(), STEP, Phase::Action, &body)).await;
        assert_eq!(rejection(&unknown), "unknown user 1");

        let negative = run(&pool, &deduct(Uuid::new_v4(), Phase::Action, -5)).await;
        assert!(rejection(&negative).contains("`points` must be within 0..="));
        assert_eq!(balance_of(&pool).await, 50);
    }

    #[tokio::test]
    async fn concurrent_deductions_never_go_negative() {
        let pool = seeded(50).await;
        let deductions = (0..10).map(|_| {
            let pool = pool.clone();
            let command = deduct(Uuid::new_v4(), Phase::Action, 20);
            async move { run(&pool, &command).await }
        });
        let replies = join_all(deductions).await;
        let succeeded = replies.iter().filter(|h| h.reply().is_ok()).count();
        assert_eq!(succeeded, 2, "{replies:?}");
        assert_eq!(balance_of(&pool).await, 10);
    }
}

mod coupons_step {
    use super::*;

    const STEP: &str = "redeem_coupon";
    const CODE: &str = "SAVE10";

    /// A coupons database with `SAVE10` (valid for an hour) and `OLD` (expired).
    async fn seeded() -> PgPool {
        let pool = database(Domain::Coupons).await;
        let now = Utc::now();
        coupons::seed_coupons(
            &pool,
            &[
                (CODE, now + Duration::hours(1)),
                ("OLD", now - Duration::hours(1)),
            ],
        )
        .await
        .unwrap();
        pool
    }

    fn redeem(saga: Uuid, phase: Phase, code: &str, order_id: Uuid) -> Command {
        let body = RedeemCoupon {
            code: code.into(),
            order_id,
        };
        command(saga, STEP, phase, &body)
    }

    async fn run(pool: &PgPool, command: &Command) -> Handled {
        handle(pool, Domain::Coupons, command).await
    }

    /// (used_by_order, whether used_at is set) of `code`.
    async fn coupon(pool: &PgPool, code: &str) -> (Option<Uuid>, bool) {
        sqlx::query_as("SELECT used_by_order, used_at IS NOT NULL FROM coupons WHERE code = $1")
            .bind(code)
            .fetch_one(pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn action_redeems_and_compensation_restores() {
        let pool = seeded().await;
        let (saga, order) = (Uuid::new_v4(), Uuid::new_v4());

        let acted = run(&pool, &redeem(saga, Phase::Action, CODE, order)).await;
        let ReplyOutcome::Ok { output } = acted.reply() else {
            panic!("expected ok, got {acted:?}");
        };
        assert_eq!(output["code"], CODE);
        assert_eq!(output["order_id"], order.to_string());
        assert_eq!(coupon(&pool, CODE).await, (Some(order), true));

        let compensated = run(&pool, &redeem(saga, Phase::Compensate, CODE, order)).await;
        assert_eq!(compensated, Handled::Answered(ReplyOutcome::ok()));
        assert_eq!(coupon(&pool, CODE).await, (None, false));

        // Restored, the coupon can be redeemed by another order.
        let other = Uuid::new_v4();
        let acted = run(&pool, &redeem(Uuid::new_v4(), Phase::Action, CODE, other)).await;
        assert!(acted.reply().is_ok());
        assert_eq!(coupon(&pool, CODE).await, (Some(other), true));
    }

    #[tokio::test]
    async fn unknown_and_expired_coupons_are_rejected() {
        let pool = seeded().await;

        let unknown = run(
            &pool,
            &redeem(Uuid::new_v4(), Phase::Action, "NOPE", Uuid::new_v4()),
        )
        .await;
        assert_eq!(rejection(&unknown), "coupon NOPE is unknown");

        let expired = run(
            &pool,
            &redeem(Uuid::new_v4(), Phase::Action, "OLD", Uuid::new_v4()),
        )
        .await;
        let reason = rejection(&expired);
        assert!(reason.starts_with("coupon OLD expired at "), "{reason}");
        assert_eq!(coupon(&pool, "OLD").await, (None, false));
    }

    #[tokio::test]
    async fn a_coupon_used_by_another_order_is_rejected() {
        let pool = seeded().await;
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());

        assert!(
            run(&pool, &redeem(Uuid::new_v4(), Phase::Action, CODE, first))
                .await
                .reply()
                .is_ok()
        );
        let saga = Uuid::new_v4();
        let taken = run(&pool, &redeem(saga, Phase::Action, CODE, second)).await;
        assert_eq!(rejection(&taken), "coupon SAVE10 is already used");
        assert_eq!(coupon(&pool, CODE).await, (Some(first), true));

        // The losing saga compensates its rejected step: the winner keeps the coupon.
        let compensated = run(&pool, &redeem(saga, Phase::Compensate, CODE, second)).await;
        assert_eq!(compensated, Handled::Answered(null_compensation()));
        assert_eq!(coupon(&pool, CODE).await, (Some(first), true));
    }

    #[tokio::test]
    async fn the_same_order_redeeming_again_succeeds() {
        let pool = seeded().await;
        let order = Uuid::new_v4();

        let first = run(&pool, &redeem(Uuid::new_v4(), Phase::Action, CODE, order)).await;
        let second = run(&pool, &redeem(Uuid::new_v4(), Phase::Action, CODE, order)).await;
        assert!(first.reply().is_ok());
        assert_eq!(first.reply(), second.reply());
        assert_eq!(coupon(&pool, CODE).await, (Some(order), true));
    }

    #[tokio::test]
    async fn restoring_for_a_different_order_does_nothing() {
        let pool = seeded().await;
        let (owner, stranger) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(
            run(&pool, &redeem(Uuid::new_v4(), Phase::Action, CODE, owner))
                .await
                .reply()
                .is_ok()
        );

        let mut conn = pool.acquire().await.unwrap();
        let body = RedeemCoupon {
            code: CODE.into(),
            order_id: stranger,
        };
        Coupons.compensate(&mut conn, &body).await.unwrap();
        assert_eq!(coupon(&pool, CODE).await, (Some(owner), true));
    }

    #[tokio::test]
    async fn of_many_orders_racing_for_a_coupon_exactly_one_wins() {
        let pool = seeded().await;
        let orders: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();

        let redemptions = orders.iter().map(|order| {
            let pool = pool.clone();
            let command = redeem(Uuid::new_v4(), Phase::Action, CODE, *order);
            async move { run(&pool, &command).await }
        });
        let replies = join_all(redemptions).await;
        let winners: Vec<Uuid> = orders
            .iter()
            .zip(&replies)
            .filter(|(_, h)| h.reply().is_ok())
            .map(|(order, _)| *order)
            .collect();
        assert_eq!(winners.len(), 1, "{replies:?}");
        for reply in replies.iter().filter(|h| !h.reply().is_ok()) {
            assert_eq!(rejection(reply), "coupon SAVE10 is already used");
        }
        assert_eq!(coupon(&pool, CODE).await, (Some(winners[0]), true));
    }
}

#[test]
fn domains_parse_and_print_by_name() {
    for domain in Domain::ALL {
        assert_eq!(domain.name().parse::<Domain>(), Ok(domain));
        assert_eq!(domain.to_string(), domain.schema());
    }
    assert!("wallet".parse::<Domain>().is_err());
}

#[tokio::test]
async fn all_domains_share_one_database_and_reconnecting_migrates_nothing_twice() {
    let url = fresh_database().await;
    for _ in 0..2 {
        for domain in Domain::ALL {
            let pool = connect(&url, domain).await;
            let schema: String = sqlx::query_scalar("SELECT current_schema()")
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(schema, domain.schema());
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables
                 WHERE table_schema = $1 AND table_name <> '_sqlx_migrations'
                 ORDER BY table_name",
            )
            .bind(domain.schema())
            .fetch_all(&pool)
            .await
            .unwrap();
            let own = match domain {
                Domain::Balance => "accounts",
                Domain::Points => "points",
                Domain::Coupons => "coupons",
            };
            let mut expected = vec![
                "barrier",
                "dead_letter_actions",
                "dead_letters",
                "outbox",
                "outbox_set_aside",
                own,
            ];
            expected.sort_unstable();
            assert_eq!(tables, expected);
        }
    }
}
