//! After the run: what became of every trigger, the demo's invariants, the history check,
//! effects applied twice, and the dead letters (exactly the poison messages).

use std::collections::{BTreeSet, HashMap};

use sqlx::PgPool;
use uuid::Uuid;

use super::doubled;
use super::publish::poison_key;
use super::report::{Fates, Injected, Verdict};
use crate::demo::verify::{self, Pools};
use crate::demo::Workload;

/// Reads the tables of the run and judges it.
pub async fn judge(
    pools: &Pools<'_>,
    workload: &Workload,
    saga_of_order: &HashMap<Uuid, Uuid>,
    poison_sent: usize,
    injected: Injected,
) -> anyhow::Result<Verdict> {
    let sagas = verify::sagas(pools.engine).await?;
    let fates = Fates::of(workload.requests.iter().map(|request| {
        sagas
            .get(&saga_of_order[&request.body.order_id])
            .map(|s| s.status)
    }));
    let mut violations = verify::violations(pools, workload, saga_of_order).await?;
    let history = saga_engine::history::verify(pools.engine).await?;
    violations.extend(history.differences.iter().map(|d| {
        format!(
            "saga {}: stored state is not the fold of its events: {}",
            d.saga_id,
            d.what.join("; ")
        )
    }));

    let (barriers, tables) = doubled::read(pools.balance, pools.points, pools.coupons).await?;
    let doubled = doubled::find(workload, saga_of_order, &barriers, &tables);
    violations.extend(doubled.iter().map(|d| format!("effect applied twice: {d}")));

    let engine_letters = dead_letter_keys(pools.engine).await?;
    let mut dead_letters = engine_letters.len();
    let expected: BTreeSet<String> = (0..poison_sent).map(poison_key).collect();
    let found: BTreeSet<String> = engine_letters.iter().flatten().cloned().collect();
    for missing in expected.difference(&found) {
        violations.push(format!("poison message {missing} was not dead-lettered"));
    }
    for key in &engine_letters {
        if !key.as_ref().is_some_and(|k| expected.contains(k)) {
            violations.push(format!(
                "the engine dead-lettered a valid message (key {key:?}); see its dead_letters table"
            ));
        }
    }
    for (domain, pool) in [
        ("balance", pools.balance),
        ("points", pools.points),
        ("coupons", pools.coupons),
    ] {
        let keys = dead_letter_keys(pool).await?;
        dead_letters += keys.len();
        if !keys.is_empty() {
            violations.push(format!(
                "the {domain} service dead-lettered {} commands; none was malformed",
                keys.len()
            ));
        }
    }

    Ok(Verdict {
        fates,
        injected,
        doubled: doubled.len(),
        dead_letters,
        violations,
        harness_errors: Vec::new(),
    })
}

/// The key of every row in `pool`'s `dead_letters` table.
async fn dead_letter_keys(pool: &PgPool) -> sqlx::Result<Vec<Option<String>>> {
    let keys: Vec<(Option<Vec<u8>>,)> = sqlx::query_as("SELECT key FROM dead_letters")
        .fetch_all(pool)
        .await?;
    Ok(keys
        .into_iter()
        .map(|(key,)| key.map(|k| String::from_utf8_lossy(&k).into_owned()))
        .collect())
}
