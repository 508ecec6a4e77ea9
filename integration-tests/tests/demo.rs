//! The demo itself, small: every saga ends as its request kind demands and the
//! invariants hold, with a summary line in the agreed form.

use std::time::Duration;

use integration_tests::{fresh_database, services};
use sagas::demo::{self, DemoOptions};
use sagas::services::Deployment;
use uuid::Uuid;

#[tokio::test]
async fn a_small_demo_run_passes_its_invariant_checks() {
    let deployment = Deployment {
        database_url: fresh_database().await,
        kafka_brokers: services().await.kafka_brokers.clone(),
        topic_prefix: format!("demo{}.", Uuid::new_v4().simple()),
        parallel: true,
    };
    let options = DemoOptions {
        requests: 100,
        users: 10,
        deadline: Duration::from_secs(60),
    };
    let report = demo::run(&deployment, &options).await.unwrap();
    let text = report.render();
    assert!(report.passed(), "{text}");
    let total = report.total();
    assert_eq!(
        (total.sagas, total.completed, total.compensated),
        (100, 70, 30),
        "{text}"
    );
    let summary = text.lines().last().unwrap();
    assert!(
        summary.starts_with(
            "summary: sagas=100 completed=70 compensated=30 parked=0 stuck=0 invariants=ok p50_ms="
        ),
        "{summary}"
    );
    assert!(
        summary.contains(" p99_ms=") && summary.contains(" sagas_per_s="),
        "{summary}"
    );
}
