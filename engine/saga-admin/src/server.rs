//! The admin server: what the routes read, the router, binding and serving.

use std::net::SocketAddr;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::{middleware, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use rdkafka::producer::FutureProducer;
use saga_engine::{Engine, Registry, Transitions};
use saga_plumbing::dlq::DeadLetters;
use saga_plumbing::health::Health;
use saga_plumbing::kafka::KafkaSettings;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;

use crate::auth::{self, Auth};
use crate::openapi;
use crate::problem::problem_for_plain_errors;
use crate::query::PageLimits;
use crate::routes::{actions, dead_letters, definitions, health, sagas, stats, triggers};
use crate::settings::AdminSettings;

/// What the routes read: the engine's database and definitions, the broker, the figures.
#[derive(Clone)]
pub struct AdminState {
    /// The engine schema.
    pub pool: PgPool,
    /// The definitions this engine runs.
    pub registry: Registry,
    /// The transition path operator actions take.
    pub transitions: Transitions,
    /// A producer, for broker readiness (and publishing).
    pub producer: FutureProducer,
    /// The broker list, for messages.
    pub brokers: String,
    /// What this process dead-lettered.
    pub dead_letters: DeadLetters,
    /// Engine migrations the binary carries; fewer applied is "not ready".
    pub migrations: usize,
    /// Page sizes of the saga list.
    pub limits: PageLimits,
    /// The process's metrics, rendered at `/metrics`.
    pub metrics: PrometheusHandle,
    /// What the engine's consumers, relay and timer poller report, when this process runs
    /// the engine.
    pub health: Option<Health>,
    /// The engine's consumer groups and their topics, for the lag gauge.
    pub consumer_groups: Vec<(String, Vec<String>)>,
    /// Kafka settings, for reading consumer lag.
    pub kafka: KafkaSettings,
}

impl AdminState {
    /// The state for the admin API of `engine`.
    pub fn for_engine(engine: &Engine, settings: &AdminSettings) -> saga_engine::Result<Self> {
        let kafka = engine.kafka();
        Ok(AdminState {
            pool: engine.transitions().pool().clone(),
            registry: engine.transitions().registry().clone(),
            transitions: engine.transitions().clone(),
            producer: kafka.producer()?,
            brokers: kafka.brokers.clone(),
            dead_letters: engine.dead_letters(),
            migrations: saga_engine::MIGRATIONS.iter().count(),
            limits: PageLimits {
                default: settings.page_size,
                max: settings.max_page_size,
            },
            metrics: crate::metrics::handle(),
            health: Some(engine.health()),
            consumer_groups: engine.consumer_groups(),
            kafka: kafka.clone(),
        })
    }
}

/// Why the admin server did not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A setting is wrong.
    #[error("admin API: {0}")]
    Settings(String),
    /// The address could not be bound.
    #[error("admin API: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A bound admin server, ready to serve.
pub struct AdminServer {
    listener: TcpListener,
    router: Router,
}

impl AdminServer {
    /// Binds `settings.addr`. Without a token, only a loopback address is allowed.
    pub async fn bind(settings: &AdminSettings, state: AdminState) -> Result<Self, AdminError> {
        let token = settings.resolve_token().map_err(AdminError::Settings)?;
        if token.is_none() && !settings.addr.ip().is_loopback() {
            return Err(AdminError::Settings(format!(
                "refusing to listen on {} without a token: set SAGAS_ADMIN_TOKEN or \
                 admin.token_file, or use a loopback address",
                settings.addr
            )));
        }
        if settings.page_size < 1 || settings.max_page_size < settings.page_size {
            return Err(AdminError::Settings(
                "admin.page_size must be at least 1 and at most admin.max_page_size".into(),
            ));
        }
        let listener =
            TcpListener::bind(settings.addr)
                .await
                .map_err(|source| AdminError::Bind {
                    addr: settings.addr,
                    source,
                })?;
        let router = router(state, Auth::new(token), settings.body_limit);
        Ok(AdminServer { listener, router })
    }

    /// The address it listens on (the real port when `addr` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown`.
    pub async fn serve(self, shutdown: CancellationToken) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    }
}

/// The routes: `/v1` behind the token check; health and the OpenAPI document open.
pub fn router(state: AdminState, auth: Auth, body_limit: usize) -> Router {
    let v1 = Router::new()
        .route("/v1/sagas", get(sagas::list))
        .route("/v1/sagas/{id}", get(sagas::show))
        .route("/v1/sagas/{id}/history", get(sagas::history))
        .route("/v1/sagas/{id}/{action}", post(actions::act))
        .route("/v1/definitions", get(definitions::list))
        .route(
            "/v1/definitions/{name}/sagas/{key}",
            get(definitions::find_saga),
        )
        .route("/v1/stats", get(stats::show))
        .route("/v1/triggers/{definition}", post(triggers::publish))
        .route("/v1/dead-letters", get(dead_letters::list))
        .route("/v1/dead-letters/{id}", delete(dead_letters::discard))
        .route("/v1/dead-letters/{id}/replay", post(dead_letters::replay))
        .route_layer(middleware::from_fn_with_state(auth, auth::require));
    Router::new()
        .merge(v1)
        .route("/", get(crate::dashboard::page))
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .route("/openapi.json", get(openapi::serve))
        .route("/metrics", get(crate::metrics::serve))
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(middleware::map_response(problem_for_plain_errors))
}
