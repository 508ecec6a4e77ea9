//! `sagas admin …` against a real admin API: start a checkout by hand, find it by order id,
//! see its timeline, and steer it.

use clap::Parser;
use integration_tests::checkout::{CheckoutWorld, USER};
use integration_tests::eventually;
use saga_admin::{AdminSettings, AdminToken};
use saga_core::SagaStatus;
use sagas::admin_cli::AdminArgs;
use serde_json::{json, Value};
use uuid::Uuid;

const TOKEN: &str = "cli-token";

async fn admin(api: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut argv = vec!["admin", "--admin-url", api, "--token", TOKEN];
    argv.extend_from_slice(args);
    let output = AdminArgs::try_parse_from(argv)?.execute(None).await?;
    assert_eq!(output.code, 0);
    Ok(output.text)
}

#[tokio::test]
async fn an_operator_starts_finds_and_inspects_a_checkout_from_the_command_line() {
    let mut world = CheckoutWorld::running(true).await;
    let api = world
        .serve_admin(AdminSettings {
            token: Some(AdminToken::new(TOKEN)),
            ..AdminSettings::default()
        })
        .await;

    let order_id = Uuid::new_v4();
    let input = json!({
        "order_id": order_id, "user_id": USER, "amount_cents": 1_250,
        "points": 10, "coupon_code": "WELCOME",
    })
    .to_string();
    let started = admin(&api, &["start", "checkout", &input]).await.unwrap();
    let saga = world
        .deployment()
        .checkout()
        .unwrap()
        .saga_id(&order_id.to_string());
    assert!(
        started.starts_with(&format!(
            "published the trigger of saga {saga} (key {order_id})"
        )),
        "{started}"
    );
    world.wait_for_status(saga, SagaStatus::Completed).await;

    // Found by order id: the header, the steps and the per-step timeline.
    let shown = admin(&api, &["find", "checkout", &order_id.to_string()])
        .await
        .unwrap();
    assert!(shown.contains(&format!("saga        {saga}")), "{shown}");
    assert!(shown.contains("status      completed"), "{shown}");
    let timeline = &shown[shown.find("timeline").expect("a timeline")..];
    for step in ["reserve_funds", "deduct_points", "redeem_coupon"] {
        assert!(timeline.contains(&format!("\n  {step}\n")), "{timeline}");
    }
    assert!(
        timeline
            .lines()
            .any(|l| l.contains("confirm") && l.contains("ok at +")),
        "{timeline}"
    );
    assert_eq!(
        admin(&api, &["show", &saga.to_string()]).await.unwrap(),
        shown
    );

    // Lists and figures, as tables and as JSON.
    let listed = admin(&api, &["list", "--status", "completed"])
        .await
        .unwrap();
    assert!(
        listed
            .lines()
            .nth(1)
            .unwrap()
            .starts_with(&saga.to_string()),
        "{listed}"
    );
    assert!(listed.ends_with("1 saga(s)"), "{listed}");
    let json_list: Value =
        serde_json::from_str(&admin(&api, &["--output", "json", "list"]).await.unwrap()).unwrap();
    assert_eq!(json_list["items"][0]["id"], saga.to_string());
    let stats = admin(&api, &["stats"]).await.unwrap();
    assert!(
        stats
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["checkout", "completed", "1"]),
        "{stats}"
    );
    // The time filters reach the API, and what it refuses says which one.
    let future = "2999-01-01T00:00:00Z";
    let none = admin(&api, &["list", "--created-after", future])
        .await
        .unwrap();
    assert!(none.ends_with("0 saga(s)"), "{none}");
    let window = [
        "list",
        "--created-before",
        future,
        "--updated-after",
        "2000-01-01T00:00:00Z",
        "--updated-before",
        future,
    ];
    let within = admin(&api, &window).await.unwrap();
    assert!(within.ends_with("1 saga(s)"), "{within}");
    let refused = admin(&api, &["list", "--updated-before", "yesterday"])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("400") && refused.contains("updated_before"),
        "{refused}"
    );
    let definitions = admin(&api, &["definitions"]).await.unwrap();
    assert!(
        definitions.starts_with("checkout@1 (parallel; trigger topic checkout.requested)"),
        "{definitions}"
    );
    let history = admin(&api, &["history", &saga.to_string()]).await.unwrap();
    assert!(
        history.lines().nth(1).unwrap().contains("Started"),
        "{history}"
    );
    assert!(
        history.lines().last().unwrap().contains("Completed"),
        "{history}"
    );

    // What the API refuses comes back as one clear error.
    let refused = admin(&api, &["resolve", &saga.to_string(), "--reason", "done"])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("409") && refused.contains("cannot resolve a saga that is completed"),
        "{refused}"
    );
    let bad_input = admin(&api, &["start", "checkout", r#"{"order_id": 5}"#])
        .await
        .unwrap_err()
        .to_string();
    assert!(bad_input.contains("400"), "{bad_input}");
    // A key holding `/`, `?` and `#` reaches the API whole, as one path segment.
    let odd = admin(&api, &["find", "checkout", "a/b?c#d"])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        odd.contains("404") && odd.contains("for key `a/b?c#d`"),
        "{odd}"
    );

    // Dead letters: listed a page at a time, then one discarded.
    world.publish_raw(b"garbage", "k-9", &[]).await;
    world.publish_raw(b"more garbage", "k-10", &[]).await;
    let listing = eventually("both dead letters to be listed", || {
        let api = api.clone();
        async move {
            let text = admin(&api, &["dead-letters", "list"]).await.unwrap();
            (text.matches("not a valid envelope").count() == 2).then_some(text)
        }
    })
    .await;
    let id_of = |row: &str| {
        row.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let first_id = |page: &str| id_of(page.lines().nth(1).unwrap_or_default());
    let first = admin(&api, &["dead-letters", "list", "--limit", "1"])
        .await
        .unwrap();
    let cursor = first
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("next page: --cursor "))
        .unwrap_or_else(|| panic!("no next page: {first}"));
    let second = admin(
        &api,
        &["dead-letters", "list", "--limit", "1", "--cursor", cursor],
    )
    .await
    .unwrap();
    assert!(!second.contains("next page"), "{second}");
    let mut paged = [first_id(&first), first_id(&second)];
    paged.sort();
    let mut listed: Vec<String> = listing.lines().skip(1).map(id_of).collect();
    listed.sort();
    assert_eq!(paged[..], listed[..], "{first}\n{second}\n{listing}");
    let row = listing.lines().find(|l| l.contains("k-9")).unwrap();
    let id = id_of(row);
    let discarded = admin(&api, &["dead-letters", "discard", &id, "--reason", "noise"])
        .await
        .unwrap();
    assert_eq!(discarded, format!("dead letter {id} discarded"));
    let listing = admin(&api, &["dead-letters", "list", "--discarded"])
        .await
        .unwrap();
    assert!(
        listing.lines().nth(1).unwrap().starts_with(&id),
        "{listing}"
    );
    world.shutdown().await;
}
