//! The three domain services of the checkout saga, built on the engine's participant kit.
//!
//! - [`balance`]: a TCC branch — freeze, then spend or release money.
//! - [`points`]: a compensable step — deduct loyalty points, refund them.
//! - [`coupons`]: a compensable step — redeem a single-use coupon, restore it.
//!
//! Each domain owns one Postgres schema holding the kit's tables (barrier, outbox) and its
//! business tables; [`connect`] creates and migrates it. The domain code only does business
//! SQL; the kit wraps it in the barrier and the reply.

pub mod balance;
pub mod coupons;
pub mod points;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use saga_participant::CommandHandler;
use saga_plumbing::db::{self, PoolSettings};
use saga_plumbing::Connections;
use sqlx::migrate::Migrator;
use sqlx::PgPool;

/// One of the checkout saga's domain services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Domain {
    /// Money per user: the TCC branch `reserve_funds`.
    Balance,
    /// Loyalty points per user: the step `deduct_points`.
    Points,
    /// Single-use coupons: the step `redeem_coupon`.
    Coupons,
}

impl Domain {
    /// Every domain, in checkout order.
    pub const ALL: [Domain; 3] = [Domain::Balance, Domain::Points, Domain::Coupons];

    /// The domain's name: `balance`, `points` or `coupons`.
    pub fn name(self) -> &'static str {
        match self {
            Domain::Balance => "balance",
            Domain::Points => "points",
            Domain::Coupons => "coupons",
        }
    }

    /// The Postgres schema holding the domain's tables.
    pub fn schema(self) -> &'static str {
        match self {
            Domain::Balance => balance::SCHEMA,
            Domain::Points => points::SCHEMA,
            Domain::Coupons => coupons::SCHEMA,
        }
    }

    /// The migrations of the domain's schema, in order: the participant kit's, then the
    /// domain's own.
    pub fn migrations(self) -> [&'static Migrator; 2] {
        let own = match self {
            Domain::Balance => &balance::MIGRATIONS,
            Domain::Points => &points::MIGRATIONS,
            Domain::Coupons => &coupons::MIGRATIONS,
        };
        [&saga_participant::MIGRATIONS, own]
    }

    /// The domain's participant, ready for the kit ([`saga_participant::handle_command`]
    /// or a [`saga_participant::ParticipantWorker`]).
    pub fn handler(self) -> Arc<dyn CommandHandler> {
        match self {
            Domain::Balance => balance::handler(),
            Domain::Points => points::handler(),
            Domain::Coupons => coupons::handler(),
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Domain {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Domain::ALL
            .into_iter()
            .find(|domain| domain.name() == name)
            .ok_or_else(|| format!("unknown domain `{name}`; expected balance, points or coupons"))
    }
}

/// Connects to the domain's schema with a pool as `pool` says, creating and migrating the
/// schema as needed.
pub async fn connect(
    connections: &Connections,
    pool: &PoolSettings,
    domain: Domain,
) -> saga_plumbing::Result<PgPool> {
    let db = connections.db(domain.schema(), pool);
    db::connect_and_migrate(&db, &domain.migrations()).await
}
