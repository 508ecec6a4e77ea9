//! `GET /metrics` after real sagas: what happened shows up under Prometheus names. This
//! test has its process (and so the global metrics recorder) to itself.

use integration_tests::checkout::CheckoutWorld;
use integration_tests::eventually;
use saga_admin::AdminSettings;
use saga_core::SagaStatus;

/// The value of the sample of `name` carrying every label of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            let (series, _) = line.rsplit_once(' ').unwrap_or_default();
            let metric = series.split('{').next().unwrap_or_default();
            metric == name
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit_once(' ')?.1.parse().ok())
}

#[tokio::test]
async fn sagas_commands_transitions_and_dead_letters_are_counted() {
    // Installed before anything records.
    saga_admin::metrics::handle();
    let mut world = CheckoutWorld::running(true).await;
    let api = world.serve_admin(AdminSettings::default()).await;
    let happy = world.request(1_000, 5, "WELCOME");
    let poor = world.request(1_000_000, 5, "SPRING");
    world.trigger(&happy).await;
    world.trigger(&poor).await;
    world.publish_raw(b"not json", "k", &[]).await;
    world
        .wait_for_status(world.saga_id(&happy), SagaStatus::Completed)
        .await;
    world
        .wait_for_status(world.saga_id(&poor), SagaStatus::Compensated)
        .await;
    let url = format!("{api}/metrics");
    let text = eventually(
        "the dead letter counted and every message consumed",
        || async {
            let response = reqwest::get(&url).await.unwrap();
            assert_eq!(response.status().as_u16(), 200);
            let text = response.text().await.unwrap();
            let lags: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("saga_consumer_lag{"))
                .collect();
            let consumed = lags.len() >= 2 && lags.iter().all(|l| l.ends_with(" 0"));
            let counted = sample(
                &text,
                "saga_dead_letters_total",
                &[("reason", "invalid_envelope")],
            )
            .is_some();
            (counted && consumed).then_some(text)
        },
    )
    .await;

    let checkout = [("definition", "checkout")];
    assert_eq!(sample(&text, "saga_started_total", &checkout), Some(2.0));
    for outcome in ["completed", "compensated"] {
        let labels = [("definition", "checkout"), ("outcome", outcome)];
        assert_eq!(
            sample(&text, "saga_ended_total", &labels),
            Some(1.0),
            "{outcome}"
        );
    }
    assert_eq!(
        sample(&text, "saga_duration_seconds_count", &checkout),
        Some(2.0)
    );
    let tries = [("participant", "balance"), ("phase", "try")];
    assert_eq!(sample(&text, "saga_commands_sent_total", &tries), Some(2.0));
    let starts = [("input", "start"), ("result", "changed")];
    assert_eq!(sample(&text, "saga_transitions_total", &starts), Some(2.0));
    assert!(sample(&text, "saga_transition_seconds_bucket", &[("le", "+Inf")]).unwrap() >= 2.0);
    assert_eq!(
        sample(
            &text,
            "saga_dead_letters_total",
            &[("reason", "invalid_envelope")]
        ),
        Some(1.0)
    );
    assert!(sample(&text, "saga_outbox_published_total", &[]).unwrap() >= 10.0);
    let completed = [("definition", "checkout"), ("status", "completed")];
    assert_eq!(sample(&text, "saga_sagas", &completed), Some(1.0));
    assert_eq!(sample(&text, "saga_parked", &[]), Some(0.0));
    assert_eq!(sample(&text, "saga_dead_letters_open", &[]), Some(1.0));
    let balance_tries = [("phase", "try"), ("outcome", "ok")];
    assert!(
        sample(&text, "saga_participant_commands_total", &balance_tries).unwrap() >= 1.0,
        "{text}"
    );
    assert!(text.contains("# TYPE saga_transition_seconds histogram"));
    let balance_steps = [("participant", "balance"), ("phase", "try")];
    assert_eq!(
        sample(&text, "saga_step_seconds_count", &balance_steps),
        Some(2.0),
        "both tries answered"
    );
    // The lag gauge covers both engine groups.
    for group in ["saga-engine.triggers", "saga-engine.replies"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("saga_consumer_lag{") && l.contains(group)),
            "{group}"
        );
    }
    world.shutdown().await;
}
