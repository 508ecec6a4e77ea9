//! Supervision of a process's background tasks: they run until shutdown, and the first
//! one that ends on its own (returns early or panics) stops all of them, marks itself
//! not running for readiness, and makes the process fail: never a half-alive process.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::health::Health;
use crate::{Error, Result};

/// Named background tasks that live and die together.
pub struct Supervisor {
    tasks: JoinSet<()>,
    names: HashMap<Id, &'static str>,
    stop: CancellationToken,
    health: Health,
}

impl Supervisor {
    /// Tasks that stop when `shutdown` is cancelled, reporting to `health`.
    pub fn new(shutdown: &CancellationToken, health: Health) -> Self {
        Supervisor {
            tasks: JoinSet::new(),
            names: HashMap::new(),
            stop: shutdown.child_token(),
            health,
        }
    }

    /// The token the tasks must stop on (cancelled at shutdown, or when one task fails).
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Runs `task` as `name`.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.tasks.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Waits until `shutdown` (then stops every task, aborting those still running after
    /// `grace`) or until a task ends on its own (then stops the others and returns
    /// [`Error::Stopped`] naming it).
    pub async fn run(mut self, shutdown: &CancellationToken, grace: Duration) -> Result<()> {
        let ended = tokio::select! {
            biased;
            _ = shutdown.cancelled() => None,
            Some(joined) = self.tasks.join_next_with_id() => Some(joined),
        };
        // Tasks stop with the shutdown too; only one that ended before it failed.
        let failure = ended.filter(|_| !shutdown.is_cancelled()).map(|joined| {
            let (id, how) = match joined {
                Ok((id, ())) => (id, "stopped on its own".to_string()),
                Err(error) if error.is_panic() => (error.id(), "panicked".to_string()),
                Err(error) => (error.id(), format!("ended: {error}")),
            };
            let name = self.names.get(&id).copied().unwrap_or("a background task");
            self.health.set_running(name, false);
            error!(
                task = name,
                how, "background task ended; stopping the process"
            );
            format!("{name} {how}")
        });
        self.stop.cancel();
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                left = self.tasks.len(),
                ?grace,
                "tasks still running after the grace; aborting them"
            );
            self.tasks.abort_all();
        }
        match failure {
            Some(what) => Err(Error::Stopped(what)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_ends_early_stops_the_others_and_fails() {
        let shutdown = CancellationToken::new();
        let health = Health::default();
        let mut supervisor = Supervisor::new(&shutdown, health.clone());
        let stop = supervisor.token();
        let other_stopped = CancellationToken::new();
        let seen = other_stopped.clone();
        supervisor.spawn("steady", async move {
            stop.cancelled().await;
            seen.cancel();
        });
        health.set_running("flaky", true);
        supervisor.spawn("flaky", async {});
        let result = supervisor.run(&shutdown, Duration::from_secs(5)).await;
        assert_eq!(
            result.unwrap_err().to_string(),
            "background task stopped: flaky stopped on its own"
        );
        assert!(other_stopped.is_cancelled());
        assert!(health
            .parts()
            .iter()
            .any(|p| p.name == "flaky" && !p.running));
    }

    #[tokio::test]
    async fn a_panic_is_reported_by_name() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(&shutdown, Health::default());
        supervisor.spawn("boom", async { panic!("test panic") });
        let error = supervisor.run(&shutdown, Duration::from_secs(5)).await;
        assert!(error.unwrap_err().to_string().contains("boom panicked"));
    }

    #[tokio::test]
    async fn shutdown_stops_every_task_cleanly() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(&shutdown, Health::default());
        let stop = supervisor.token();
        supervisor.spawn("steady", async move { stop.cancelled().await });
        shutdown.cancel();
        supervisor
            .run(&shutdown, Duration::from_secs(5))
            .await
            .unwrap();
    }
}
