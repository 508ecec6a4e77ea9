//! Event store against real Postgres: ordered history, projection in the same
//! transaction, and typed conflicts for concurrent appends.

use integration_tests::{engine_database, eventually};
use saga_core::SagaStatus;
use saga_engine::store::{self, NewEvent, Projection};
use saga_engine::Error;
use serde_json::json;
use uuid::Uuid;

fn projection(status: SagaStatus, step: Option<&str>) -> Projection {
    Projection {
        definition: "checkout".into(),
        definition_version: 1,
        status,
        step: step.map(str::to_string),
        input: json!({"order_id": 7}),
        state: json!({"status": status}),
        parked_reason: None,
        payload_hash: None,
    }
}

fn events(names: &[&str]) -> Vec<NewEvent> {
    names
        .iter()
        .map(|name| NewEvent::new(*name, json!({ "name": name })))
        .collect()
}

/// Appends in a transaction of its own and commits; returns the new version.
async fn append_committed(
    pool: &sqlx::PgPool,
    saga: Uuid,
    expected: i64,
    events: &[NewEvent],
    projection: &Projection,
) -> i64 {
    let mut tx = pool.begin().await.unwrap();
    let version = store::append(&mut tx, saga, expected, events, projection)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    version
}

#[tokio::test]
async fn appended_events_load_in_order_with_the_projection_beside_them() {
    let pool = engine_database().await;
    let saga = Uuid::new_v4();
    let mut tx = pool.begin().await.unwrap();
    let v1 = store::append(
        &mut tx,
        saga,
        0,
        &events(&["Started", "StepSent"]),
        &projection(SagaStatus::Running, Some("a")),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(v1, 2);

    let v2 = append_committed(
        &pool,
        saga,
        2,
        &events(&["StepSucceeded", "Completed"]),
        &projection(SagaStatus::Completed, None),
    )
    .await;
    assert_eq!(v2, 4);

    let mut conn = pool.acquire().await.unwrap();
    let history = store::load_events(&mut conn, saga).await.unwrap();
    let names: Vec<_> = history.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(names, ["Started", "StepSent", "StepSucceeded", "Completed"]);
    assert_eq!(
        history.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(history[2].data, json!({"name": "StepSucceeded"}));

    let tail = store::load_events_after(&mut conn, saga, 3).await.unwrap();
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].event_type, "Completed");

    let row = store::load_saga(&mut conn, saga).await.unwrap().unwrap();
    assert_eq!(row.version, 4);
    assert_eq!(row.status, SagaStatus::Completed);
    assert_eq!(row.step, None);
    assert_eq!(row.definition, "checkout");
    assert_eq!(row.input, json!({"order_id": 7}));
}

