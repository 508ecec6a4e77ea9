//! The business-effect hook: `--check-sql`, a query over the participant's database whose
//! result stands for the state the kit's commands touch (the user's points, the coupon's
//! holder). The kit reads it before and after commands and asks whether it changed.

use saga_plumbing::db::DatabaseUrl;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

/// The hook, connected.
pub struct Effects {
    pool: PgPool,
    query: String,
}

impl Effects {
    /// Connects to `database` for `check_sql` and runs it once, so that a wrong query is
    /// reported before any case.
    pub async fn connect(database: &DatabaseUrl, check_sql: &str) -> anyhow::Result<Effects> {
        let select = check_sql.trim().trim_end_matches(';');
        let effects = Effects {
            pool: PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(std::time::Duration::from_secs(10))
                .connect(database.expose())
                .await
                .map_err(|e| anyhow::anyhow!("--check-sql: cannot connect to {database}: {e}"))?,
            query: format!(
                "SELECT coalesce(jsonb_agg(to_jsonb(q)), '[]'::jsonb)::text FROM ({select}) q"
            ),
        };
        effects
            .read()
            .await
            .map_err(|e| anyhow::anyhow!("--check-sql: {e}"))?;
        Ok(effects)
    }

    /// The query's rows now, as one JSON text.
    pub async fn read(&self) -> Result<String, String> {
        sqlx::query_scalar(&self.query)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| format!("the check query failed: {e}"))
    }
}

/// What a case expects of the business state after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// As it was.
    None,
    /// Different from before.
    Some,
}

/// Checks `after` against `before` (both `None` without a hook): `what` names the command.
pub fn check(
    before: &Option<String>,
    after: &Option<String>,
    wanted: Change,
    what: &str,
) -> Result<(), String> {
    let (Some(before), Some(after)) = (before, after) else {
        return Ok(());
    };
    match (wanted, before == after) {
        (Change::None, false) => Err(format!(
            "{what} changed the business state: {before} became {after}"
        )),
        (Change::Some, true) => Err(format!(
            "{what} left the business state as it was ({before}): no effect is visible"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_hook_every_state_check_passes() {
        assert!(check(&None, &None, Change::Some, "the action").is_ok());
    }

    #[test]
    fn a_state_that_moved_when_it_should_not_is_reported() {
        let error = check(
            &Some(r#"[{"balance": 5}]"#.into()),
            &Some(r#"[{"balance": 4}]"#.into()),
            Change::None,
            "the duplicate action",
        )
        .unwrap_err();
        assert_eq!(
            error,
            r#"the duplicate action changed the business state: [{"balance": 5}] became [{"balance": 4}]"#
        );
    }
}
