//! Connecting to Postgres and running migrations.
//!
//! Each component owns one schema (the engine its own, each domain service its own) and
//! talks to it through a pool whose `search_path` is that schema, so every query uses plain
//! table names and the same tables (`outbox`, ...) can exist once per component.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::error::{is_unique_violation, Error, Result};

/// A Postgres URL whose password never shows: `Debug`, `Display` and `Serialize` print
/// `***` in its place. [`DatabaseUrl::expose`] gives the real URL to the driver.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps `url`.
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseUrl(url.into())
    }

    /// The URL with its password, for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with the password (if any) replaced by `***`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
            return url.clone();
        };
        let authority_end = url[scheme_end..]
            .find(['/', '?'])
            .map_or(url.len(), |i| scheme_end + i);
        let authority = &url[scheme_end..authority_end];
        let Some(at) = authority.rfind('@') else {
            return url.clone();
        };
        match authority[..at].find(':') {
            Some(colon) => format!(
                "{}{}:***{}",
                &url[..scheme_end],
                &authority[..colon],
                &url[scheme_end + at..]
            ),
            None => url.clone(),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// How a component's pool behaves; the URL and schema are given separately.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolSettings {
    /// Connections in the pool (default 10).
    pub max_connections: u32,
    /// How long a query waits for a free connection before it fails (default 10 s).
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// Where and how one component connects.
#[derive(Debug, Clone)]
pub struct DbSettings {
    /// Postgres URL, e.g. `postgres://postgres@127.0.0.1:5432/test`.
    pub url: DatabaseUrl,
    /// Schema that holds this component's tables (created if missing).
    pub schema: String,
    /// Pool size and waits.
    pub pool: PoolSettings,
}

impl DbSettings {
    /// Settings for `schema` at `url`, with the default pool.
    pub fn new(url: impl Into<String>, schema: impl Into<String>) -> Self {
        DbSettings {
            url: DatabaseUrl::new(url),
            schema: schema.into(),
            pool: PoolSettings::default(),
        }
    }
}

/// Creates the schema if needed and returns a pool whose `search_path` is that schema.
pub async fn connect(settings: &DbSettings) -> Result<PgPool> {
    validate_schema_name(&settings.schema)?;
    let options = PgConnectOptions::from_str(settings.url.expose())?;
    ensure_schema(&options, &settings.schema).await?;
    let options = options.options([("search_path", settings.schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(settings.pool.max_connections)
        .acquire_timeout(settings.pool.acquire_timeout)
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Connects to `schema` and applies each of `migrators` there, in order. Migrators that
/// share a schema must set `ignore_missing` and use version numbers that do not collide.
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
        Err(Error::Config(format!(
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

    #[test]
    fn a_database_url_never_prints_its_password() {
        let url = DatabaseUrl::new("postgres://app:s3cret@db.internal:5432/sagas?sslmode=require");
        for shown in [
            format!("{url}"),
            format!("{url:?}"),
            serde_json::to_string(&url).unwrap(),
        ] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("app:***@db.internal:5432/sagas"), "{shown}");
        }
        assert!(url.expose().contains("s3cret"));
        let plain = DatabaseUrl::new("postgres://postgres@127.0.0.1:5432/test");
        assert_eq!(plain.redacted(), "postgres://postgres@127.0.0.1:5432/test");
    }
}
