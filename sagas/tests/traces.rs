//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, `sagas demo` exports its spans over OTLP/HTTP,
//! and the engine's trigger and reply spans and the participants' command spans of one
//! saga share one trace: the `traceparent` header links them across Kafka.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use tokio::process::Command;

#[tokio::test]
async fn one_trace_follows_a_saga_across_the_engine_and_its_participants() {
    let (database, brokers) = common::services().await;

    // A collector that keeps what it receives.
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let collector = Router::new().route(
        "/v1/traces",
        post({
            let received = received.clone();
            move |Json(body): Json<Value>| async move {
                received.lock().unwrap().push(body);
                Json(serde_json::json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await.unwrap() });

    let output = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(env!("CARGO_BIN_EXE_sagas"))
            .args(["demo", "--requests", "10", "--users", "5"])
            .args(["--database-url", &database, "--kafka-brokers", &brokers])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env_remove("RUST_LOG")
            .output(),
    )
    .await
    .expect("the demo ends")
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Span names per trace, and the service that sent them.
    let mut traces: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut services = BTreeSet::new();
    for body in received.lock().unwrap().iter() {
        for resource in body["resourceSpans"].as_array().into_iter().flatten() {
            for attribute in resource["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if attribute["key"] == "service.name" {
                    services.insert(attribute["value"]["stringValue"].to_string());
                }
            }
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    traces
                        .entry(span["traceId"].as_str().unwrap_or_default().to_string())
                        .or_default()
                        .insert(span["name"].as_str().unwrap_or_default().to_string());
                }
            }
        }
    }
    assert_eq!(services, BTreeSet::from(["\"sagas-demo\"".to_string()]));
    let linked = traces
        .values()
        .filter(|names| {
            ["trigger", "command", "reply"]
                .iter()
                .all(|n| names.contains(*n))
        })
        .count();
    assert!(
        linked >= 10,
        "every saga's trace holds its trigger, command and reply spans: {traces:?}"
    );
}
