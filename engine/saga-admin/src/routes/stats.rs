//! `/v1/stats`: the deployment at a glance.

use axum::extract::State;
use axum::Json;
use saga_core::SagaStatus;

use crate::problem::ApiError;
use crate::server::AdminState;
use crate::store;
use crate::views::{BreakerStats, Stats};

/// Counts per definition and status, the oldest running saga, the outbox, due timers,
/// dead letters and each participant's circuit breaker (as this engine process sees it).
#[utoipa::path(
    get,
    path = "/v1/stats",
    tag = "stats",
    responses((status = 200, description = "The figures", body = Stats))
)]
pub async fn show(State(state): State<AdminState>) -> Result<Json<Stats>, ApiError> {
    let sagas = store::status_counts(&state.pool).await?;
    let parked = sagas
        .iter()
        .filter(|c| c.status == SagaStatus::Parked)
        .map(|c| c.count)
        .sum();
    Ok(Json(Stats {
        sagas,
        parked,
        oldest_running: store::oldest_running(&state.pool).await?,
        outbox: store::outbox(&state.pool).await?,
        timers_due: store::timers_due(&state.pool).await?,
        dead_letters: store::open_dead_letters(&state.pool).await?,
        dead_lettered_by_this_process: state.dead_letters.count(),
        breakers: state
            .transitions
            .breakers()
            .report()
            .into_iter()
            .map(|b| BreakerStats {
                participant: b.participant,
                state: b.state.as_str().to_string(),
                recent_failures: b.recent_failures as u64,
            })
            .collect(),
    }))
}
