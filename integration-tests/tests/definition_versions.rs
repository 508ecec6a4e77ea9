//! A process that does not know a saga's definition version leaves the saga alone.

use saga_engine::runtime::timers::{fire_due_timer, TimerOutcome};
use saga_engine::runtime::transition::{Applied, Source, Transitions};
use saga_engine::runtime::{Registry, Topics};
use saga_engine::saga::{Definition, SagaDefinition, SagaInput};
use saga_schemas::{Phase, ReplyOutcome};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use integration_tests::engine_database;

#[derive(Serialize, Deserialize)]
struct Order {
    id: String,
}

fn order(version: u32) -> SagaDefinition {
    Definition::<Order>::new("order", version)
        .trigger("order.requested", |o| o.id.clone())
        .tcc("funds", "balance", |_| json!({}))
        .build()
}

fn transitions(pool: &PgPool, definition: SagaDefinition) -> Transitions {
    let mut registry = Registry::default();
    registry.register(definition);
    Transitions {
        pool: pool.clone(),
        registry,
        topics: Topics::default(),
    }
}

async fn version_of(pool: &PgPool, saga: Uuid) -> i64 {
    sqlx::query_scalar("SELECT version FROM sagas WHERE id = $1")
        .bind(saga)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn replies_and_timers_of_an_unknown_version_are_left_for_a_process_that_knows_it() {
    let pool = engine_database().await;
    let v1 = transitions(&pool, order(1));
    let v2_only = transitions(&pool, order(2));
    let definition = order(1);
    let saga = definition.saga_id("o-1");
    let start = SagaInput::Start {
        input: json!({ "id": "o-1" }),
        trace_id: saga_engine::trace::trace_id_for_saga(saga),
    };
    let applied = v1
        .apply(None, saga, &start, Some(&definition))
        .await
        .unwrap();
    assert_eq!(applied, Applied::Changed { status: "running" });
    let before = version_of(&pool, saga).await;

    let reply = SagaInput::Reply {
        step: "funds".into(),
        phase: Phase::Try,
        attempt: 1,
        outcome: ReplyOutcome::ok(),
    };
    let source = Source {
        consumer: "replies",
        message_id: Uuid::new_v4(),
    };
    let skipped = v2_only
        .apply(Some(source), saga, &reply, None)
        .await
        .unwrap();
    assert_eq!(skipped, Applied::UnknownDefinition);
    assert_eq!(version_of(&pool, saga).await, before);

    // The try's timeout is due; the v2-only process puts it back for later.
    sqlx::query("UPDATE timers SET fire_at = now() - interval '1 second' WHERE saga_id = $1")
        .bind(saga)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(fire_due_timer(&v2_only).await.unwrap(), TimerOutcome::Fired);
    let postponed: bool = sqlx::query_scalar(
        "SELECT fire_at > now() + interval '3 seconds' FROM timers WHERE saga_id = $1",
    )
    .bind(saga)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(postponed);
    assert_eq!(version_of(&pool, saga).await, before);

    // The same reply is still new to a process that knows version 1.
    let applied = v1.apply(Some(source), saga, &reply, None).await.unwrap();
    assert_eq!(applied, Applied::Changed { status: "running" });
    assert!(version_of(&pool, saga).await > before);
}
