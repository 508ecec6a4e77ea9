//! The admin API against a real engine schema: sagas that completed, compensated and
//! parked, seen through every read route; bad input answered 4xx with a problem body;
//! the token rule.

use std::collections::BTreeMap;

use integration_tests::checkout::{request, CheckoutWorld};
use integration_tests::eventually;
use saga_admin::{AdminSettings, AdminToken};
use saga_core::SagaStatus;
use serde_json::{json, Value};
use uuid::Uuid;

/// Status, content type and JSON body of a request.
async fn call(request: reqwest::RequestBuilder) -> (u16, String, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, content_type, body)
}

async fn get(url: &str) -> (u16, String, Value) {
    call(reqwest::Client::new().get(url)).await
}

/// The ids of a page of `/v1/sagas`.
fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// A world whose engine has ended one saga of each kind: (world, completed, compensated,
/// parked) and the completed one's order id.
async fn world_with_every_outcome() -> (CheckoutWorld, Uuid, Uuid, Uuid, Uuid) {
    // The first saga parks; with every service up, one completes and one compensates.
    let stranded = request(1_000, 5, "WELCOME");
    let world = CheckoutWorld::with_parked(true, std::slice::from_ref(&stranded)).await;
    let parked = world.saga_id(&stranded);
    let happy = world.request(1_500, 5, "SPRING");
    let poor = world.request(1_000_000, 5, "TAKEN");
    world.trigger(&happy).await;
    world.trigger(&poor).await;
    let (completed, compensated) = (world.saga_id(&happy), world.saga_id(&poor));
    world
        .wait_for_status(completed, SagaStatus::Completed)
        .await;
    world
        .wait_for_status(compensated, SagaStatus::Compensated)
        .await;
    (world, completed, compensated, parked, happy.order_id)
}

