//! Participant kit against real Postgres (and, for the worker, the real broker): the
//! barrier makes duplicates, null compensation and hanging commands safe.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use integration_tests::{
    collect_until, consumer, fresh_topic, header, json_payload, kafka, participant_database,
};
use rdkafka::producer::FutureRecord;
use saga_participant::{
    handle_command, handle_command_before, handle_group_in, reply_message_id, Command,
    CommandHandler, Delivery, Handled, ParticipantWorker, StepError, WorkerTopics,
};
use saga_plumbing::consume::ConsumerSettings;
use saga_plumbing::dlq;
use saga_plumbing::outbox::{Relay, RelaySettings};
use schemas::{Envelope, MessageKind, Phase, ReplyOutcome};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const REPLIES: &str = "test.replies";

/// A wallet with TCC phases: try freezes, confirm spends, cancel unfreezes.
struct Wallet;

#[async_trait]
impl CommandHandler for Wallet {
    async fn handle(&self, tx: &mut PgConnection, command: &Command) -> Result<Value, StepError> {
        let account = command.payload["account"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let amount = command.payload["amount"].as_i64().unwrap_or_default();
        sqlx::query("INSERT INTO handler_calls (saga_id, phase) VALUES ($1, $2)")
            .bind(command.saga_id)
            .bind(command.phase.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| StepError::Retryable(e.to_string()))?;
        let (locked,): (bool,) = sqlx::query_as("SELECT locked FROM accounts WHERE id = $1")
            .bind(&account)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StepError::Retryable(e.to_string()))?;
        if locked {
            return Err(StepError::Retryable(
                "account locked for maintenance".into(),
            ));
        }
        let sql = match command.phase {
            Phase::Try => {
                "UPDATE accounts SET available = available - $2, frozen = frozen + $2
                 WHERE id = $1 AND available >= $2"
            }
            Phase::Confirm => {
                "UPDATE accounts SET frozen = frozen - $2, spent = spent + $2 WHERE id = $1"
            }
            Phase::Cancel => {
                "UPDATE accounts SET frozen = frozen - $2, available = available + $2 WHERE id = $1"
            }
            other => {
                return Err(StepError::Rejected(format!(
                    "{other} is not a wallet phase"
                )))
            }
        };
        let changed = sqlx::query(sql)
            .bind(&account)
            .bind(amount)
            .execute(&mut *tx)
            .await
            .map_err(|e| StepError::Retryable(e.to_string()))?
            .rows_affected();
        if changed == 0 {
            return Err(StepError::Rejected("insufficient funds".into()));
        }
        Ok(json!({ "account": account, "amount": amount }))
    }
}

async fn wallet_database() -> PgPool {
    let pool = participant_database().await;
    sqlx::query(
        "CREATE TABLE accounts (id text PRIMARY KEY, available bigint NOT NULL,
             frozen bigint NOT NULL DEFAULT 0, spent bigint NOT NULL DEFAULT 0,
             locked boolean NOT NULL DEFAULT false)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("CREATE TABLE handler_calls (saga_id uuid NOT NULL, phase text NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO accounts (id, available) VALUES ('alice', 100)")
        .execute(&pool)
        .await
        .unwrap();
    pool
}

fn command(saga_id: Uuid, phase: Phase, amount: i64) -> Command {
    Command {
        saga_id,
        step: "reserve_funds".into(),
        phase,
        attempt: 1,
        payload: json!({ "account": "alice", "amount": amount }),
        traceparent: None,
    }
}

