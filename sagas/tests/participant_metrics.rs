//! `sagas participant points --metrics-addr …`: a participant process serves its own
//! metrics — commands handled by outcome, and what it dead-lettered.

mod common;

use std::process::Stdio;
use std::time::Duration;

use rdkafka::producer::FutureRecord;
use saga_plumbing::kafka::KafkaSettings;
use schemas::checkout::DeductPoints;
use schemas::{Envelope, MessageKind, Phase};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use uuid::Uuid;

#[tokio::test]
async fn a_participant_process_counts_what_it_handled() {
    let (database, brokers) = common::services().await;
    let prefix = format!("t{}.", Uuid::new_v4().simple());
    let mut child = Command::new(env!("CARGO_BIN_EXE_sagas"))
        .args(["participant", "points", "--metrics-addr", "127.0.0.1:0"])
        .args(["--database-url", &database, "--kafka-brokers", &brokers])
        .args(["--topic-prefix", &prefix])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addr = None;
    let mut started = false;
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let entry: Value = serde_json::from_str(&line).unwrap_or_default();
            match entry["fields"]["message"].as_str() {
                Some("metrics listening") => {
                    addr = entry["fields"]["addr"].as_str().map(str::to_string)
                }
                Some("consumer started") => started = true,
                _ => {}
            }
            if addr.is_some() && started {
                return;
            }
        }
    })
    .await
    .expect("the participant says where its metrics are and that it consumes");
    let metrics_url = format!("http://{}/metrics", addr.unwrap());

    // One command for a user who does not exist (rejected), one that is not a command.
    let producer = KafkaSettings::new(&brokers).producer().unwrap();
    let topic = format!("{prefix}points.commands");
    let saga = Uuid::new_v4();
    let command = Envelope::new(
        MessageKind::Command,
        DeductPoints {
            user_id: 404,
            points: 5,
        },
    )
    .for_saga(saga)
    .for_step("deduct_points", Phase::Action, 1);
    for payload in [serde_json::to_vec(&command).unwrap(), b"garbage".to_vec()] {
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&saga.to_string())
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let rejected = text.lines().any(|l| {
            l.starts_with("saga_participant_commands_total{")
                && l.contains("outcome=\"rejected\"")
                && l.contains("phase=\"action\"")
                && l.ends_with(" 1")
        });
        let dead = text.lines().any(|l| {
            l.starts_with("saga_dead_letters_total{")
                && l.contains("reason=\"invalid_envelope\"")
                && l.ends_with(" 1")
        });
        if rejected && dead {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never showed the two messages:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(text.contains("# TYPE saga_participant_commands_total counter"));
    child.kill().await.unwrap();
}
