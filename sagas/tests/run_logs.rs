//! `sagas run` as a process: at the default level it says once, as JSON when not on a
//! terminal, that the engine is ready, with its admin address, topics and groups; and the
//! admin API it names answers.

mod common;

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use uuid::Uuid;

#[tokio::test]
async fn the_engine_announces_itself_once_ready_and_serves_its_admin_api() {
    let (database, brokers) = common::services().await;
    let prefix = format!("t{}.", Uuid::new_v4().simple());
    let mut child = Command::new(env!("CARGO_BIN_EXE_sagas"))
        .args(["run", "--admin-addr", "127.0.0.1:0"])
        .args(["--database-url", &database, "--kafka-brokers", &brokers])
        .args(["--topic-prefix", &prefix])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let entry: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            if entry["fields"]["message"] == "engine ready" {
                return entry;
            }
        }
        panic!("sagas run ended without saying it was ready");
    })
    .await
    .expect("no `engine ready` line within 60 s");
    assert_eq!(ready["level"], "INFO");
    let fields = &ready["fields"];
    assert_eq!(
        fields["triggers"],
        format!("{prefix}checkout.requested").as_str()
    );
    assert_eq!(fields["replies"], format!("{prefix}saga.replies").as_str());
    assert_eq!(
        fields["groups"],
        format!("{prefix}saga-engine.triggers,{prefix}saga-engine.replies").as_str()
    );
    let admin = fields["admin"].as_str().unwrap().to_string();
    assert!(admin.starts_with("http://127.0.0.1:"), "{admin}");
    let health = reqwest::get(format!("{admin}/healthz")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    child.kill().await.unwrap();
}

#[tokio::test]
async fn a_service_started_before_its_broker_says_so_and_keeps_waiting() {
    let (database, _) = common::services().await;
    // A port nothing listens on.
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = nowhere.local_addr().unwrap().to_string();
    drop(nowhere);
    let prefix = format!("t{}.", Uuid::new_v4().simple());
    let mut child = Command::new(env!("CARGO_BIN_EXE_sagas"))
        .args(["participant", "points"])
        .args(["--database-url", &database, "--kafka-brokers", &address])
        .args(["--topic-prefix", &prefix])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut retries = 0;
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let entry: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            if entry["fields"]["message"] == "cannot create topics on the Kafka broker; retrying" {
                assert_eq!(entry["level"], "WARN");
                assert_eq!(entry["fields"]["brokers"], address.as_str());
                retries += 1;
                if retries == 2 {
                    return;
                }
            }
        }
        panic!("sagas participant ended instead of waiting for its broker");
    })
    .await
    .expect("no warning naming the broker within 60 s");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the service keeps waiting for its broker"
    );
    child.kill().await.unwrap();
}
