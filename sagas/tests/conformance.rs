//! `sagas conformance` as a user runs it: against the three checkout participants, each a
//! `sagas participant` process (all pass, their business state checked by `--check-sql`),
//! and against a participant that breaks the protocol (it fails, naming the cases).

mod common;

use std::process::Stdio;
use std::time::Duration;

use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use saga_plumbing::kafka::KafkaSettings;
use schemas::{Envelope, MessageKind};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Starts `sagas participant <domain>` and waits until it consumes.
async fn participant(domain: &str, database: &str, brokers: &str, prefix: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sagas"))
        .args(["participant", domain])
        .args(["--database-url", database, "--kafka-brokers", brokers])
        .args(["--topic-prefix", prefix])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let entry: Value = serde_json::from_str(&line).unwrap_or_default();
            if entry["fields"]["message"] == "consumer started" {
                return;
            }
        }
        panic!("the {domain} participant exited before consuming");
    })
    .await
    .unwrap_or_else(|_| panic!("the {domain} participant did not start consuming"));
    // Keep reading its log so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

/// Runs `sagas conformance` with `args`; returns its exit code and standard output.
async fn conformance(args: Vec<&str>) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sagas"))
        .arg("conformance")
        .args(args)
        .env_remove("RUST_LOG")
        .stderr(Stdio::inherit())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    (output.status.code().unwrap_or(-1), stdout)
}

#[tokio::test]
async fn the_checkout_participants_pass_conformance() {
    let (database, brokers) = common::services().await;
    let prefix = format!("t{}.", Uuid::new_v4().simple());
    let migrate = Command::new(env!("CARGO_BIN_EXE_sagas"))
        .args(["migrate", "--database-url", &database])
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    assert!(migrate.status.success(), "{migrate:?}");
    let mut db = PgConnection::connect(&database).await.unwrap();
    for seed in [
        "INSERT INTO balance.accounts (user_id, available) VALUES (1, 1000)",
        "INSERT INTO points.points (user_id, balance) VALUES (1, 1000)",
        "INSERT INTO coupons.coupons (code, expires_at) VALUES ('CONFORMANCE', now() + interval '1 day')",
    ] {
        sqlx::query(seed).execute(&mut db).await.unwrap();
    }
    let mut children = Vec::new();
    for domain in ["balance", "points", "coupons"] {
        children.push(participant(domain, &database, &brokers, &prefix).await);
    }

    let runs = [
        (
            "balance",
            "SELECT available, frozen, spent FROM balance.accounts WHERE user_id = 1",
            18,
        ),
        (
            "points",
            "SELECT balance FROM points.points WHERE user_id = 1",
            15,
        ),
        (
            "coupons",
            "SELECT used_by_order FROM coupons.coupons WHERE code = 'CONFORMANCE'",
            15,
        ),
    ];
    let results = futures::future::join_all(runs.iter().map(|(name, check, _)| {
        conformance(vec![
            "--participant",
            name,
            "--check-sql",
            check,
            "--database-url",
            &database,
            "--brokers",
            &brokers,
            "--topic-prefix",
            &prefix,
        ])
    }))
    .await;
    for ((name, _, cases), (code, stdout)) in runs.iter().zip(results) {
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines.last().copied(),
            Some(
                format!("conformance: participant={name} cases={cases} passed={cases} failed=0")
                    .as_str()
            ),
            "{stdout}"
        );
        assert_eq!(lines.len(), cases + 1, "{stdout}");
        assert!(
            lines[..*cases].iter().all(|l| l.starts_with("pass  ")),
            "{stdout}"
        );
        assert_eq!(code, 0, "{stdout}");
    }

    // Each case that left an effect undid it, but for the two confirmed tries (1 cent each).
    let (available, frozen, spent): (i64, i64, i64) =
        sqlx::query_as("SELECT available, frozen, spent FROM balance.accounts WHERE user_id = 1")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!((available, frozen, spent), (998, 0, 2));
    let points: i64 = sqlx::query_scalar("SELECT balance FROM points.points WHERE user_id = 1")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(points, 1000);
    drop(children);
}

