//! Injecting the scheduled faults into the running fleet, and keeping the fleet running:
//! killed processes start again when due, processes that exit on their own are restarted.

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::processes::{Event, Fleet};
use super::report::Injected;
use super::schedule::{Fault, Role, Timed};

/// How often the fleet is looked after.
const SUPERVISE_EVERY: Duration = Duration::from_millis(100);

/// Where the faults stand.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Faults injected so far.
    pub injected: Injected,
    /// Faults that could not be injected, with why.
    pub errors: Vec<String>,
    /// Every fault was injected and every process is running again.
    pub done: bool,
}

/// Injects `faults` and supervises `fleet` until `stop`; returns the fleet for shutdown.
pub struct Director {
    /// The processes.
    pub fleet: Fleet,
    /// The schedule's faults, in time order.
    pub faults: Vec<Timed<Fault>>,
    /// The moment the schedule's offsets count from.
    pub start: Instant,
    /// Shell command that restarts Postgres.
    pub restart_postgres: String,
    /// The Postgres restarts' output goes here.
    pub postgres_log: PathBuf,
}

impl Director {
    /// Runs until `stop`, publishing progress on `progress`.
    pub async fn run(
        mut self,
        progress: watch::Sender<Progress>,
        stop: CancellationToken,
    ) -> Fleet {
        let mut next = 0;
        let mut tick = tokio::time::interval(SUPERVISE_EVERY);
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        loop {
            let due = self.faults.get(next).map(|f| self.start + f.at);
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(due.unwrap_or(far)), if due.is_some() => {
                    let fault = self.faults[next].what;
                    next += 1;
                    let result = self.inject(fault).await;
                    progress.send_modify(|p| match result {
                        Ok(()) => count(&mut p.injected, fault),
                        Err(error) => p.errors.push(format!("{fault:?}: {error:#}")),
                    });
                }
                _ = tick.tick() => {
                    for event in self.fleet.supervise() {
                        if let Event::ExitedOnItsOwn(role, status) = event {
                            say(self.start, &format!("{} exited on its own ({status}); restarting it", role.name()));
                        }
                    }
                    if next == self.faults.len() && self.fleet.all_up() && !progress.borrow().done {
                        progress.send_modify(|p| p.done = true);
                    }
                }
            }
        }
        self.fleet
    }

    async fn inject(&mut self, fault: Fault) -> anyhow::Result<()> {
        match fault {
            Fault::Kill {
                role,
                restart_after,
            } => {
                say(
                    self.start,
                    &format!("kill -9 {} (restart in {restart_after:.1?})", role.name()),
                );
                self.fleet.kill(role, restart_after).await
            }
            Fault::RestartBroker { down_for } => {
                say(
                    self.start,
                    &format!("kill -9 broker (restart in {down_for:.1?})"),
                );
                self.fleet.kill(Role::Broker, down_for).await
            }
            Fault::RestartPostgres => {
                say(self.start, "restart postgres");
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.postgres_log)?;
                let status = Command::new("sh")
                    .args(["-c", &self.restart_postgres])
                    .stdin(std::process::Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .status()
                    .await?;
                anyhow::ensure!(
                    status.success(),
                    "`{}` failed ({status}); see {}",
                    self.restart_postgres,
                    self.postgres_log.display()
                );
                Ok(())
            }
        }
    }
}

fn count(injected: &mut Injected, fault: Fault) {
    match fault {
        Fault::Kill { .. } => injected.kills += 1,
        Fault::RestartBroker { .. } => injected.broker_restarts += 1,
        Fault::RestartPostgres => injected.pg_restarts += 1,
    }
}

/// A progress line of the run, with the time since its start.
pub fn say(start: Instant, what: &str) {
    println!("chaos: +{:>6.1}s {what}", start.elapsed().as_secs_f64());
}
