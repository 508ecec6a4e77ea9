//! Injecting the scheduled faults into the running fleet, and keeping the fleet running:
//! killed processes start again when due, processes that exit on their own are restarted,
//! a broker whose storage panicked is restarted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::{watch, Mutex};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::broker::PanicWatch;
use super::processes::{Event, Fleet};
use super::report::Injected;
use super::schedule::{Fault, Role, Timed};

/// How often the fleet is looked after.
const SUPERVISE_EVERY: Duration = Duration::from_millis(100);
/// How often the broker's log is read for a panic.
const BROKER_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a broker whose storage panicked stays down before it starts again.
const BROKER_PANIC_RESTART: Duration = Duration::from_secs(1);

/// Where the faults stand.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Faults injected so far.
    pub injected: Injected,
    /// Faults that could not be injected, with why.
    pub errors: Vec<String>,
    /// Times the broker's storage panicked (and the broker was restarted for it).
    pub broker_panics: usize,
    /// Every fault was injected and every process is running again.
    pub done: bool,
}

/// Injects `faults` into `fleet` and supervises it until stopped.
pub struct Director {
    /// The processes (shared with the run, which stops them at the end).
    pub fleet: Arc<Mutex<Fleet>>,
    /// The schedule's faults, in time order.
    pub faults: Vec<Timed<Fault>>,
    /// The moment the schedule's offsets count from.
    pub start: Instant,
    /// Shell command that restarts Postgres.
    pub restart_postgres: String,
    /// The Postgres restarts' output goes here.
    pub postgres_log: PathBuf,
    /// Watches the broker's log.
    pub broker_watch: PanicWatch,
}

impl Director {
    /// Runs until `stop`, publishing progress on `progress`.
    pub async fn run(mut self, progress: watch::Sender<Progress>, stop: CancellationToken) {
        let mut next = 0;
        let mut tick = tokio::time::interval(SUPERVISE_EVERY);
        let mut broker_check = tokio::time::interval(BROKER_CHECK_EVERY);
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
                _ = broker_check.tick() => {
                    if self.broker_watch.panicked() {
                        say(self.start, "the broker's storage panicked (a tansu defect; see broker.log): restarting the broker");
                        let mut fleet = self.fleet.lock().await;
                        let restarted = match fleet.is_running(Role::Broker) {
                            true => fleet.kill(Role::Broker, BROKER_PANIC_RESTART).await,
                            false => Ok(()), // down already, about to start again
                        };
                        progress.send_modify(|p| {
                            p.broker_panics += 1;
                            if let Err(error) = restarted {
                                p.errors.push(format!("restarting the broker after its panic: {error:#}"));
                            }
                        });
                    }
                }
                _ = tick.tick() => {
                    let mut fleet = self.fleet.lock().await;
                    for event in fleet.supervise() {
                        if let Event::ExitedOnItsOwn(role, status) = event {
                            say(self.start, &format!("{} exited on its own ({status}); restarting it", role.name()));
                        }
                    }
                    if next == self.faults.len() && fleet.all_up() && !progress.borrow().done {
                        progress.send_modify(|p| p.done = true);
                    }
                }
            }
        }
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
                self.fleet.lock().await.kill(role, restart_after).await
            }
            Fault::RestartBroker { down_for } => {
                say(
                    self.start,
                    &format!("kill -9 broker (restart in {down_for:.1?})"),
                );
                self.fleet.lock().await.kill(Role::Broker, down_for).await
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
