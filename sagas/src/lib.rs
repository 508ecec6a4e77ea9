//! The reference checkout scenario on the saga engine.
//!
//! - [`checkout`]: the saga definition (balance by TCC, points and coupon by compensation).
//! - [`domains`]: the three participant services — balance, points, coupons.
//! - [`services`]: running the engine and the services with one deployment's settings.
//! - [`demo`]: the end-to-end demo with its invariant checks and report.
//! - [`cli`]: the `sagas` command line.

pub mod checkout;
pub mod cli;
pub mod demo;
pub mod domains;
pub mod services;
