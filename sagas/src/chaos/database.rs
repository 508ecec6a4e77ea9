//! The run's own database on the configured Postgres server: created fresh, dropped after
//! a passing run (a failing run's is kept for inspection).

use anyhow::Context;
use saga_plumbing::db::DatabaseUrl;
use sqlx::{Connection, PgConnection};

/// Prefix of the databases fault runs create (`scripts/chaos.sh` drops leftovers).
pub const NAME_PREFIX: &str = "sagachaos_";

/// `url` with its database name replaced by `name` (user, host, port and query kept).
pub fn with_database(url: &str, name: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_start..];
    let authority_end = rest
        .find(['/', '?'])
        .map_or(url.len(), |i| authority_start + i);
    let query = url[authority_end..]
        .find('?')
        .map_or("", |i| &url[authority_end + i..]);
    format!("{}/{name}{query}", &url[..authority_end])
}

/// Creates database `name` on the server of `server` and returns its URL.
pub async fn create(server: &DatabaseUrl, name: &str) -> anyhow::Result<DatabaseUrl> {
    let mut conn = PgConnection::connect(server.expose())
        .await
        .with_context(|| format!("connecting to {server}"))?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .with_context(|| format!("creating database {name}"))?;
    conn.close().await?;
    Ok(DatabaseUrl::new(with_database(server.expose(), name)))
}

/// Drops database `name` (disconnecting whoever is still on it).
pub async fn drop(server: &DatabaseUrl, name: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(server.expose()).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_database_name_changes() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "sagachaos_1"),
            "postgres://postgres@127.0.0.1:5432/sagachaos_1"
        );
        assert_eq!(
            with_database("postgresql://u:p@db/x?sslmode=require", "y"),
            "postgresql://u:p@db/y?sslmode=require"
        );
        assert_eq!(
            with_database("postgres://u@db:5433", "y"),
            "postgres://u@db:5433/y"
        );
        assert_eq!(
            with_database("postgres://u@db?sslmode=disable", "y"),
            "postgres://u@db/y?sslmode=disable"
        );
    }
}
