//! `sagas run` as a process refuses to start when the checkout definition's steps differ
//! from the ones stored for its version: one line names the definition, version and both
//! fingerprints, and the process exits non-zero.

mod common;

use std::process::Stdio;
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokio::process::Command;
use uuid::Uuid;

#[tokio::test]
async fn a_binary_whose_steps_changed_without_a_version_bump_exits_non_zero() {
    let (database, brokers) = common::services().await;
    let prefix = format!("t{}.", Uuid::new_v4().simple());
    let common_args = [
        "--database-url",
        database.as_str(),
        "--kafka-brokers",
        brokers.as_str(),
        "--topic-prefix",
        prefix.as_str(),
    ];
    let migrated = Command::new(env!("CARGO_BIN_EXE_sagas"))
        .arg("migrate")
        .args(common_args)
        .output()
        .await
        .unwrap();
    assert!(migrated.status.success(), "{migrated:?}");
    // What an earlier binary with other steps stored for checkout@1.
    let stored = "0".repeat(64);
    let mut db = PgConnection::connect(&database).await.unwrap();
    sqlx::query(
        "INSERT INTO engine.definition_versions (name, version, fingerprint)
         VALUES ('checkout', 1, $1)",
    )
    .bind(&stored)
    .execute(&mut db)
    .await
    .unwrap();

    let run = Command::new(env!("CARGO_BIN_EXE_sagas"))
        .args(["run", "--admin-addr", "127.0.0.1:0"])
        .args(common_args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("`sagas run` still runs after 60 s")
        .unwrap();
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "definition checkout@1 changed its steps without a version bump \
         (stored fingerprint {stored}, this binary "
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(&expected)).collect();
    assert_eq!(lines.len(), 1, "one line names the change: {stderr}");
    let kept: String = sqlx::query_scalar(
        "SELECT fingerprint FROM engine.definition_versions
         WHERE name = 'checkout' AND version = 1",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(kept, stored, "the stored fingerprint stays");
}
