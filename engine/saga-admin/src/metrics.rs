//! `GET /metrics`: the process's metrics as Prometheus text, with the gauges that come
//! from the database refreshed at each scrape.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use metrics::gauge;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use saga_engine::metrics as names;

use crate::server::AdminState;
use crate::store;

/// Buckets of every `_seconds` histogram: 1 ms to 60 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets of the command attempt histogram.
const ATTEMPT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 5.0, 10.0, 20.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use (one per process).
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::COMMAND_ATTEMPT.into()),
                        ATTEMPT_BUCKETS,
                    )
                })
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was installed already; /metrics shows only this one's"
                );
            }
            names::describe();
            saga_participant::metrics::describe();
            handle
        })
        .clone()
}

/// Prometheus text of this process. When the database does not answer, the gauges read
/// from it keep their last values and the rest is served all the same: a scrape must not
/// lose the process's own figures to a database outage.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
pub async fn serve(State(state): State<AdminState>) -> impl IntoResponse {
    if let Err(error) = refresh(&state).await {
        tracing::warn!(%error, "/metrics: the gauges read from the database were not refreshed");
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Sets the gauges whose truth is in the database.
async fn refresh(state: &AdminState) -> sqlx::Result<()> {
    let counts = store::status_counts(&state.pool).await?;
    let parked: i64 = counts
        .iter()
        .filter(|c| c.status == saga_core::SagaStatus::Parked)
        .map(|c| c.count)
        .sum();
    for count in counts {
        gauge!(names::SAGAS, "definition" => count.definition, "status" => count.status.as_str())
            .set(count.count as f64);
    }
    gauge!(names::PARKED).set(parked as f64);
    let outbox = store::outbox(&state.pool).await?;
    gauge!(names::OUTBOX_BACKLOG).set(outbox.backlog as f64);
    gauge!(names::OUTBOX_OLDEST).set(outbox.oldest_age_seconds.unwrap_or(0.0));
    gauge!(names::TIMERS_DUE).set(store::timers_due(&state.pool).await? as f64);
    gauge!(names::DEAD_LETTERS_OPEN).set(store::open_dead_letters(&state.pool).await? as f64);
    for (group, topics) in &state.consumer_groups {
        for topic in topics {
            let (kafka, g, t) = (state.kafka.clone(), group.clone(), topic.clone());
            let lag = tokio::task::spawn_blocking(move || {
                kafka.consumer_lag(&g, &t, std::time::Duration::from_secs(2))
            })
            .await;
            match lag {
                Ok(Ok(partitions)) => {
                    for (partition, lag) in partitions {
                        gauge!(names::CONSUMER_LAG, "group" => group.clone(),
                            "topic" => topic.clone(), "partition" => partition.to_string())
                        .set(lag as f64);
                    }
                }
                Ok(Err(error)) => tracing::debug!(%error, %group, %topic, "consumer lag unknown"),
                Err(error) => tracing::debug!(%error, "consumer lag task failed"),
            }
        }
    }
    Ok(())
}

/// Serves `/metrics` (and `/healthz`) on `listener` for a process that runs no admin API,
/// such as a participant service, until `shutdown`.
pub async fn serve_process_metrics(
    listener: tokio::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let handle = handle();
    let render = move || {
        let text = handle.render();
        async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
    };
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(render))
        .route("/healthz", axum::routing::get(crate::routes::health::live));
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
