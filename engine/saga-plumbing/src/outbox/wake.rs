//! Waking this process's relays after a commit that added outbox rows without `NOTIFY`.
//!
//! `NOTIFY` makes every committing transaction that sent one take one lock of the whole
//! Postgres cluster and hold it until its commit is on disk, so such commits happen one
//! at a time, and Postgres cannot flush many of them together. The consumer lanes, which
//! write most outbox rows, therefore switch the outbox trigger's notification off for their
//! transactions ([`quiet`]) and wake the relays of their own process after each commit
//! ([`committed`]). Any other writer (an operator action, another process) still notifies.

use std::sync::{Arc, Mutex, Weak};

use sqlx::PgConnection;
use tokio::sync::Notify;

use crate::Result;

/// The relays of this process, as they wait.
static RELAYS: Mutex<Vec<Weak<Notify>>> = Mutex::new(Vec::new());

/// What a relay waits on to be woken by [`committed`]; it stays registered while held.
pub(crate) fn register() -> Arc<Notify> {
    let woken = Arc::new(Notify::new());
    let mut relays = RELAYS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    relays.retain(|relay| relay.strong_count() > 0);
    relays.push(Arc::downgrade(&woken));
    woken
}

/// Wakes every relay of this process: a transaction that may have added outbox rows
/// committed. A relay busy meanwhile runs once more when it is done.
pub fn committed() {
    let relays = RELAYS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for relay in relays.iter().filter_map(Weak::upgrade) {
        relay.notify_one();
    }
}

/// Switches the outbox trigger's `NOTIFY` off for the rest of `tx`: its writer wakes the
/// relays itself with [`committed`].
pub async fn quiet(tx: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT set_config('saga.outbox_notify', 'off', true)")
        .execute(&mut *tx)
        .await?;
    Ok(())
}
