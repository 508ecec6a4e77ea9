//! Operator actions through the admin API against a real engine: each is an event in the
//! saga's history, idempotent under `Idempotency-Key`, refused with 409 when the saga's
//! state does not allow it.

use integration_tests::checkout::{request, CheckoutWorld, START_CENTS, START_POINTS};
use integration_tests::eventually;
use saga_admin::{AdminSettings, AdminToken};
use saga_core::SagaStatus;
use saga_engine::history;
use sagas::domains::Domain;
use serde_json::{json, Value};
use uuid::Uuid;

const TOKEN: &str = "operator-token";

/// Status and JSON body of `POST {api}/v1/sagas/{saga}/{action}`.
async fn act(api: &str, saga: Uuid, action: &str, body: Value, key: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{api}/v1/sagas/{saga}/{action}"))
        .bearer_auth(TOKEN)
        .json(&body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn secured_admin(world: &mut CheckoutWorld) -> String {
    world
        .serve_admin(AdminSettings {
            token: Some(AdminToken::new(TOKEN)),
            ..AdminSettings::default()
        })
        .await
}

/// Operator events of a saga: (action, actor, reason).
async fn operator_events(world: &CheckoutWorld, saga: Uuid) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT data->>'action', data->>'actor', data->>'reason' FROM saga_events
         WHERE saga_id = $1 AND event_type = 'OperatorActed' ORDER BY seq",
    )
    .bind(saga)
    .fetch_all(&world.engine_pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn resume_and_resolve_steer_parked_sagas() {
    // The balance service was down and timeouts short: both sagas parked.
    let (first, second) = (request(1_000, 5, "WELCOME"), request(2_000, 7, "SPRING"));
    let mut world = CheckoutWorld::with_parked(true, &[first.clone(), second.clone()]).await;
    let (resumed, resolved) = (world.saga_id(&first), world.saga_id(&second));
    let api = secured_admin(&mut world).await;

    // Resume: the failed cancel goes out again and the saga ends compensated.
    let before: i64 = sqlx::query_scalar("SELECT version FROM sagas WHERE id = $1")
        .bind(resumed)
        .fetch_one(&world.engine_pool)
        .await
        .unwrap();
    let body = json!({ "reason": "balance service is back", "actor": "ana" });
    let (status, accepted) = act(&api, resumed, "resume", body.clone(), Some("k-1")).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["duplicate"], false);
    assert_eq!(accepted["status"], "compensating");
    assert_eq!(
        accepted["version"],
        before + 2,
        "OperatorActed and the cancel"
    );
    let (status, again) = act(&api, resumed, "resume", body, Some("k-1")).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["duplicate"], true);
    world
        .wait_for_status(resumed, SagaStatus::Compensated)
        .await;
    assert_eq!(
        operator_events(&world, resumed).await,
        [(
            "resume".to_string(),
            "ana".to_string(),
            "balance service is back".to_string()
        )]
    );

    // Resolve: the parked saga ends by hand; the list shows it.
    let (status, accepted) = act(
        &api,
        resolved,
        "resolve",
        json!({ "reason": "refunded by hand" }),
        None,
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "resolved_manually");
    world
        .wait_for_status(resolved, SagaStatus::ResolvedManually)
        .await;
    assert_eq!(
        operator_events(&world, resolved).await,
        [(
            "resolve".to_string(),
            "admin-api".to_string(),
            "refunded by hand".to_string()
        )]
    );
    let page: Value = reqwest::Client::new()
        .get(format!("{api}/v1/sagas?status=resolved_manually"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"][0]["id"], resolved.to_string(), "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    // What the state does not allow, and bad requests.
    let reason = json!({ "reason": "try" });
    for (saga, action, status, field) in [
        (resolved, "resume", 409, None),
        (resumed, "compensate", 409, None),
        (resumed, "retry", 409, None),
        (Uuid::new_v4(), "resume", 404, None),
        (resumed, "explode", 400, Some("action")),
    ] {
        let (got, problem) = act(&api, saga, action, reason.clone(), None).await;
        assert_eq!(got, status, "{action}: {problem}");
        assert_eq!(problem["status"], status);
        assert_eq!(problem["field"].as_str(), field, "{problem}");
    }
    let (got, problem) = act(&api, resumed, "resume", json!({}), None).await;
    assert_eq!((got, problem["field"].as_str()), (400, Some("reason")));
    let unauthorized = reqwest::Client::new()
        .post(format!("{api}/v1/sagas/{resumed}/resume"))
        .json(&reason)
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);
    assert_eq!(operator_events(&world, resumed).await.len(), 1);

    // The actions are part of the history the state folds from.
    world.stop_engine().await;
    let report = history::verify(&world.engine_pool).await.unwrap();
    assert!(report.matches(), "{}", report.render());
    assert_eq!(report.checked, 2);
    world.shutdown().await;
}

#[tokio::test]
async fn compensate_aborts_a_running_saga_and_retry_resends_what_it_waits_for() {
    let mut world = CheckoutWorld::new(true).await;
    world.start_participant(Domain::Points).await;
    world.start_participant(Domain::Coupons).await;
    world.start_engine().await;
    let api = secured_admin(&mut world).await;

    // The balance service is down: both sagas wait for their try.
    let aborted_request = world.request(1_000, 5, "WELCOME");
    let retried_request = world.request(2_000, 7, "SPRING");
    let (aborted, retried) = (
        world.saga_id(&aborted_request),
        world.saga_id(&retried_request),
    );
    world.trigger(&aborted_request).await;
    world.trigger(&retried_request).await;
    let pool = world.engine_pool.clone();
    for saga in [aborted, retried] {
        let pool = pool.clone();
        eventually("the saga to wait only for its try", || {
            let pool = pool.clone();
            async move {
                let step: Option<String> =
                    sqlx::query_scalar("SELECT step FROM sagas WHERE id = $1")
                        .bind(saga)
                        .fetch_optional(&pool)
                        .await
                        .unwrap()
                        .flatten();
                let replies: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM saga_events
                     WHERE saga_id = $1 AND event_type = 'ReplyReceived'",
                )
                .bind(saga)
                .fetch_one(&pool)
                .await
                .unwrap();
                (step.as_deref() == Some("reserve_funds") && replies == 2).then_some(())
            }
        })
        .await;
    }

    // Compensate: the running saga undoes everything, the try in flight included.
    let (status, accepted) = act(
        &api,
        aborted,
        "compensate",
        json!({ "reason": "customer cancelled", "actor": "support" }),
        Some("abort-1"),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "compensating");

    // Retry: the try goes out again as attempt 2, with a fresh timeout.
    let (status, accepted) = act(
        &api,
        retried,
        "retry",
        json!({ "reason": "kick it" }),
        Some("retry-1"),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let timer: (String, i32, String) =
        sqlx::query_as("SELECT kind, attempt, phase FROM timers WHERE saga_id = $1")
            .bind(retried)
            .fetch_one(&world.engine_pool)
            .await
            .unwrap();
    assert_eq!(timer, ("timeout".to_string(), 2, "try".to_string()));
    let tries: Vec<i64> = sqlx::query_scalar(
        "SELECT (data->>'attempt')::bigint FROM saga_events WHERE saga_id = $1
         AND event_type = 'CommandSent' AND data->>'phase' = 'try' ORDER BY seq",
    )
    .bind(retried)
    .fetch_all(&world.engine_pool)
    .await
    .unwrap();
    assert_eq!(tries, [1, 2]);

    // The balance service comes back: both copies of the try reach it, one acts.
    world.start_participant(Domain::Balance).await;
    world
        .wait_for_status(aborted, SagaStatus::Compensated)
        .await;
    world.wait_for_status(retried, SagaStatus::Completed).await;
    assert_eq!(world.account().await, (START_CENTS - 2_000, 0, 2_000));
    assert_eq!(world.points().await, START_POINTS - 7);
    assert_eq!(world.coupon_holder("WELCOME").await, None);
    assert_eq!(
        world.coupon_holder("SPRING").await,
        Some(retried_request.order_id)
    );
    let tries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM barrier WHERE saga_id = $1 AND phase = 'try'")
            .bind(retried)
            .fetch_one(&world.pools["balance"])
            .await
            .unwrap();
    assert_eq!(tries, 1);
    let failure: String = sqlx::query_scalar("SELECT state->>'failure' FROM sagas WHERE id = $1")
        .bind(aborted)
        .fetch_one(&world.engine_pool)
        .await
        .unwrap();
    assert_eq!(
        failure,
        "compensation requested by support: customer cancelled"
    );
    world.shutdown().await;
}
