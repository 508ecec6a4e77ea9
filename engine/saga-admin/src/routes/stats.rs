//! `/v1/stats`: the deployment at a glance.

use axum::extract::State;
use axum::Json;

use crate::problem::ApiError;
use crate::server::AdminState;
use crate::store;
use crate::views::Stats;

/// Counts per definition and status, the oldest running saga, the outbox, due timers and
/// dead letters.
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
        .filter(|c| c.status == "parked")
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
    }))
}
