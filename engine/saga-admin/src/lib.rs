//! The admin HTTP API: what an operator sees of the sagas of one engine deployment.
//!
//! Map of the crate:
//! - [`settings`]: [`AdminSettings`] — listen address, bearer token, page and body limits.
//! - [`server`]: [`AdminServer`] — binds (refusing a non-loopback address without a token)
//!   and serves the router until shutdown; [`AdminState`] is what the routes read.
//! - `routes`: one module per resource — sagas, operator actions, definitions, stats,
//!   triggers, dead letters, health.
//! - [`query`]: the saga list's filters and its keyset cursor, parsed with errors that name
//!   the field (pure).
//! - [`views`]: the JSON bodies, built from stored rows and events (pure).
//! - `store`: the SQL the routes run.
//! - `auth`: the bearer-token check (constant time) and the read-only rule without a token.
//! - `problem`: errors as `application/problem+json` (RFC 9457).
//! - [`dashboard`]: the page at `/` (embedded HTML and script) over the same API.
//! - [`metrics`]: the Prometheus recorder and `GET /metrics`.
//! - [`openapi`]: the OpenAPI document served at `/openapi.json`.

mod auth;
pub mod dashboard;
pub mod metrics;
pub mod openapi;
mod problem;
pub mod query;
mod routes;
pub mod server;
pub mod settings;
mod store;
pub mod views;

pub use problem::Problem;
pub use server::{AdminServer, AdminState};
pub use settings::{AdminSettings, AdminToken};
