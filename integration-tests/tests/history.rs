//! The events are the source of truth: after a run that ends sagas in every way (completed,
//! compensated, parked), folding each saga's events gives exactly its stored row, and
//! `sagas verify-history` says so; a snapshot changed behind the events' back is reported.

use std::collections::BTreeSet;
use std::time::Duration;

use clap::Parser;
use integration_tests::checkout::CheckoutWorld;
use integration_tests::eventually;
use saga_core::SagaStatus;
use saga_engine::history;
use sagas::cli::Cli;
use sagas::domains::Domain;
use uuid::Uuid;

/// `sagas verify-history` against the world's database; its exit code.
async fn verify_history_command(world: &CheckoutWorld) -> i32 {
    let url = world.settings.database_url.expose().to_string();
    Cli::try_parse_from(["sagas", "--database-url", &url, "verify-history"])
        .unwrap()
        .run()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_saga_folds_into_its_stored_state_and_a_tampered_one_is_found() {
    let mut world = CheckoutWorld::new(true).await;
    world.settings.checkout.step_timeout = Duration::from_secs(3);
    world.settings.checkout.forward_attempts = 2;
    world.settings.checkout.settle_attempts = 2;
    world.start_participant(Domain::Points).await;
    world.start_participant(Domain::Coupons).await;
    world.start_engine().await;

    // The balance service is down: the try times out twice, the saga compensates, and the
    // unanswered cancel parks it.
    let stranded = world.request(1_000, 5, "WELCOME");
    let parked = world.saga_id(&stranded);
    world.trigger(&stranded).await;
    world.wait_for_status(parked, SagaStatus::Parked).await;

    // The balance service comes up and answers the parked saga's commands late; the
    // replies change nothing.
    world.start_participant(Domain::Balance).await;
    let balance = world.pools["balance"].clone();
    eventually(
        "the balance service to answer the parked saga's cancels",
        || async {
            let cancels: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM barrier WHERE saga_id = $1 AND phase = 'cancel'",
            )
            .bind(parked)
            .fetch_one(&balance)
            .await
            .unwrap();
            (cancels == 1).then_some(())
        },
    )
    .await;

    // With the balance service up: one saga completes, two compensate.
    let requests = [
        (world.request(1_500, 5, "SPRING"), SagaStatus::Completed),
        (world.request(1_000_000, 5, "NONE"), SagaStatus::Compensated),
        (world.request(500, 5, "TAKEN"), SagaStatus::Compensated),
    ];
    for (request, _) in &requests {
        world.trigger(request).await;
    }
    for (request, status) in &requests {
        world.wait_for_status(world.saga_id(request), *status).await;
    }
    world.stop_engine().await;

    let report = history::verify(&world.engine_pool).await.unwrap();
    let stored_events: i64 = sqlx::query_scalar("SELECT count(*) FROM saga_events")
        .fetch_one(&world.engine_pool)
        .await
        .unwrap();
    assert_eq!(report.checked, 4, "{}", report.render());
    assert_eq!(report.events, stored_events as u64);
    assert!(report.matches(), "{}", report.render());
    assert!(report.render().ends_with(&format!(
        "4 sagas checked ({stored_events} events), 0 differ"
    )));
    let statuses: Vec<String> = sqlx::query_scalar("SELECT DISTINCT status FROM sagas")
        .fetch_all(&world.engine_pool)
        .await
        .unwrap();
    let statuses: BTreeSet<String> = statuses.into_iter().collect();
    assert_eq!(
        statuses,
        BTreeSet::from(["completed".into(), "compensated".into(), "parked".into()])
    );
    assert_eq!(verify_history_command(&world).await, 0);

    // A status changed behind the events' back, and a saga whose last event is gone.
    let completed = world.saga_id(&requests[0].0);
    let compensated = world.saga_id(&requests[1].0);
    sqlx::query("UPDATE sagas SET status = 'completed' WHERE id = $1")
        .bind(compensated)
        .execute(&world.engine_pool)
        .await
        .unwrap();
    sqlx::query(
        "DELETE FROM saga_events WHERE saga_id = $1
         AND seq = (SELECT max(seq) FROM saga_events WHERE saga_id = $1)",
    )
    .bind(completed)
    .execute(&world.engine_pool)
    .await
    .unwrap();
    let report = history::verify(&world.engine_pool).await.unwrap();
    let differing: BTreeSet<Uuid> = report.differences.iter().map(|d| d.saga_id).collect();
    assert_eq!(differing, BTreeSet::from([completed, compensated]));
    let text = report.render();
    assert!(
        text.contains("status is `completed`, the fold says `compensated`"),
        "{text}"
    );
    assert!(text.ends_with("), 2 differ"), "{text}");
    assert!(text.contains("verify-history: 4 sagas checked"), "{text}");
    assert_eq!(verify_history_command(&world).await, 1);
    world.shutdown().await;
}
