//! The demo itself, small: every saga ends as its request kind demands and the
//! invariants hold, with a summary line in the agreed form.

use std::time::Duration;

use integration_tests::checkout::test_settings;
use sagas::demo;
use sagas::services::Deployment;

#[tokio::test]
async fn a_small_demo_run_passes_its_invariant_checks() {
    let mut settings = test_settings(true).await;
    settings.engine.consumer = Default::default();
    settings.engine.timers = Default::default();
    settings.demo.requests = 100;
    settings.demo.users = 10;
    settings.demo.deadline = Duration::from_secs(60);
    let report = demo::run(&Deployment::new(settings)).await.unwrap();
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

#[tokio::test]
async fn a_served_demo_keeps_its_dashboard_and_api_up_until_stopped() {
    let mut settings = test_settings(true).await;
    settings.demo.requests = 20;
    settings.demo.users = 5;
    settings.demo.deadline = Duration::from_secs(60);
    settings.admin.addr = "127.0.0.1:0".parse().unwrap();
    let until = tokio_util::sync::CancellationToken::new();
    let (url_sender, url_receiver) = tokio::sync::oneshot::channel::<String>();
    let deployment = Deployment::new(settings);
    let demo = tokio::spawn({
        let until = until.clone();
        async move {
            demo::run_and_serve(&deployment, until, |report, url| {
                assert!(report.passed(), "{}", report.render());
                url_sender.send(url.to_string()).unwrap();
            })
            .await
        }
    });
    let url = tokio::time::timeout(Duration::from_secs(90), url_receiver)
        .await
        .expect("the demo announces its dashboard")
        .unwrap();
    let page = reqwest::get(format!("{url}/")).await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("<title>sagas</title>"));
    let stats: serde_json::Value = reqwest::get(format!("{url}/v1/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ended: i64 = stats["sagas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["count"].as_i64().unwrap())
        .sum();
    assert_eq!(ended, 20, "{stats}");
    assert!(!demo.is_finished(), "still serving");
    until.cancel();
    let report = demo.await.unwrap().unwrap();
    assert_eq!(report.total().sagas, 20);
    assert!(
        reqwest::get(format!("{url}/healthz")).await.is_err(),
        "stopped"
    );
}
