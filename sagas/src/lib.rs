//! The reference checkout scenario on the saga engine.
//!
//! - [`checkout`]: the saga definition (balance by TCC, points and coupon by compensation).
//! - [`domains`]: the three participant services — balance, points, coupons.
//! - [`settings`]: the one settings tree of the binary — defaults, TOML file, environment,
//!   flags.
//! - [`services`]: running the engine and the services of one deployment.
//! - [`demo`]: the end-to-end demo with its invariant checks and report.
//! - [`chaos`]: the fault harness — the demo as separate processes under kill -9, broker
//!   and Postgres restarts.
//! - [`bench`]: `sagas bench` — the raw commit limit, then the checkout workload open loop
//!   as separate processes: peak rate, latency percentiles, RSS, WAL per saga.
//! - [`conformance`]: `sagas conformance` — the participant protocol played against a
//!   running participant in any language.
//! - [`cli`]: the `sagas` command line.
//! - [`telemetry`]: logs (text or JSON) and OTLP trace export.
//! - [`admin_cli`]: `sagas admin …`, the operator's client of the admin API.

pub mod admin_cli;
pub mod bench;
pub mod chaos;
pub mod checkout;
pub mod cli;
pub mod conformance;
pub mod demo;
pub mod domains;
pub mod services;
pub mod settings;
pub mod telemetry;