/// (available, frozen, spent) of alice.
async fn alice(pool: &PgPool) -> (i64, i64, i64) {
    sqlx::query_as("SELECT available, frozen, spent FROM accounts WHERE id = 'alice'")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn handler_calls(pool: &PgPool, saga_id: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT phase FROM handler_calls WHERE saga_id = $1")
        .bind(saga_id)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Reply envelopes waiting in the domain's outbox for `saga_id`, oldest first.
async fn replies(pool: &PgPool, saga_id: Uuid) -> Vec<Envelope<ReplyOutcome>> {
    let payloads: Vec<Value> =
        sqlx::query_scalar("SELECT payload FROM outbox WHERE key = $1 AND topic = $2 ORDER BY id")
            .bind(saga_id.to_string())
            .bind(REPLIES)
            .fetch_all(pool)
            .await
            .unwrap();
    payloads
        .into_iter()
        .map(|p| serde_json::from_value(p).unwrap())
        .collect()
}

async fn barrier_ops(pool: &PgPool, saga_id: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT phase FROM barrier WHERE saga_id = $1 ORDER BY phase")
        .bind(saga_id)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn handle(pool: &PgPool, command: &Command) -> Handled {
    handle_command(pool, &Wallet, command, REPLIES)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_duplicate_command_gets_the_same_reply_without_touching_business_data() {
    let pool = wallet_database().await;
    let saga = Uuid::new_v4();
    let try_ = command(saga, Phase::Try, 30);

    let first = handle(&pool, &try_).await;
    assert!(matches!(&first, Handled::Answered(ReplyOutcome::Ok { .. })));
    let second = handle(&pool, &try_).await;
    assert!(matches!(&second, Handled::Replayed(_)));
    assert_eq!(first.reply(), second.reply());

    assert_eq!(alice(&pool).await, (70, 30, 0));
    assert_eq!(handler_calls(&pool, saga).await, ["try"]);
    let sent = replies(&pool, saga).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(
        (sent[0].message_id, &sent[0].payload),
        (sent[1].message_id, &sent[1].payload)
    );
    assert_eq!(sent[0].message_id, reply_message_id(&try_));
    assert_eq!(sent[0].kind, MessageKind::Reply);
    assert_eq!(
        (sent[0].step.as_deref(), sent[0].phase),
        (Some("reserve_funds"), Some(Phase::Try))
    );
    assert_eq!(
        sent[0].payload,
        ReplyOutcome::Ok {
            output: json!({"account": "alice", "amount": 30})
        }
    );
}

#[tokio::test]
async fn a_business_rejection_is_recorded_and_its_writes_rolled_back() {
    let pool = wallet_database().await;
    let saga = Uuid::new_v4();
    let try_ = command(saga, Phase::Try, 500);

    let handled = handle(&pool, &try_).await;
    assert_eq!(
        handled,
        Handled::Answered(ReplyOutcome::Rejected {
            reason: "insufficient funds".into()
        })
    );
    assert_eq!(alice(&pool).await, (100, 0, 0));
    // The handler's own insert was inside the rolled-back savepoint.
    assert!(handler_calls(&pool, saga).await.is_empty());
    assert_eq!(barrier_ops(&pool, saga).await, ["try"]);
    assert!(matches!(
        handle(&pool, &try_).await,
        Handled::Replayed(ReplyOutcome::Rejected { .. })
    ));

    // Cancelling a rejected try has nothing to undo.
    let cancel = handle(&pool, &command(saga, Phase::Cancel, 500)).await;
    assert!(cancel.reply().is_ok());
    assert_eq!(alice(&pool).await, (100, 0, 0));
    assert!(handler_calls(&pool, saga).await.is_empty());
}

#[tokio::test]
async fn cancel_before_try_is_a_null_compensation_and_the_late_try_is_rejected() {
    let pool = wallet_database().await;
    let saga = Uuid::new_v4();

    let cancel = handle(&pool, &command(saga, Phase::Cancel, 30)).await;
    assert_eq!(
        cancel,
        Handled::Answered(ReplyOutcome::Ok {
            output: json!({ "null_compensation": true })
        })
    );
    assert_eq!(barrier_ops(&pool, saga).await, ["cancel", "try"]);

    let late_try = handle(&pool, &command(saga, Phase::Try, 30)).await;
    assert!(
        matches!(&late_try, Handled::Replayed(ReplyOutcome::Rejected { .. })),
        "got {late_try:?}"
    );
    assert_eq!(alice(&pool).await, (100, 0, 0));
    assert!(handler_calls(&pool, saga).await.is_empty());

    let sent = replies(&pool, saga).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].phase, Some(Phase::Cancel));
    assert!(sent[0].payload.is_ok());
    assert_eq!(sent[1].phase, Some(Phase::Try));
    assert!(matches!(sent[1].payload, ReplyOutcome::Rejected { .. }));
}

#[tokio::test]
async fn confirm_and_cancel_are_idempotent() {
    let pool = wallet_database().await;
    let confirmed = Uuid::new_v4();
    handle(&pool, &command(confirmed, Phase::Try, 30)).await;
    for _ in 0..3 {
        assert!(handle(&pool, &command(confirmed, Phase::Confirm, 30))
            .await
            .reply()
            .is_ok());
    }
    assert_eq!(alice(&pool).await, (70, 0, 30));
    assert_eq!(handler_calls(&pool, confirmed).await, ["try", "confirm"]);

    let cancelled = Uuid::new_v4();
    handle(&pool, &command(cancelled, Phase::Try, 20)).await;
    assert_eq!(alice(&pool).await, (50, 20, 30));
    for _ in 0..3 {
        assert!(handle(&pool, &command(cancelled, Phase::Cancel, 20))
            .await
            .reply()
            .is_ok());
    }
    assert_eq!(alice(&pool).await, (70, 0, 30));
    assert_eq!(handler_calls(&pool, cancelled).await, ["try", "cancel"]);
    assert_eq!(replies(&pool, cancelled).await.len(), 4);
}

#[tokio::test]
async fn a_retryable_failure_leaves_no_barrier_row_so_the_retry_runs() {
    let pool = wallet_database().await;
    let saga = Uuid::new_v4();
    sqlx::query("UPDATE accounts SET locked = true")
        .execute(&pool)
        .await
        .unwrap();

    let failed = handle(&pool, &command(saga, Phase::Try, 30)).await;
    assert!(matches!(
        failed,
        Handled::Answered(ReplyOutcome::Failed { .. })
    ));
    assert!(barrier_ops(&pool, saga).await.is_empty());
    assert_eq!(alice(&pool).await, (100, 0, 0));

    sqlx::query("UPDATE accounts SET locked = false")
        .execute(&pool)
        .await
        .unwrap();
    let retried = Command {
        attempt: 2,
        ..command(saga, Phase::Try, 30)
    };
    assert!(handle(&pool, &retried).await.reply().is_ok());
    assert_eq!(alice(&pool).await, (70, 30, 0));
    let sent = replies(&pool, saga).await;
    assert_eq!(sent.len(), 2);
    assert_ne!(
        sent[0].message_id, sent[1].message_id,
        "each attempt gets its own reply id"
    );
}

/// [`handle`] as the worker does it: a command that a concurrent delivery answered first
/// (`Error::Deferred`) is handled again, and then finds that answer.
async fn handle_retrying(pool: &PgPool, command: &Command) -> Handled {
    loop {
        match handle_command(pool, &Wallet, command, REPLIES).await {
            Err(saga_plumbing::Error::Deferred(_)) => continue,
            handled => return handled.unwrap(),
        }
    }
}

#[tokio::test]
async fn concurrent_try_and_cancel_never_leave_funds_frozen() {
    for _ in 0..10 {
        let pool = wallet_database().await;
        let saga = Uuid::new_v4();
        let (a, b) = (pool.clone(), pool.clone());
        let try_ =
            tokio::spawn(async move { handle_retrying(&a, &command(saga, Phase::Try, 30)).await });
        let cancel =
            tokio::spawn(
                async move { handle_retrying(&b, &command(saga, Phase::Cancel, 30)).await },
            );
        let (_, cancel) = (try_.await.unwrap(), cancel.await.unwrap());
        assert!(cancel.reply().is_ok());
        // Whichever came first, the cancel leaves nothing frozen and nothing lost.
        assert_eq!(alice(&pool).await, (100, 0, 0));
    }
}

fn command_bytes(command: &Command) -> Vec<u8> {
    let envelope = Envelope::new(MessageKind::Command, command.payload.clone())
        .for_saga(command.saga_id)
        .for_step(command.step.clone(), command.phase, command.attempt);
    serde_json::to_vec(&envelope).unwrap()
}

#[tokio::test]
async fn the_worker_answers_over_kafka_and_dead_letters_bad_commands() {
    let pool = wallet_database().await;
    let commands = fresh_topic("wallet.commands", 1).await;
    let replies_topic = fresh_topic("saga.replies", 1).await;
    let dlq_topic = fresh_topic("saga.dlq", 1).await;
    let kafka = kafka().await;
    let replies_reader = consumer(&replies_topic).await;
    let dlq_reader = consumer(&dlq_topic).await;

    let shutdown = CancellationToken::new();
    let worker = ParticipantWorker::new(
        pool.clone(),
        &kafka,
        Arc::new(Wallet),
        WorkerTopics {
            commands: commands.clone(),
            replies: replies_topic.clone(),
            dlq: dlq_topic.clone(),
        },
        format!("wallet-{}", Uuid::new_v4().simple()),
        &ConsumerSettings {
            lanes: 2,
            ..ConsumerSettings::default()
        },
    );
    let dead_letters = worker.dead_letters();
    let relay = Relay::new(
        pool.clone(),
        kafka.producer().unwrap(),
        "domain",
        RelaySettings::default(),
    );
    let worker = tokio::spawn(worker.run(shutdown.clone()));
    let relay = tokio::spawn(relay.run(shutdown.clone()));

    let saga = Uuid::new_v4();
    let hanging = Uuid::new_v4();
    let producer = kafka.producer().unwrap();
    let mut inputs: Vec<Vec<u8>> = vec![b"this is not json".to_vec()];
    inputs.push(command_bytes(&command(saga, Phase::Try, 30)));
    inputs.push(command_bytes(&command(saga, Phase::Try, 30)));
    inputs.push(br#"{"kind":"command","payload":{}}"#.to_vec());
    inputs.push(command_bytes(&command(hanging, Phase::Cancel, 10)));
    inputs.push(command_bytes(&command(hanging, Phase::Try, 10)));
    for payload in &inputs {
        producer
            .send(
                FutureRecord::<str, [u8]>::to(&commands)
                    .key("k")
                    .payload(payload),
                std::time::Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    let replies = collect_until(&replies_reader, |m| m.len() >= 4).await;
    let outcome = |saga_id: Uuid, phase: &str| -> Vec<Value> {
        replies
            .iter()
            .map(json_payload)
            .filter(|r| r["saga_id"] == json!(saga_id) && r["phase"] == json!(phase))
            .map(|r| r["payload"]["outcome"].clone())
            .collect()
    };
    assert_eq!(outcome(saga, "try"), [json!("ok"), json!("ok")]);
    assert_eq!(outcome(hanging, "cancel"), [json!("ok")]);
    assert_eq!(outcome(hanging, "try"), [json!("rejected")]);
    assert_eq!(alice(&pool).await, (70, 30, 0));

    let dead = collect_until(&dlq_reader, |m| m.len() >= 2).await;
    let errors: Vec<String> = dead
        .iter()
        .map(|m| header(m, dlq::ERROR_HEADER).unwrap())
        .collect();
    for error in &errors {
        assert!(error.starts_with("not a valid envelope"), "{errors:?}");
    }
    assert!(errors[1].contains("message_id"), "{errors:?}");
    assert_eq!(dead_letters.count(), 2);
    assert_eq!(
        header(&dead[0], dlq::SOURCE_TOPIC_HEADER).as_deref(),
        Some(commands.as_str())
    );
    // The service keeps its own copy of each, where an operator can find it.
    let kept: Vec<(String, Vec<u8>, String)> =
        sqlx::query_as("SELECT topic, payload, error FROM dead_letters ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept[0].0, commands);
    assert_eq!(kept[0].1, b"this is not json");
    assert_eq!(kept[1].1, inputs[3]);
    assert_eq!(kept[1].2, errors[1]);

    shutdown.cancel();
    worker.await.unwrap().unwrap();
    relay.await.unwrap();
}

/// Every kind of answer, in one group: accepted, rejected, null compensation, duplicate,
/// confirm before its try, and a try past its saga's deadline.
fn mixed_group(sagas: &[Uuid; 6]) -> Vec<Delivery> {
    let past = chrono::Utc::now() - chrono::Duration::seconds(60);
    let deliveries = [
        (command(sagas[0], Phase::Try, 30), None),
        (command(sagas[1], Phase::Try, 500), None),
        (command(sagas[2], Phase::Cancel, 10), None),
        (command(sagas[3], Phase::Try, 20), None),
        (command(sagas[4], Phase::Confirm, 10), None),
        (command(sagas[5], Phase::Try, 10), Some(past)),
    ];
    deliveries
        .into_iter()
        .map(|(command, deadline)| Delivery { command, deadline })
        .collect()
}

/// What a database holds after commands: alice, every barrier row, every reply (without
/// its creation time).
async fn kit_tables(pool: &PgPool) -> ((i64, i64, i64), Vec<(Uuid, String, Value)>, Vec<Value>) {
    let barrier =
        sqlx::query_as("SELECT saga_id, phase, reply FROM barrier ORDER BY saga_id, phase")
            .fetch_all(pool)
            .await
            .unwrap();
    let replies: Vec<Value> = sqlx::query_scalar("SELECT payload FROM outbox ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    let replies = replies
        .into_iter()
        .map(|mut reply| {
            reply.as_object_mut().unwrap().remove("occurred_at");
            reply
        })
        .collect();
    (alice(pool).await, barrier, replies)
}

#[tokio::test]
async fn a_group_answers_and_writes_exactly_what_its_commands_alone_would() {
    let sagas = [(); 6].map(|_| Uuid::new_v4());
    let (grouped, alone) = (wallet_database().await, wallet_database().await);
    for pool in [&grouped, &alone] {
        // Saga 4's try was answered before: in the group it is a duplicate.
        handle(pool, &command(sagas[3], Phase::Try, 20)).await;
    }

    let mut tx = grouped.begin().await.unwrap();
    let lock_timeout = Duration::from_millis(100);
    let group = mixed_group(&sagas);
    let in_group = handle_group_in(&mut tx, &Wallet, &group, REPLIES, lock_timeout)
        .await
        .unwrap()
        .expect("commands of six sagas form a group");
    tx.commit().await.unwrap();
    let mut one_by_one = Vec::new();
    for Delivery { command, deadline } in mixed_group(&sagas) {
        let handled = handle_command_before(&alone, &Wallet, &command, REPLIES, deadline);
        one_by_one.push(handled.await.unwrap());
    }

    assert_eq!(in_group, one_by_one);
    assert!(matches!(in_group[3], Handled::Replayed(_)), "{in_group:?}");
    assert!(matches!(in_group[4].reply(), ReplyOutcome::Failed { .. }));
    let expected = ReplyOutcome::Rejected {
        reason: "deadline passed".into(),
    };
    assert_eq!(in_group[5].reply(), &expected);
    assert_eq!(kit_tables(&grouped).await, kit_tables(&alone).await);
    assert_eq!(alice(&grouped).await, (50, 50, 0));
    assert_eq!(barrier_ops(&grouped, sagas[2]).await, ["cancel", "try"]);
}

#[tokio::test]
async fn a_group_with_two_commands_of_one_step_is_left_to_one_by_one() {
    let pool = wallet_database().await;
    let saga = Uuid::new_v4();
    let group: Vec<Delivery> = [Phase::Try, Phase::Cancel]
        .map(|phase| Delivery {
            command: command(saga, phase, 10),
            deadline: None,
        })
        .into();
    let mut tx = pool.begin().await.unwrap();
    let handled = handle_group_in(&mut tx, &Wallet, &group, REPLIES, Duration::from_secs(1));
    assert_eq!(handled.await.unwrap(), None);
    tx.commit().await.unwrap();
    assert!(barrier_ops(&pool, saga).await.is_empty());
    assert!(replies(&pool, saga).await.is_empty());
}

#[tokio::test]
async fn a_group_fails_rather_than_wait_for_a_lock_or_answer_failed() {
    let pool = wallet_database().await;
    let group = |amount| {
        vec![Delivery {
            command: command(Uuid::new_v4(), Phase::Try, amount),
            deadline: None,
        }]
    };
    // Another transaction holds alice's row.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM accounts WHERE id = 'alice' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    let started = std::time::Instant::now();
    let (first, second) = (group(10), group(10));
    let waited = handle_group_in(&mut tx, &Wallet, &first, REPLIES, Duration::from_millis(50));
    let waited = tokio::time::timeout(Duration::from_secs(5), waited).await;
    let error = waited.expect("the group waits for the lock").unwrap_err();
    assert!(
        matches!(error, saga_plumbing::Error::Deferred(_)),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    tx.rollback().await.unwrap();
    holder.rollback().await.unwrap();

    // A handler's passing failure fails the group too; alone, it is answered `failed`.
    sqlx::query("UPDATE accounts SET locked = true")
        .execute(&pool)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    let failed = handle_group_in(&mut tx, &Wallet, &second, REPLIES, Duration::from_secs(1));
    assert!(matches!(
        failed.await,
        Err(saga_plumbing::Error::Deferred(_))
    ));
    tx.rollback().await.unwrap();
    let (_, barrier, replies) = kit_tables(&pool).await;
    assert!(
        barrier.is_empty() && replies.is_empty(),
        "{barrier:?} {replies:?}"
    );
}
