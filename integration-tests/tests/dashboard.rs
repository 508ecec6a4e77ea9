//! The dashboard in a real headless browser (Debian's chromium, driven over WebDriver by
//! chromedriver): a completed and a parked saga show their timelines, and resuming the
//! parked one from the page lets it end.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use integration_tests::checkout::{request, CheckoutWorld};
use integration_tests::{eventually, DEADLINE};
use saga_admin::{AdminSettings, AdminToken};
use saga_core::SagaStatus;
use serde_json::json;
use tokio::process::{Child, Command};

const TOKEN: &str = "dashboard-token";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver on a free port, and a headless chromium session through it.
async fn browser() -> Option<(Child, Client)> {
    if !(std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists()) {
        assert!(
            std::env::var_os("SAGA_TESTS_REQUIRE_TOOLS").is_none(),
            "no {CHROMIUM} / {CHROMEDRIVER}, though scripts/test.sh installed them"
        );
        eprintln!(
            "SKIPPED: no {CHROMIUM} / {CHROMEDRIVER}; scripts/test.sh installs Debian's \
             chromium and chromium-driver"
        );
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually("chromedriver to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1000"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    Some((driver, client))
}

/// Waits until `css` matches an element whose text satisfies `check`; returns the text.
async fn wait_text(client: &Client, css: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await {
            if let Ok(text) = element.text().await {
                if check(&text) {
                    return text;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for `{css}` on {}",
            client.current_url().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_dashboard_shows_timelines_and_resumes_a_parked_saga() {
    let Some((_driver, client)) = browser().await else {
        return;
    };
    // One saga parks (balance down, short timeouts), then one completes.
    let stranded = request(1_000, 5, "WELCOME");
    let mut world = CheckoutWorld::with_parked(true, std::slice::from_ref(&stranded)).await;
    let parked = world.saga_id(&stranded);
    let happy = world.request(1_500, 5, "SPRING");
    let completed = world.saga_id(&happy);
    world.trigger(&happy).await;
    world
        .wait_for_status(completed, SagaStatus::Completed)
        .await;
    let api = world
        .serve_admin(AdminSettings {
            token: Some(AdminToken::new(TOKEN)),
            ..AdminSettings::default()
        })
        .await;

    // The list, once the token is in the browser.
    client.goto(&format!("{api}/")).await.unwrap();
    client
        .execute(
            "localStorage.setItem('sagaAdminToken', arguments[0]); location.reload();",
            vec![json!(TOKEN)],
        )
        .await
        .unwrap();
    for saga in [parked, completed] {
        wait_text(&client, &format!("tr[data-saga='{saga}']"), |_| true).await;
    }
    wait_text(&client, "[data-count='parked'] b", |t| t == "1").await;
    wait_text(&client, "[data-count='completed'] b", |t| t == "1").await;

    // The filter form: parked or not, version, creation time.
    let filter = |fields: serde_json::Value| {
        let client = client.clone();
        async move {
            let script = "const form = document.querySelector('form.filters');
                for (const [name, value] of Object.entries(arguments[0])) {
                  form.querySelector(`[name=${name}]`).value = value;
                }
                form.requestSubmit();";
            client.execute(script, vec![fields]).await.unwrap();
        }
    };
    let listed = |expected: Vec<String>| {
        let client = client.clone();
        async move {
            eventually(&format!("the list to show {expected:?}"), || async {
                let ids = client
                    .execute(
                        "return [...document.querySelectorAll('tr[data-saga]')]
                           .map(row => row.dataset.saga);",
                        vec![],
                    )
                    .await
                    .ok()?;
                (ids == json!(expected)).then_some(())
            })
            .await
        }
    };
    filter(json!({ "parked": "true" })).await;
    listed(vec![parked.to_string()]).await;
    filter(json!({ "parked": "false", "version": "1", "created_before": "2999-01-01T00:00" }))
        .await;
    listed(vec![completed.to_string()]).await;
    filter(json!({ "created_after": "2999-01-01T00:00" })).await;
    listed(vec![]).await;

    // The completed saga: a lane per step, each with its bars.
    client
        .goto(&format!("{api}/#/sagas/{completed}"))
        .await
        .unwrap();
    wait_text(&client, "#saga-status", |t| t == "completed").await;
    for step in ["reserve_funds", "deduct_points", "redeem_coupon"] {
        let lane = client
            .find(Locator::Css(&format!("#timeline g[data-step='{step}']")))
            .await
            .unwrap();
        let bars = lane.find_all(Locator::Css("rect.bar")).await.unwrap();
        let expected = if step == "reserve_funds" { 2 } else { 1 };
        assert_eq!(bars.len(), expected, "{step}");
    }
    let confirm = client
        .find(Locator::Css(
            "g[data-step='reserve_funds'] rect[data-phase='confirm']",
        ))
        .await
        .unwrap();
    assert_eq!(
        confirm.attr("data-outcome").await.unwrap().as_deref(),
        Some("ok")
    );
    // Nothing was retried, so nothing is marked as a retry.
    assert!(client
        .find_all(Locator::Css("#timeline .retry-mark"))
        .await
        .unwrap()
        .is_empty());
    // A retry is marked on its bar: the page's timeline, drawn from a story with a second try.
    let marks = client
        .execute(
            r#"const saga = { created_at: "2026-11-23T10:00:00Z", status: "completed",
                              steps: [{ name: "funds" }] };
               const history = { events: [], exchanges: [
                 { step: "funds", phase: "try", attempt: 1, sent_at: "2026-11-23T10:00:00Z",
                   replied_at: null, outcome: null, timed_out: true },
                 { step: "funds", phase: "try", attempt: 2, sent_at: "2026-11-23T10:00:05Z",
                   replied_at: "2026-11-23T10:00:06Z", outcome: "ok", timed_out: false } ] };
               return [...timeline(saga, history).querySelectorAll(".retry-mark")]
                 .map(mark => [mark.dataset.attempt, mark.textContent]);"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(marks, json!([["2", "↻2"]]));

    // The parked saga: its timed-out try and cancel are marked; resume it from the page.
    client
        .goto(&format!("{api}/#/sagas/{parked}"))
        .await
        .unwrap();
    wait_text(&client, "#saga-status", |t| t == "parked").await;
    let unanswered = client
        .find_all(Locator::Css(
            "g[data-step='reserve_funds'] rect[data-outcome='timed_out']",
        ))
        .await
        .unwrap();
    assert_eq!(unanswered.len(), 2, "try and cancel timed out");
    client
        .find(Locator::Css("input[name='reason']"))
        .await
        .unwrap()
        .send_keys("balance service is back")
        .await
        .unwrap();
    client
        .find(Locator::Css("button[data-action='resume']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&client, "#saga-status", |t| t == "compensated").await;
    let action = wait_text(&client, ".operator-action", |_| true).await;
    assert_eq!(action, "resume by dashboard: balance service is back");
    world.wait_for_status(parked, SagaStatus::Compensated).await;

    client.close().await.unwrap();
    world.shutdown().await;
}
