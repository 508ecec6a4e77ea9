//! Messages outside the documented limits (`schemas::limits`) are refused at the edge as
//! poison: dead-lettered with a message naming the field and its limit, never retried, and
//! they hold up nothing behind them.

use integration_tests::checkout::{publish, CheckoutWorld, START_CENTS};
use integration_tests::{eventually, kafka};
use saga_core::SagaStatus;
use sagas::domains::Domain;
use schemas::limits::{AMOUNT_CENTS_MAX, COUPON_CODE_MAX_CHARS, POINTS_MAX};
use schemas::{Envelope, MessageKind, Phase};
use sqlx::PgPool;
use uuid::Uuid;

/// The errors of the dead letters kept in `pool`, once there are `count` of them.
async fn dead_letter_errors(pool: &PgPool, count: usize) -> Vec<String> {
    eventually(&format!("{count} dead letters"), || async {
        let errors: Vec<String> = sqlx::query_scalar("SELECT error FROM dead_letters ORDER BY id")
            .fetch_all(pool)
            .await
            .unwrap();
        (errors.len() >= count).then_some(errors)
    })
    .await
}

#[tokio::test]
async fn triggers_out_of_bounds_are_dead_lettered_naming_field_and_limit() {
    let world = CheckoutWorld::running(true).await;
    let too_much = world.request(AMOUNT_CENTS_MAX + 1, 0, "WELCOME");
    let overflow = world.request(i64::MAX, 0, "WELCOME");
    let too_many_points = world.request(100, POINTS_MAX + 1, "WELCOME");
    let long_code = world.request(100, 0, &"C".repeat(COUPON_CODE_MAX_CHARS + 1));
    let bad = [&too_much, &overflow, &too_many_points, &long_code];
    for request in bad {
        world.trigger(request).await;
    }
    let valid = world.request(AMOUNT_CENTS_MAX.min(START_CENTS), 0, "WELCOME");
    world.trigger(&valid).await;
    world
        .wait_for_status(world.saga_id(&valid), SagaStatus::Completed)
        .await;

    let errors = dead_letter_errors(&world.engine_pool, bad.len()).await;
    let expected = [
        format!(
            "`amount_cents` must be within 1..={AMOUNT_CENTS_MAX}, got {}",
            AMOUNT_CENTS_MAX + 1
        ),
        format!(
            "`amount_cents` must be within 1..={AMOUNT_CENTS_MAX}, got {}",
            i64::MAX
        ),
        format!(
            "`points` must be within 0..={POINTS_MAX}, got {}",
            POINTS_MAX + 1
        ),
        format!("`coupon_code` must be 1..={COUPON_CODE_MAX_CHARS} characters long, got 65"),
    ];
    for needle in &expected {
        assert!(
            errors.iter().any(|e| e.contains(needle.as_str())),
            "no dead letter says {needle:?}: {errors:?}"
        );
    }
    for request in bad {
        let started: Option<String> = sqlx::query_scalar("SELECT status FROM sagas WHERE id = $1")
            .bind(world.saga_id(request))
            .fetch_optional(&world.engine_pool)
            .await
            .unwrap();
        assert_eq!(started, None, "an out-of-bounds trigger started a saga");
    }
    world.shutdown().await;
}

/// A balance `try` command envelope for a fresh saga.
fn freeze_command(saga_id: Uuid, amount_cents: i64) -> Vec<u8> {
    let body = serde_json::json!({ "user_id": integration_tests::checkout::USER,
                                   "amount_cents": amount_cents });
    let envelope = Envelope::new(MessageKind::Command, body)
        .for_saga(saga_id)
        .for_step("reserve_funds", Phase::Try, 1);
    serde_json::to_vec(&envelope).unwrap()
}

#[tokio::test]
async fn a_command_out_of_bounds_is_poison_for_the_participant_and_blocks_nothing() {
    let mut world = CheckoutWorld::new(true).await;
    world.start_participant(Domain::Balance).await;
    let producer = kafka().await.producer().unwrap();
    let topic = world.topics().commands("balance");
    let (poison, valid) = (Uuid::new_v4(), Uuid::new_v4());
    // Same key, so the same partition: the valid command waits behind the poison one.
    let key = "bounds";
    let too_much = freeze_command(poison, AMOUNT_CENTS_MAX + 1);
    publish(&producer, &topic, key, &too_much, &[]).await;
    publish(&producer, &topic, key, &freeze_command(valid, 300), &[]).await;

    let balance = &world.pools["balance"];
    eventually("the valid command to freeze its amount", || async {
        let (frozen,): (i64,) = sqlx::query_as("SELECT frozen FROM accounts WHERE user_id = $1")
            .bind(integration_tests::checkout::USER)
            .fetch_one(balance)
            .await
            .unwrap();
        (frozen == 300).then_some(())
    })
    .await;
    let errors = dead_letter_errors(balance, 1).await;
    assert_eq!(
        errors,
        [format!(
            "command refused: `amount_cents` must be within 1..={AMOUNT_CENTS_MAX}, got {}",
            AMOUNT_CENTS_MAX + 1
        )]
    );
    // Refused before the kit ran: no barrier row, no reply, no change to the account.
    let barrier_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM barrier WHERE saga_id = $1")
        .bind(poison)
        .fetch_one(balance)
        .await
        .unwrap();
    assert_eq!(barrier_rows, 0);
    assert_eq!(world.account().await, (START_CENTS - 300, 300, 0));
    world.shutdown().await;
}