/// A participant that answers `ok` to every command it can read, under a fresh message id,
/// without a barrier, a traceparent or a dead-letter queue. Says `ready` at its first
/// message.
async fn careless_participant(
    kafka: KafkaSettings,
    prefix: String,
    ready: tokio::sync::oneshot::Sender<()>,
    stop: CancellationToken,
) {
    let mut ready = Some(ready);
    let group = format!("{prefix}careless");
    let commands = format!("{prefix}careless.commands");
    let replies = format!("{prefix}saga.replies");
    kafka
        .ensure_topics(&[&commands, &replies, &format!("{prefix}saga.dlq")], 2)
        .await
        .unwrap();
    let consumer = kafka.consumer(&group, &[&commands]).unwrap();
    let producer = kafka.producer().unwrap();
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return,
            message = consumer.recv() => message.unwrap(),
        };
        if let Some(ready) = ready.take() {
            ready.send(()).unwrap();
        }
        let Ok(command) = serde_json::from_slice::<Envelope>(message.payload().unwrap_or_default())
        else {
            continue;
        };
        let mut reply = Envelope::new(MessageKind::Reply, json!({"outcome": "ok", "output": null}));
        reply.saga_id = command.saga_id;
        reply.step = command.step;
        reply.phase = command.phase;
        reply.attempt = command.attempt;
        let key = command.saga_id.unwrap_or_default().to_string();
        let body = serde_json::to_vec(&reply).unwrap();
        producer
            .send(
                FutureRecord::to(&replies).key(&key).payload(&body),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_participant_that_breaks_the_protocol_fails_conformance() {
    let (_, brokers) = common::services().await;
    let prefix = format!("t{}.", Uuid::new_v4().simple());
    let stop = CancellationToken::new();
    let kafka = KafkaSettings::new(&brokers);
    let (ready, started) = tokio::sync::oneshot::channel();
    let careless = tokio::spawn(careless_participant(
        kafka.clone(),
        prefix.clone(),
        ready,
        stop.clone(),
    ));
    // A first message, which it skips, tells when it consumes.
    let topic = format!("{prefix}careless.commands");
    let producer = kafka.producer().unwrap();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let sent = producer
                .send(
                    FutureRecord::<str, str>::to(&topic).payload("warm-up"),
                    Duration::from_secs(5),
                )
                .await;
            if sent.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the warm-up message is sent");
    tokio::time::timeout(Duration::from_secs(60), started)
        .await
        .expect("the careless participant consumes")
        .unwrap();
    let (code, stdout) = conformance(vec![
        "--participant",
        "careless",
        "--step",
        "ship_parcel",
        "--accepted-body",
        r#"{"parcel": 1}"#,
        "--rejected-body",
        r#"{"parcel": 2}"#,
        "--invalid-body",
        r#"{"parcel": -1}"#,
        "--timeout-secs",
        "4",
        "--brokers",
        &brokers,
        "--topic-prefix",
        &prefix,
    ])
    .await;
    stop.cancel();
    careless.await.unwrap();
    assert_eq!(code, 1, "{stdout}");
    for line in [
        "pass  first delivery: answered ok, fields copied, effect applied",
        "FAIL  traceparent copied to the reply: the reply's traceparent is None",
        "FAIL  same command again: stored reply, no second effect: the reply to the same attempt got a new message_id",
        "FAIL  undo before the forward phase: null compensation: compensate attempt 1: expected ok with output {\"null_compensation\": true}, got ok (output null)",
        "FAIL  forward phase after its undo: rejected, no effect: compensate attempt 1: expected ok with output",
        "FAIL  poison, not JSON: dead-lettered with dlq.* headers: no dead letter within 4s",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(line)),
            "no line starting {line:?} in:\n{stdout}"
        );
    }
    assert_eq!(
        stdout.lines().last(),
        Some("conformance: participant=careless cases=15 passed=4 failed=11"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_participant_that_is_not_there_is_named_after_the_first_case() {
    let (_, brokers) = common::services().await;
    let prefix = format!("t{}.", Uuid::new_v4().simple());
    let started = std::time::Instant::now();
    let (code, stdout) = conformance(vec![
        "--participant",
        "absent",
        "--step",
        "ship_parcel",
        "--tcc",
        "--accepted-body",
        "{}",
        "--rejected-body",
        "{}",
        "--invalid-body",
        "{}",
        "--timeout-secs",
        "2",
        "--brokers",
        &brokers,
        "--topic-prefix",
        &prefix,
    ])
    .await;
    assert_eq!(code, 1, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].ends_with("no reply within 2s to try attempt 1"),
        "{stdout}"
    );
    let hint = format!(
        "not run: nothing came back on {prefix}saga.replies — is the participant running and \
         consuming {prefix}absent.commands?"
    );
    assert!(lines[1..18].iter().all(|l| l.ends_with(&hint)), "{stdout}");
    assert_eq!(
        lines.last().copied(),
        Some("conformance: participant=absent cases=18 passed=0 failed=18")
    );
    // One timeout, not eighteen.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}
