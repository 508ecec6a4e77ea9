//! Seeding one batch of requests next to earlier ones (nothing is emptied: the batch's
//! users and coupons are its own, see [`super::workload::phase`]).

use std::collections::HashMap;

use chrono::Utc;
use sqlx::PgPool;
use uuid::Uuid;

use crate::demo::Workload;
use crate::domains::{balance, coupons, points, Domain};

/// Accounts, points and coupons for `batch`; its used coupons are marked used by an order
/// outside the run, as the demo does.
pub async fn batch(pools: &HashMap<Domain, PgPool>, batch: &Workload) -> anyhow::Result<()> {
    let accounts: Vec<(i64, i64)> = batch.balances.iter().map(|(u, c)| (*u, *c)).collect();
    balance::seed_accounts(&pools[&Domain::Balance], &accounts).await?;
    let balances: Vec<(i64, i64)> = batch.points.iter().map(|(u, p)| (*u, *p)).collect();
    points::seed_points(&pools[&Domain::Points], &balances).await?;

    let valid_until = Utc::now() + chrono::Duration::days(30);
    let expired_at = Utc::now() - chrono::Duration::days(1);
    let mut all: Vec<(&str, chrono::DateTime<Utc>)> = Vec::new();
    all.extend(
        batch
            .valid_coupons
            .iter()
            .map(|c| (c.as_str(), valid_until)),
    );
    all.extend(batch.used_coupons.iter().map(|c| (c.as_str(), valid_until)));
    all.extend(
        batch
            .expired_coupons
            .iter()
            .map(|c| (c.as_str(), expired_at)),
    );
    let coupons_pool = &pools[&Domain::Coupons];
    coupons::seed_coupons(coupons_pool, &all).await?;
    sqlx::query("UPDATE coupons SET used_by_order = $1, used_at = now() WHERE code = ANY($2)")
        .bind(Uuid::from_u128(0xdead_beef))
        .bind(&batch.used_coupons)
        .execute(coupons_pool)
        .await?;
    Ok(())
}
