//! Inbox against real Postgres: dedup inside the caller's transaction.

use integration_tests::engine_database;
use saga_plumbing::inbox::{self, Receipt};
use uuid::Uuid;

#[tokio::test]
async fn a_message_is_first_once_and_a_duplicate_after_commit() {
    let pool = engine_database().await;
    let message = Uuid::new_v4();

    let mut tx = pool.begin().await.unwrap();
    assert_eq!(
        inbox::record(&mut tx, "engine", message).await.unwrap(),
        Receipt::First
    );
    tx.commit().await.unwrap();

    let mut tx = pool.begin().await.unwrap();
    assert_eq!(
        inbox::record(&mut tx, "engine", message).await.unwrap(),
        Receipt::Duplicate
    );
    tx.commit().await.unwrap();

    // Another consumer has its own record of the same message.
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(
        inbox::record(&mut tx, "auditor", message).await.unwrap(),
        Receipt::First
    );
    tx.commit().await.unwrap();

    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM inbox WHERE message_id = $1")
        .bind(message)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 2);
}

#[tokio::test]
async fn a_rolled_back_record_leaves_the_message_unseen() {
    let pool = engine_database().await;
    let message = Uuid::new_v4();

    let mut tx = pool.begin().await.unwrap();
    assert_eq!(
        inbox::record(&mut tx, "engine", message).await.unwrap(),
        Receipt::First
    );
    tx.rollback().await.unwrap();

    let mut tx = pool.begin().await.unwrap();
    assert_eq!(
        inbox::record(&mut tx, "engine", message).await.unwrap(),
        Receipt::First
    );
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn concurrent_deliveries_of_one_message_yield_exactly_one_first() {
    let pool = engine_database().await;
    let message = Uuid::new_v4();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let receipt = inbox::record(&mut tx, "engine", message).await.unwrap();
            tx.commit().await.unwrap();
            receipt
        }));
    }
    let mut firsts = 0;
    for task in tasks {
        if task.await.unwrap() == Receipt::First {
            firsts += 1;
        }
    }
    assert_eq!(firsts, 1);
}
