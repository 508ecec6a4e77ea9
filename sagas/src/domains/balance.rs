//! The balance domain: a TCC branch over user accounts, in cents.
//!
//! Try freezes money (`available` → `frozen`), confirm spends it (`frozen` → `spent`),
//! cancel releases it (`frozen` → `available`). Each phase is one guarded `UPDATE`, so
//! concurrent sagas on the same account never overdraw it, and
//! `available + frozen + spent` stays constant per user.

use std::sync::Arc;

use saga_participant::{CommandHandler, StepError, StepResultExt, Tcc, TccParticipant};
use schemas::checkout::FreezeFunds;
use serde_json::{json, Value};
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool};

/// The Postgres schema that holds the balance tables.
pub const SCHEMA: &str = "balance";

/// The balance tables (`accounts`), applied after the participant kit's migrations.
pub static MIGRATIONS: Migrator = Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("../migrations/balance")
};

/// The balance participant: answers try / confirm / cancel of [`FreezeFunds`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Balance;

/// The balance participant as a command handler for the participant kit.
pub fn handler() -> Arc<dyn CommandHandler> {
    Arc::new(Tcc(Balance))
}

/// Sets each `(user_id, available_cents)` account to that much available money, with
/// nothing frozen or spent, creating the accounts that do not exist.
pub async fn seed_accounts(pool: &PgPool, accounts: &[(i64, i64)]) -> saga_plumbing::Result<()> {
    let (users, amounts): (Vec<i64>, Vec<i64>) = accounts.iter().copied().unzip();
    sqlx::query(
        "INSERT INTO accounts (user_id, available)
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[])
         ON CONFLICT (user_id) DO UPDATE
         SET available = EXCLUDED.available, frozen = 0, spent = 0",
    )
    .bind(users)
    .bind(amounts)
    .execute(pool)
    .await?;
    Ok(())
}

impl TccParticipant for Balance {
    type Command = FreezeFunds;

    /// Out-of-bounds amounts or user ids are poison: the worker dead-letters them.
    fn validate(&self, cmd: &FreezeFunds) -> Result<(), String> {
        cmd.validate()
    }

    async fn try_(&self, tx: &mut PgConnection, cmd: &FreezeFunds) -> Result<Value, StepError> {
        check_amount(cmd)?;
        let frozen = sqlx::query(
            "UPDATE accounts SET available = available - $2, frozen = frozen + $2
             WHERE user_id = $1 AND available >= $2",
        )
        .bind(cmd.user_id)
        .bind(cmd.amount_cents)
        .execute(&mut *tx)
        .await
        .retryable()?
        .rows_affected();
        if frozen == 0 {
            return Err(match account(tx, cmd.user_id).await? {
                None => unknown_account(cmd.user_id),
                Some((available, _)) => StepError::Rejected(format!(
                    "insufficient funds: account {} has {available} cents available, {} needed",
                    cmd.user_id, cmd.amount_cents
                )),
            });
        }
        Ok(json!({ "frozen_cents": cmd.amount_cents }))
    }

    async fn confirm(&self, tx: &mut PgConnection, cmd: &FreezeFunds) -> Result<(), StepError> {
        settle(
            tx,
            cmd,
            "confirm",
            "UPDATE accounts SET frozen = frozen - $2, spent = spent + $2
             WHERE user_id = $1 AND frozen >= $2",
        )
        .await
    }

    async fn cancel(&self, tx: &mut PgConnection, cmd: &FreezeFunds) -> Result<(), StepError> {
        settle(
            tx,
            cmd,
            "cancel",
            "UPDATE accounts SET frozen = frozen - $2, available = available + $2
             WHERE user_id = $1 AND frozen >= $2",
        )
        .await
    }
}

/// Moves the frozen amount out with `sql` (guarded by `frozen >= amount`). The kit runs
/// confirm and cancel once, after a successful try, so a missing reservation means the
/// data was changed behind the saga's back: retrying cannot help, an operator must look.
async fn settle(
    tx: &mut PgConnection,
    cmd: &FreezeFunds,
    phase: &str,
    sql: &str,
) -> Result<(), StepError> {
    check_amount(cmd)?;
    let settled = sqlx::query(sql)
        .bind(cmd.user_id)
        .bind(cmd.amount_cents)
        .execute(&mut *tx)
        .await
        .retryable()?
        .rows_affected();
    if settled == 1 {
        return Ok(());
    }
    Err(match account(tx, cmd.user_id).await? {
        None => unknown_account(cmd.user_id),
        Some((_, frozen)) => StepError::Rejected(format!(
            "cannot {phase} {} cents: account {} has only {frozen} cents frozen",
            cmd.amount_cents, cmd.user_id
        )),
    })
}

/// `(available, frozen)` of an account, `None` when there is no such account.
async fn account(tx: &mut PgConnection, user_id: i64) -> Result<Option<(i64, i64)>, StepError> {
    sqlx::query_as("SELECT available, frozen FROM accounts WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await
        .retryable()
}

/// The contract's bounds (a positive amount up to the maximum, a valid user id), checked
/// again inside the handler for callers that bypass the worker's validation.
fn check_amount(cmd: &FreezeFunds) -> Result<(), StepError> {
    cmd.validate().map_err(StepError::Rejected)
}

fn unknown_account(user_id: i64) -> StepError {
    StepError::Rejected(format!("unknown account {user_id}"))
}
