//! Connecting to Postgres and running migrations.
//!
//! Each component owns one schema (the engine its own, each domain service its own) and
//! talks to it through a pool whose `search_path` is that schema, so every query uses plain
//! table names and the same tables (`outbox`, ...) can exist once per component.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::error::{is_unique_violation, Result};

/// Engine tables: `saga_events`, `sagas`, `inbox`, `outbox`, `timers`.
pub static ENGINE_MIGRATIONS: Migrator = Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("../migrations/engine")
};

/// Participant kit tables for a domain schema: `barrier`, `outbox`. A domain runs its own
/// migrations after these in the same schema; every migrator here and there ignores the
/// versions of the others (`ignore_missing`), so their version numbers must not collide.
pub static PARTICIPANT_MIGRATIONS: Migrator = Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("../migrations/participant")
};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct DbSettings {
    /// Postgres URL, e.g. `postgres://postgres@127.0.0.1:5432/test`.
    pub url: String,
    /// Schema that holds this component's tables (created if missing).
    pub schema: String,
    /// Pool size.
    pub max_connections: u32,
}

impl DbSettings {
    /// Settings for `schema` at `url`, with a pool of 10.
    pub fn new(url: impl Into<String>, schema: impl Into<String>) -> Self {
        DbSettings {
            url: url.into(),
            schema: schema.into(),
            max_connections: 10,
        }
    }
}

/// Creates the schema if needed and returns a pool whose `search_path` is that schema.
pub async fn connect(settings: &DbSettings) -> Result<PgPool> {
    validate_schema_name(&settings.schema)?;
    let options = PgConnectOptions::from_str(&settings.url)?;
    ensure_schema(&options, &settings.schema).await?;
    let options = options.options([("search_path", settings.schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Connects to `schema` and applies each of `migrators` there, in order.
pub async fn connect_and_migrate(settings: &DbSettings, migrators: &[&Migrator]) -> Result<PgPool> {
    let pool = connect(settings).await?;
    for migrator in migrators {
        migrator.run(&pool).await?;
    }
    Ok(pool)
}

async fn ensure_schema(options: &PgConnectOptions, schema: &str) -> Result<()> {
    let mut conn = PgConnection::connect_with(options).await?;
    let created = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .execute(&mut conn)
        .await;
    match created {
        // Two processes creating the same schema at once: the loser sees a unique violation.
        Err(e) if !is_unique_violation(&e) => return Err(e.into()),
        _ => {}
    }
    conn.close().await?;
    Ok(())
}

fn validate_schema_name(schema: &str) -> Result<()> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(crate::Error::Config(format!(
            "schema name `{schema}` must be 1-63 characters of a-z, 0-9 and _, not starting with a digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked_before_they_reach_sql() {
        assert!(validate_schema_name("engine").is_ok());
        assert!(validate_schema_name("balance_2").is_ok());
        assert!(validate_schema_name("").is_err());
        assert!(validate_schema_name("2fast").is_err());
        assert!(validate_schema_name("x\"; DROP TABLE y; --").is_err());
        assert!(validate_schema_name("Upper").is_err());
    }
}