#[tokio::test]
async fn every_read_route_shows_what_the_engine_stored() {
    let (mut world, completed, compensated, parked, order_id) = world_with_every_outcome().await;
    let api = world.serve_admin(AdminSettings::default()).await;

    // The list: newest first, filters, keyset pages, the capped limit.
    let (status, _, page) = get(&format!("{api}/v1/sagas")).await;
    assert_eq!(status, 200, "{page}");
    let all = ids(&page);
    assert_eq!(all.len(), 3, "{page}");
    assert_eq!(all[2], parked.to_string(), "the parked saga is the oldest");
    assert!(page["next_cursor"].is_null());
    let only = |query: &str| {
        let url = format!("{api}/v1/sagas?{query}");
        let query = query.to_string();
        async move {
            let (status, _, page) = get(&url).await;
            assert_eq!(status, 200, "{query}: {page}");
            ids(&page)
        }
    };
    assert_eq!(only("status=parked").await, [parked.to_string()]);
    assert_eq!(only("status=compensated").await, [compensated.to_string()]);
    assert_eq!(only("parked=true").await, [parked.to_string()]);
    assert_eq!(only("parked=false").await.len(), 2);
    assert_eq!(
        only("status=completed,compensated").await.len(),
        2,
        "two statuses at once"
    );
    assert_eq!(only("definition=checkout&version=1").await.len(), 3);
    assert!(only("definition=refund").await.is_empty());
    assert!(only("version=2").await.is_empty());
    assert!(only("step=no_such_step").await.is_empty());
    let at_steps: Vec<(Uuid, Option<String>)> = sqlx::query_as("SELECT id, step FROM sagas")
        .fetch_all(&world.engine_pool)
        .await
        .unwrap();
    for (_, step) in &at_steps {
        let Some(step) = step else { continue };
        let mut expected: Vec<String> = at_steps
            .iter()
            .filter(|(_, s)| s.as_ref() == Some(step))
            .map(|(id, _)| id.to_string())
            .collect();
        expected.sort();
        let mut found = only(&format!("step={step}")).await;
        found.sort();
        assert_eq!(found, expected, "step={step}");
    }
    assert!(only("created_after=2999-01-01T00:00:00Z").await.is_empty());
    assert_eq!(only("created_before=2999-01-01T00:00:00Z").await.len(), 3);
    assert_eq!(only("updated_after=2000-01-01T00:00:00Z").await.len(), 3);
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{api}/v1/sagas?limit=1&cursor={c}"),
            None => format!("{api}/v1/sagas?limit=1"),
        };
        let (status, _, page) = get(&url).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["limit"], 1);
        paged.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(paged.len() <= 3, "pagination does not end");
    }
    assert_eq!(paged, all, "pages in the same stable order, nothing twice");
    let (_, _, page) = get(&format!("{api}/v1/sagas?limit=100000")).await;
    assert_eq!(page["limit"], 500);

    // One saga: projection, steps, timers.
    let (status, _, saga) = get(&format!("{api}/v1/sagas/{completed}")).await;
    assert_eq!(status, 200, "{saga}");
    assert_eq!(saga["status"], "completed");
    assert_eq!(saga["definition"], "checkout");
    assert_eq!(saga["input"]["order_id"], order_id.to_string());
    assert_eq!(saga["trace_id"].as_str().unwrap().len(), 32);
    let events = world.events(completed).await;
    assert_eq!(saga["version"], events.len());
    let steps: BTreeMap<String, Value> = saga["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s.clone()))
        .collect();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps["reserve_funds"]["kind"], "tcc");
    assert_eq!(steps["reserve_funds"]["participant"], "balance");
    assert_eq!(steps["reserve_funds"]["forward"]["state"], "succeeded");
    assert_eq!(steps["reserve_funds"]["settle"]["state"], "succeeded");
    assert_eq!(steps["reserve_funds"]["commands_sent"], 2);
    assert_eq!(steps["deduct_points"]["kind"], "compensable");
    assert_eq!(steps["deduct_points"]["settle"]["state"], "idle");
    assert!(saga["timers"].as_array().unwrap().is_empty());

    let (_, _, stuck) = get(&format!("{api}/v1/sagas/{parked}")).await;
    assert_eq!(stuck["status"], "parked");
    assert!(stuck["parked_reason"]
        .as_str()
        .unwrap()
        .contains("reserve_funds"));
    let funds = &stuck["steps"][0];
    assert_eq!(funds["forward"]["state"], "gave_up");
    assert_eq!(funds["settle"]["state"], "gave_up");
    assert!(funds["last_error"].as_str().unwrap().contains("cancel"));

    // The history: every event, each command with its reply.
    let (status, _, history) = get(&format!("{api}/v1/sagas/{completed}/history")).await;
    assert_eq!(status, 200, "{history}");
    let types: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, events.iter().map(String::as_str).collect::<Vec<_>>());
    let exchanges: Vec<(String, String, String)> = history["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["step"].as_str().unwrap().to_string(),
                x["phase"].as_str().unwrap().to_string(),
                x["outcome"].as_str().unwrap_or("none").to_string(),
            )
        })
        .collect();
    for expected in [
        ("reserve_funds", "try", "ok"),
        ("deduct_points", "action", "ok"),
        ("redeem_coupon", "action", "ok"),
        ("reserve_funds", "confirm", "ok"),
    ] {
        let expected = (
            expected.0.to_string(),
            expected.1.to_string(),
            expected.2.to_string(),
        );
        assert!(
            exchanges.contains(&expected),
            "{expected:?} in {exchanges:?}"
        );
    }
    assert_eq!(exchanges.len(), 4, "{exchanges:?}");
    let (_, _, story) = get(&format!("{api}/v1/sagas/{parked}/history")).await;
    let unanswered: Vec<&Value> = story["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["step"] == "reserve_funds")
        .collect();
    assert_eq!(unanswered.len(), 2, "try and cancel: {story}");
    assert!(unanswered
        .iter()
        .all(|x| x["timed_out"] == true && x["outcome"].is_null()));

    // Lookup by business key.
    let (status, _, found) = get(&format!("{api}/v1/definitions/checkout/sagas/{order_id}")).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["id"], completed.to_string());
    let (status, kind, missing) = get(&format!(
        "{api}/v1/definitions/checkout/sagas/{}",
        Uuid::new_v4()
    ))
    .await;
    assert_eq!((status, kind.as_str()), (404, "application/problem+json"));
    assert_eq!(missing["status"], 404);
    let (status, _, _) = get(&format!("{api}/v1/definitions/refund/sagas/{order_id}")).await;
    assert_eq!(status, 404);

    // Definitions and stats.
    let (status, _, definitions) = get(&format!("{api}/v1/definitions")).await;
    assert_eq!(status, 200);
    let checkout = &definitions[0];
    assert_eq!(definitions.as_array().unwrap().len(), 1);
    assert_eq!(
        (&checkout["name"], &checkout["version"], &checkout["mode"]),
        (
            &Value::from("checkout"),
            &Value::from(1),
            &Value::from("parallel")
        )
    );
    assert_eq!(checkout["trigger_topic"], "checkout.requested");
    assert_eq!(checkout["steps"].as_array().unwrap().len(), 3);
    assert_eq!(checkout["steps"][0]["timeout_ms"], 15_000);
    assert_eq!(checkout["steps"][0]["retry"]["max_attempts"], 5);
    assert_eq!(checkout["steps"][0]["settle_retry"]["max_attempts"], 20);

    let pool = world.engine_pool.clone();
    eventually("the outbox to drain", || async {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        (rows == 0).then_some(())
    })
    .await;
    let (status, _, stats) = get(&format!("{api}/v1/stats")).await;
    assert_eq!(status, 200, "{stats}");
    let counts: BTreeMap<String, i64> = stats["sagas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["definition"], "checkout");
            (
                c["status"].as_str().unwrap().to_string(),
                c["count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        BTreeMap::from([
            ("completed".into(), 1),
            ("compensated".into(), 1),
            ("parked".into(), 1)
        ])
    );
    assert_eq!(stats["parked"], 1);
    assert!(stats["oldest_running"].is_null());
    assert_eq!(stats["outbox"]["backlog"], 0);
    assert_eq!(stats["dead_letters"], 0);

    // Health and the document.
    let (status, _, alive) = get(&format!("{api}/healthz")).await;
    assert_eq!((status, &alive["status"]), (200, &Value::from("ok")));
    let ready = eventually("the engine to be ready", || async {
        let (status, _, ready) = get(&format!("{api}/readyz")).await;
        (status == 200).then_some(ready)
    })
    .await;
    let names: Vec<&str> = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["database", "migrations", "broker", "engine"]);
    let engine = ready["checks"][3]["detail"].as_str().unwrap().to_string();
    for part in ["triggers", "replies", "outbox relay", "timer poller"] {
        assert!(engine.contains(part), "{engine}");
    }
    // An engine that stopped is not ready, and the answer says which parts are down.
    world.stop_engine().await;
    let (status, _, down) = get(&format!("{api}/readyz")).await;
    assert_eq!(status, 503, "{down}");
    let detail = down["checks"][3]["detail"].as_str().unwrap();
    assert!(detail.contains("triggers is not running"), "{detail}");
    let (status, _, document) = get(&format!("{api}/openapi.json")).await;
    assert_eq!(status, 200);
    for path in [
        "/v1/sagas",
        "/v1/sagas/{id}",
        "/v1/sagas/{id}/history",
        "/v1/definitions",
        "/v1/definitions/{name}/sagas/{key}",
        "/v1/stats",
        "/healthz",
        "/readyz",
        "/v1/sagas/{id}/{action}",
        "/v1/triggers/{definition}",
        "/v1/dead-letters",
        "/v1/dead-letters/{id}",
        "/v1/dead-letters/{id}/replay",
        "/",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(document["paths"][path].is_object(), "{path} documented");
    }
    world.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_a_4xx_problem_naming_the_field() {
    let mut world = CheckoutWorld::new(true).await;
    let api = world.serve_admin(AdminSettings::default()).await;
    for (path, status, field) in [
        ("/v1/sagas?status=sleeping", 400, Some("status")),
        ("/v1/sagas?limit=0", 400, Some("limit")),
        ("/v1/sagas?limit=many", 400, Some("limit")),
        ("/v1/sagas?cursor=xyz", 400, Some("cursor")),
        (
            "/v1/sagas?created_after=yesterday",
            400,
            Some("created_after"),
        ),
        ("/v1/sagas?colour=red", 400, Some("colour")),
        ("/v1/sagas?status=running&parked=true", 400, Some("parked")),
        // What Postgres cannot take is refused before it gets there.
        ("/v1/sagas?definition=%00", 400, Some("definition")),
        ("/v1/sagas?step=a%00b", 400, Some("step")),
        (
            "/v1/sagas?cursor=-300000000000000000_00000000000000000000000000000000",
            400,
            Some("cursor"),
        ),
        ("/v1/sagas/not-a-uuid", 400, Some("id")),
        ("/v1/sagas/not-a-uuid/history", 400, Some("id")),
        ("/v1/sagas/00000000-0000-0000-0000-000000000000", 404, None),
        (
            "/v1/sagas/00000000-0000-0000-0000-000000000000/history",
            404,
            None,
        ),
        ("/v1/no-such-route", 404, None),
    ] {
        let (got, content_type, body) = get(&format!("{api}{path}")).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(content_type, "application/problem+json", "{path}");
        assert_eq!(body["status"], status, "{path}: {body}");
        assert!(!body["detail"].as_str().unwrap().is_empty(), "{path}");
        assert_eq!(body["field"].as_str(), field, "{path}: {body}");
    }
    // A NUL in a body's text is refused with the field named, on every route that
    // records operator words.
    let secured = world
        .serve_admin(AdminSettings {
            token: Some(AdminToken::new("t")),
            ..AdminSettings::default()
        })
        .await;
    let client = reqwest::Client::new();
    let saga = Uuid::new_v4();
    for (method, path) in [
        ("POST", format!("/v1/sagas/{saga}/resume")),
        ("POST", "/v1/dead-letters/1/replay".to_string()),
        ("DELETE", "/v1/dead-letters/1".to_string()),
    ] {
        for (body, field) in [
            (json!({ "reason": "fixed\u{0}" }), "reason"),
            (json!({ "reason": "fixed", "actor": "\u{0}ana" }), "actor"),
        ] {
            let request = client
                .request(method.parse().unwrap(), format!("{secured}{path}"))
                .bearer_auth("t")
                .json(&body);
            let (status, content_type, problem) = call(request).await;
            assert_eq!(status, 400, "{method} {path} {body}: {problem}");
            assert_eq!(content_type, "application/problem+json");
            assert_eq!(problem["field"], field, "{method} {path}: {problem}");
        }
    }
    // A body over the limit (64 KiB by default) is refused before any route reads it.
    let (status, content_type, problem) = call(
        client
            .post(format!("{secured}/v1/sagas/{saga}/resume"))
            .bearer_auth("t")
            .json(&json!({ "reason": "x".repeat(64 * 1024) })),
    )
    .await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(problem["status"], 413);

    // Without a token the API only reads: every mutation is forbidden, whatever its body.
    let order = json!({
        "order_id": Uuid::new_v4(), "user_id": 1, "amount_cents": 100,
        "points": 0, "coupon_code": "WELCOME",
    });
    let reason = json!({ "reason": "because" });
    for (method, path, body) in [
        ("POST", format!("/v1/sagas/{saga}/resume"), &reason),
        ("POST", "/v1/triggers/checkout".to_string(), &order),
        ("POST", "/v1/dead-letters/1/replay".to_string(), &reason),
        ("DELETE", "/v1/dead-letters/1".to_string(), &reason),
    ] {
        let request = client
            .request(method.parse().unwrap(), format!("{api}{path}"))
            .json(body);
        let (status, content_type, problem) = call(request).await;
        assert_eq!(status, 403, "{method} {path}: {problem}");
        assert_eq!(content_type, "application/problem+json", "{method} {path}");
    }
    // An unmigrated database is not ready, and says why.
    let empty = integration_tests::fresh_database().await;
    world.engine_pool = sqlx::PgPool::connect(&empty).await.unwrap();
    let unready = world.serve_admin(AdminSettings::default()).await;
    let (status, _, ready) = get(&format!("{unready}/readyz")).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["ready"], false);
    let checks: BTreeMap<String, bool> = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["ok"] == true))
        .collect();
    assert_eq!(
        checks,
        BTreeMap::from([
            ("database".into(), true),
            ("migrations".into(), false),
            ("broker".into(), true)
        ])
    );
    // The gauges read from the database cannot be refreshed; the rest is served anyway.
    let response = client
        .get(format!("{unready}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    world.shutdown().await;
}

#[tokio::test]
async fn with_a_token_every_v1_route_needs_it() {
    let mut world = CheckoutWorld::new(true).await;
    let secured = AdminSettings {
        token: Some(AdminToken::new("let-me-in")),
        ..AdminSettings::default()
    };
    let api = world.serve_admin(secured).await;
    let client = reqwest::Client::new();
    let url = format!("{api}/v1/sagas");
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let (status, _, _) = call(client.get(&url).bearer_auth("let-me-out")).await;
    assert_eq!(status, 401);
    let (status, _, page) = call(client.get(&url).bearer_auth("let-me-in")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"], Value::Array(vec![]));
    // Every documented /v1 route and method, asked without the token: 401, before the
    // route reads its path or body.
    let (_, _, document) = get(&format!("{api}/openapi.json")).await;
    let mut asked = Vec::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let concrete: String = path
            .split('/')
            .map(|part| if part.starts_with('{') { "1" } else { part })
            .collect::<Vec<_>>()
            .join("/");
        for method in operations.as_object().unwrap().keys() {
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let request = client
                .request(method.clone(), format!("{api}{concrete}"))
                .json(&json!({ "reason": "r" }));
            let (status, content_type, problem) = call(request).await;
            assert_eq!(status, 401, "{method} {path}: {problem}");
            assert_eq!(content_type, "application/problem+json", "{method} {path}");
            asked.push(format!("{method} {path}"));
        }
    }
    asked.sort();
    assert_eq!(
        asked,
        [
            "DELETE /v1/dead-letters/{id}",
            "GET /v1/dead-letters",
            "GET /v1/definitions",
            "GET /v1/definitions/{name}/sagas/{key}",
            "GET /v1/sagas",
            "GET /v1/sagas/{id}",
            "GET /v1/sagas/{id}/history",
            "GET /v1/stats",
            "POST /v1/dead-letters/{id}/replay",
            "POST /v1/sagas/{id}/{action}",
            "POST /v1/triggers/{definition}",
        ]
    );
    // Health stays open for probes.
    let (status, _, _) = get(&format!("{api}/healthz")).await;
    assert_eq!(status, 200);

    // Without a token, only a loopback address is served.
    let state = world.admin_state(&AdminSettings::default());
    let open = AdminSettings {
        addr: "0.0.0.0:0".parse().unwrap(),
        ..AdminSettings::default()
    };
    let error = saga_admin::AdminServer::bind(&open, state)
        .await
        .err()
        .expect("a non-loopback address without a token is refused");
    assert!(error.to_string().contains("without a token"), "{error}");
    world.shutdown().await;
}

#[tokio::test]
async fn a_trigger_posted_over_http_starts_its_saga() {
    let mut world = CheckoutWorld::running(true).await;
    let api = world
        .serve_admin(AdminSettings {
            token: Some(AdminToken::new("trigger-token")),
            ..AdminSettings::default()
        })
        .await;
    let client = reqwest::Client::new();
    let post = |definition: &str, body: Vec<u8>| {
        call(
            client
                .post(format!("{api}/v1/triggers/{definition}"))
                .bearer_auth("trigger-token")
                .header("content-type", "application/json")
                .body(body),
        )
    };
    let order = world.request(1_200, 5, "WELCOME");
    let input = serde_json::to_vec(&order).unwrap();

    let (status, _, published) = post("checkout", input.clone()).await;
    assert_eq!(status, 202, "{published}");
    let saga = world.saga_id(&order);
    assert_eq!(published["saga_id"], saga.to_string());
    assert_eq!(published["key"], order.order_id.to_string());
    assert_eq!(
        published["topic"],
        world.topics().trigger(sagas::checkout::TRIGGER_TOPIC)
    );
    world.wait_for_status(saga, SagaStatus::Completed).await;

    let (status, content_type, problem) = post("refund", input).await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(content_type, "application/problem+json");
    for body in [&b"not json"[..], br#"{"order_id": 5}"#, br#"[]"#] {
        let (status, content_type, problem) = post("checkout", body.to_vec()).await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(content_type, "application/problem+json");
        assert_eq!(problem["field"], "body", "{problem}");
    }
    world.shutdown().await;
}

#[tokio::test]
async fn dead_letters_are_kept_listed_replayed_and_discarded() {
    let mut world = CheckoutWorld::running(true).await;
    let api = world
        .serve_admin(AdminSettings {
            token: Some(AdminToken::new("dlq-token")),
            ..AdminSettings::default()
        })
        .await;
    let client = reqwest::Client::new();
    let listed = |query: &'static str| {
        let (client, url) = (client.clone(), format!("{api}/v1/dead-letters{query}"));
        async move {
            let page: Value = client
                .get(url)
                .bearer_auth("dlq-token")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            page["items"].as_array().unwrap().clone()
        }
    };

    // Two triggers the engine cannot take: not JSON, and one naming an unknown definition.
    world.publish_raw(b"not json at all", "k-1", &[]).await;
    let envelope = serde_json::to_vec(&schemas::Envelope::new(
        schemas::MessageKind::Trigger,
        world.request(100, 0, "WELCOME"),
    ))
    .unwrap();
    world
        .publish_raw(&envelope, "k-2", &[("saga.definition", "refund")])
        .await;
    let letters = eventually("both dead letters to be kept", || async {
        let items = listed("").await;
        (items.len() == 2).then_some(items)
    })
    .await;
    // Different keys go to different partitions, handled in parallel: no order between them.
    let by_key = |key: &str| letters.iter().find(|l| l["key"] == key).unwrap();
    let (unknown, garbage) = (by_key("k-2"), by_key("k-1"));
    let trigger_topic = world.topics().trigger(sagas::checkout::TRIGGER_TOPIC);
    assert_eq!(garbage["topic"], trigger_topic.as_str());
    assert_eq!(garbage["key"], "k-1");
    assert_eq!(garbage["payload"], "not json at all");
    assert!(garbage["error"]
        .as_str()
        .unwrap()
        .starts_with("not a valid envelope"));
    assert_eq!(unknown["headers"]["saga.definition"], "refund");
    assert!(unknown["error"].as_str().unwrap().contains("`refund`"));
    assert_eq!(unknown["truncated"], false);

    // A replay that cannot be recorded is not published either.
    let unknown_id = unknown["id"].as_i64().unwrap();
    let replay = |reason: &'static str| {
        client
            .post(format!("{api}/v1/dead-letters/{unknown_id}/replay"))
            .bearer_auth("dlq-token")
            .json(&json!({ "reason": reason, "actor": "ana" }))
            .send()
    };
    let audit_table = |statement: &'static str| {
        let pool = world.engine_pool.clone();
        async move { sqlx::query(statement).execute(&pool).await.unwrap() }
    };
    audit_table(
        "ALTER TABLE dead_letter_actions ADD CONSTRAINT refuse_all CHECK (false) NOT VALID",
    )
    .await;
    assert_eq!(replay("not recorded").await.unwrap().status().as_u16(), 503);
    audit_table("ALTER TABLE dead_letter_actions DROP CONSTRAINT refuse_all").await;

    // Replay: the message goes back to its topic, marked, and (still unknown) returns.
    let response = replay("refund is deployed now").await.unwrap();
    assert_eq!(response.status().as_u16(), 202);
    // A message after it on its partition: once that is dead-lettered, so is every
    // replay published before.
    world.publish_raw(b"last of k-2", "k-2", &[]).await;
    let again = eventually("the replayed message to be dead-lettered again", || async {
        let items = listed("").await;
        items
            .iter()
            .any(|l| l["payload"] == "last of k-2")
            .then_some(items)
    })
    .await;
    let replay_of = Value::from(unknown_id.to_string());
    let replayed: Vec<&Value> = again
        .iter()
        .filter(|l| l["headers"]["saga.replay_of"] == replay_of)
        .collect();
    let offsets: Vec<&Value> = replayed.iter().map(|l| &l["offset"]).collect();
    assert_eq!(
        replayed.len(),
        1,
        "one replay recorded, yet published at offsets {offsets:?}"
    );
    assert_eq!(replayed[0]["key"], "k-2");
    assert_eq!(replayed[0]["payload"], unknown["payload"]);

    // Discard: gone from the list, kept under discarded=true, recorded with its reason.
    let garbage_id = garbage["id"].as_i64().unwrap();
    let discard = || {
        client
            .delete(format!("{api}/v1/dead-letters/{garbage_id}"))
            .bearer_auth("dlq-token")
            .json(&json!({ "reason": "test noise" }))
            .send()
    };
    let response = discard().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["discarded_at"].is_string());
    assert!(listed("")
        .await
        .iter()
        .all(|l| l["id"].as_i64() != Some(garbage_id)));
    let discarded = listed("?discarded=true").await;
    assert_eq!(discarded.len(), 1);
    assert_eq!(discarded[0]["id"], garbage_id);
    let audit: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT dead_letter_id, action, actor, reason FROM dead_letter_actions ORDER BY id",
    )
    .fetch_all(&world.engine_pool)
    .await
    .unwrap();
    assert_eq!(
        audit,
        [
            (
                unknown_id,
                "replay".into(),
                "ana".into(),
                "refund is deployed now".into()
            ),
            (
                garbage_id,
                "discard".into(),
                "admin-api".into(),
                "test noise".into()
            ),
        ]
    );
    let (status, _, stats) = call(
        client
            .get(format!("{api}/v1/stats"))
            .bearer_auth("dlq-token"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(stats["dead_letters"], 3, "four kept, one discarded");

    // What cannot be done.
    assert_eq!(discard().await.unwrap().status().as_u16(), 409);
    for (url, status) in [
        (format!("{api}/v1/dead-letters/{garbage_id}/replay"), 409),
        (format!("{api}/v1/dead-letters/999999/replay"), 404),
        (format!("{api}/v1/dead-letters/abc/replay"), 400),
    ] {
        let (got, _, problem) = call(
            client
                .post(&url)
                .bearer_auth("dlq-token")
                .json(&json!({ "reason": "again" })),
        )
        .await;
        assert_eq!(got, status, "{url}: {problem}");
    }
    world.shutdown().await;
}
