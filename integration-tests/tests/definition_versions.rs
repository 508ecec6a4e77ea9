//! Definition versions across a rolling deploy, through the real consumers and admin API:
//! - a process is not ready while sagas of versions it lacks are in flight (every status
//!   but the ended ones), and says which (`/readyz`), until none is left;
//! - a binary whose steps changed under the same version does not start.
//!
//! That a process lacking a version holds the version's replies is in
//! `definition_versions_held_reply.rs`, alone in its binary: it reads the process-wide
//! metrics recorder.

use integration_tests::eventually;
use integration_tests::versions::{order, Deployment, Order, Process};
use saga_core::{Definition, SagaDefinition, SagaStatus};
use saga_engine::versions::{in_flight, InFlight};
use saga_engine::Engine;
use serde_json::{json, Value};

/// `/readyz` of `admin`: its status code and body.
async fn readiness(admin: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{admin}/readyz")).await.unwrap();
    (
        response.status().as_u16(),
        response.json::<Value>().await.unwrap(),
    )
}

/// The `engine` check's detail in a `/readyz` body.
fn engine_detail(body: &Value) -> String {
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["name"] == "engine")
        .map(|check| check["detail"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_process_lacking_a_version_in_flight_is_not_ready_and_names_it() {
    let deployment = Deployment::new().await;
    let sagas = deployment.started_by(&[1, 2], &["b-1", "b-2"]).await;

    let v1 = Process::start(&deployment, &[1], true).await;
    let admin = v1.admin.clone().unwrap();
    let (status, body) = readiness(&admin).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    let detail = engine_detail(&body);
    assert!(
        detail.contains("not registered in this process: order@2 (2 sagas)"),
        "{detail}"
    );

    // Once no saga of version 2 is in flight (another process finished them), the same
    // process looks again and becomes ready.
    sqlx::query("UPDATE sagas SET status = 'compensated' WHERE id = ANY($1)")
        .bind(&sagas)
        .execute(&deployment.pool)
        .await
        .unwrap();
    let body = eventually("the version-1 process to become ready", || async {
        let (status, body) = readiness(&admin).await;
        (status == 200).then_some(body)
    })
    .await;
    assert!(!engine_detail(&body).contains("order@2"), "{body}");
    let stored: Vec<(String, i32)> =
        sqlx::query_as("SELECT name, version FROM definition_versions ORDER BY version")
            .fetch_all(&deployment.pool)
            .await
            .unwrap();
    assert_eq!(stored, [("order".into(), 1), ("order".into(), 2)]);
    v1.stop().await;
}

#[tokio::test]
async fn changed_steps_under_the_same_version_refuse_to_start() {
    let deployment = Deployment::new().await;
    let build = |definition: SagaDefinition| {
        Engine::builder(deployment.connections.clone(), deployment.settings.clone())
            .register(definition)
            .build()
    };
    build(order(1)).await.unwrap();
    let changed = Definition::<Order>::new("order", 1)
        .trigger("order.requested", |o| o.id.clone())
        .tcc("funds", "wallet", |_| json!({}))
        .step("points", "loyalty", |_| json!({}), |_| json!({}))
        .build()
        .unwrap();
    let (stored, ours) = (order(1).fingerprint(), changed.fingerprint());
    assert_ne!(stored, ours);
    let Err(error) = build(changed).await else {
        panic!("an engine with changed steps under order@1 started");
    };
    assert!(
        error.to_string().ends_with(&format!(
            "definition order@1 changed its steps without a version bump \
             (stored fingerprint {stored}, this binary {ours})"
        )),
        "{error}"
    );
    let kept: String = sqlx::query_scalar(
        "SELECT fingerprint FROM definition_versions WHERE name = 'order' AND version = 1",
    )
    .fetch_one(&deployment.pool)
    .await
    .unwrap();
    assert_eq!(kept, stored, "the stored fingerprint stays");
    // The same steps again (a restart, another replica) start as before.
    build(order(1)).await.unwrap();
}

#[tokio::test]
async fn sagas_in_every_status_but_the_ended_ones_are_in_flight() {
    let deployment = Deployment::new().await;
    let ids = ["s-1", "s-2", "s-3", "s-4", "s-5", "s-6"];
    let sagas = deployment.started_by(&[1], &ids).await;
    let statuses: Vec<SagaStatus> = SagaStatus::all().collect();
    assert_eq!(statuses.len(), sagas.len());
    for (saga, status) in sagas.iter().zip(&statuses) {
        sqlx::query("UPDATE sagas SET status = $2 WHERE id = $1")
            .bind(saga)
            .bind(status.as_str())
            .execute(&deployment.pool)
            .await
            .unwrap();
    }
    // Running, compensating and parked: a parked saga waits for an operator acting through
    // a process that knows its version.
    assert_eq!(
        in_flight(&deployment.pool).await.unwrap(),
        [InFlight {
            name: "order".into(),
            version: 1,
            sagas: 3
        }]
    );
}