#[tokio::test]
async fn a_rolled_back_append_leaves_neither_events_nor_projection() {
    let pool = engine_database().await;
    let saga = Uuid::new_v4();
    let mut tx = pool.begin().await.unwrap();
    store::append(
        &mut tx,
        saga,
        0,
        &events(&["Started"]),
        &projection(SagaStatus::Running, None),
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();

    let mut conn = pool.acquire().await.unwrap();
    assert!(store::load_events(&mut conn, saga)
        .await
        .unwrap()
        .is_empty());
    assert!(store::load_saga(&mut conn, saga).await.unwrap().is_none());
}

#[tokio::test]
async fn a_stale_expected_version_is_a_typed_conflict() {
    let pool = engine_database().await;
    let saga = Uuid::new_v4();
    append_committed(
        &pool,
        saga,
        0,
        &events(&["Started", "StepSent"]),
        &projection(SagaStatus::Running, None),
    )
    .await;

    let mut tx = pool.begin().await.unwrap();
    let stale = store::append(
        &mut tx,
        saga,
        1,
        &events(&["Late"]),
        &projection(SagaStatus::Running, None),
    )
    .await;
    assert!(
        matches!(stale, Err(Error::VersionConflict { saga_id, expected: 1 }) if saga_id == saga),
        "got {stale:?}"
    );
    assert!(stale.unwrap_err().is_retryable());
    tx.rollback().await.unwrap();

    // Creating a saga that exists is a conflict too.
    let mut tx = pool.begin().await.unwrap();
    let again = store::append(
        &mut tx,
        saga,
        0,
        &events(&["Started"]),
        &projection(SagaStatus::Running, None),
    )
    .await;
    assert!(matches!(
        again,
        Err(Error::VersionConflict { expected: 0, .. })
    ));
    tx.rollback().await.unwrap();

    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(store::load_events(&mut conn, saga).await.unwrap().len(), 2);
}

#[tokio::test]
async fn of_two_concurrent_appends_at_the_same_version_exactly_one_wins() {
    let pool = engine_database().await;
    let saga = Uuid::new_v4();
    append_committed(
        &pool,
        saga,
        0,
        &events(&["Started"]),
        &projection(SagaStatus::Running, None),
    )
    .await;

    // The first writer holds its transaction open while the second one tries.
    let mut first = pool.begin().await.unwrap();
    store::append(
        &mut first,
        saga,
        1,
        &events(&["FromFirst"]),
        &projection(SagaStatus::Running, Some("first")),
    )
    .await
    .unwrap();
    let second_pool = pool.clone();
    let second = tokio::spawn(async move {
        let mut tx = second_pool.begin().await.unwrap();
        let result = store::append(
            &mut tx,
            saga,
            1,
            &events(&["FromSecond"]),
            &projection(SagaStatus::Running, Some("second")),
        )
        .await;
        match result {
            Ok(_) => tx.commit().await.unwrap(),
            Err(_) => tx.rollback().await.unwrap(),
        }
        result
    });
    // The second writer blocks on the first one's row lock until it commits.
    eventually(
        "the second writer to wait on the first one's lock",
        || async {
            let (waiting,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            (waiting > 0).then_some(())
        },
    )
    .await;
    assert!(
        !second.is_finished(),
        "the second writer must wait for the first"
    );
    first.commit().await.unwrap();
    let second = second.await.unwrap();
    assert!(
        matches!(second, Err(Error::VersionConflict { expected: 1, .. })),
        "got {second:?}"
    );

    let mut conn = pool.acquire().await.unwrap();
    let names: Vec<_> = store::load_events(&mut conn, saga)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(names, ["Started", "FromFirst"]);
    let row = store::load_saga(&mut conn, saga).await.unwrap().unwrap();
    assert_eq!((row.version, row.step.as_deref()), (2, Some("first")));
}

#[tokio::test]
async fn many_concurrent_writers_never_lose_or_overwrite_an_event() {
    let pool = engine_database().await;
    let saga = Uuid::new_v4();
    let writers = 8;
    let appends_each = 10;
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < appends_each {
                let mut conn = pool.acquire().await.unwrap();
                let version = store::load_saga(&mut conn, saga)
                    .await
                    .unwrap()
                    .map_or(0, |row| row.version);
                drop(conn);
                let mut tx = pool.begin().await.unwrap();
                let event = NewEvent::new("Tick", json!({ "writer": writer, "n": done }));
                match store::append(
                    &mut tx,
                    saga,
                    version,
                    &[event],
                    &projection(SagaStatus::Running, None),
                )
                .await
                {
                    Ok(_) => {
                        tx.commit().await.unwrap();
                        done += 1;
                    }
                    Err(Error::VersionConflict { .. }) => tx.rollback().await.unwrap(),
                    Err(other) => panic!("unexpected error {other}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut conn = pool.acquire().await.unwrap();
    let history = store::load_events(&mut conn, saga).await.unwrap();
    assert_eq!(history.len(), writers * appends_each);
    let seqs: Vec<i64> = history.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=(writers * appends_each) as i64).collect::<Vec<_>>()
    );
    let row = store::load_saga(&mut conn, saga).await.unwrap().unwrap();
    assert_eq!(row.version, (writers * appends_each) as i64);
}
