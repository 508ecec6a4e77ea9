//! The database's own limit: single-row `INSERT` transactions (each statement its own
//! transaction, so one commit each) from `clients` connections at once, for a while, in a
//! table of the bench's database.

use std::time::Duration;

use anyhow::Context;
use saga_plumbing::db::DatabaseUrl;
use sqlx::{Connection, PgConnection};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::report::RawLimit;

/// The table the raw limit writes into; dropped afterwards.
const TABLE: &str = "bench_raw_commits";

/// Measures commits per second at `url` with `clients` connections for `span`.
pub async fn measure(url: &DatabaseUrl, clients: u32, span: Duration) -> anyhow::Result<RawLimit> {
    let mut setup = PgConnection::connect(url.expose())
        .await
        .context("connecting for the raw limit")?;
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (
             id bigserial PRIMARY KEY,
             client integer NOT NULL,
             at timestamptz NOT NULL DEFAULT now())"
    ))
    .execute(&mut setup)
    .await?;
    let synchronous_commit: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut setup)
        .await?;

    let mut connections = Vec::new();
    for _ in 0..clients {
        connections.push(PgConnection::connect(url.expose()).await?);
    }
    let start = Instant::now();
    let until = start + span;
    let mut writers = JoinSet::new();
    for (client, mut conn) in connections.into_iter().enumerate() {
        writers.spawn(async move {
            let insert = format!("INSERT INTO {TABLE} (client) VALUES ($1)");
            let mut commits = 0u64;
            while Instant::now() < until {
                sqlx::query(&insert)
                    .bind(client as i32)
                    .execute(&mut conn)
                    .await?;
                commits += 1;
            }
            conn.close().await?;
            Ok::<_, sqlx::Error>(commits)
        });
    }
    let mut commits = 0;
    while let Some(done) = writers.join_next().await {
        commits += done.context("a raw-limit client")??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    sqlx::query(&format!("DROP TABLE {TABLE}"))
        .execute(&mut setup)
        .await?;
    setup.close().await?;
    Ok(RawLimit {
        clients,
        commits_per_s: commits as f64 / elapsed,
        synchronous_commit,
    })
}
