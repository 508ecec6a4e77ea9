//! The run's child processes: started with their output appended to a log file, killed
//! with SIGKILL, started again when due, and restarted when they exit on their own.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::schedule::{Role, KILLED_DOWN_MIN};

/// How to start one process.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Working directory (the harness's own when `None`).
    pub cwd: Option<PathBuf>,
    /// Environment set on top of the harness's own.
    pub env: Vec<(String, String)>,
    /// Standard output and error are appended here.
    pub log: PathBuf,
}

/// Wait after a process exits on its own before it is started again: as long as after a
/// kill, for the same reason (see [`KILLED_DOWN_MIN`]).
const CRASH_RESTART_DELAY: Duration = KILLED_DOWN_MIN;

/// One supervised process.
#[derive(Debug)]
struct Managed {
    spec: ProcessSpec,
    child: Option<Child>,
    /// Down on purpose (killed, or crashed) until this moment, then started again.
    restart_at: Option<Instant>,
    /// How it ended each time it exited on its own.
    crashes: Vec<ExitStatus>,
}

/// Something that happened to a process, for the run's log.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Started (again) after being down.
    Restarted(Role),
    /// Exited without being killed by the harness.
    ExitedOnItsOwn(Role, String),
}

/// The supervised processes of one run.
#[derive(Debug, Default)]
pub struct Fleet {
    processes: HashMap<Role, Managed>,
}

impl Fleet {
    /// Adds and starts `role` as `spec` says.
    pub fn start(&mut self, role: Role, spec: ProcessSpec) -> anyhow::Result<()> {
        let child = spawn(&spec).with_context(|| format!("starting {}", role.name()))?;
        self.processes.insert(
            role,
            Managed {
                spec,
                child: Some(child),
                restart_at: None,
                crashes: Vec::new(),
            },
        );
        Ok(())
    }

    /// Sends SIGKILL to `role` and waits for it to die; it is started again after
    /// `restart_after` by [`Fleet::supervise`].
    pub async fn kill(&mut self, role: Role, restart_after: Duration) -> anyhow::Result<()> {
        let managed = self
            .processes
            .get_mut(&role)
            .with_context(|| format!("no process {}", role.name()))?;
        let Some(mut child) = managed.child.take() else {
            anyhow::bail!("{} is not running", role.name());
        };
        child.start_kill().context("kill -9")?;
        child
            .wait()
            .await
            .context("waiting for the killed process")?;
        note(&managed.spec, "killed with SIGKILL by the fault harness");
        managed.restart_at = Some(Instant::now() + restart_after);
        Ok(())
    }

    /// Starts what is due to start again and notices processes that exited on their own
    /// (they are started again shortly). Call it often.
    pub fn supervise(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        let now = Instant::now();
        for (role, managed) in &mut self.processes {
            if let Some(child) = &mut managed.child {
                if let Ok(Some(status)) = child.try_wait() {
                    managed.child = None;
                    managed.crashes.push(status);
                    managed.restart_at = Some(now + CRASH_RESTART_DELAY);
                    note(&managed.spec, &format!("exited on its own: {status}"));
                    events.push(Event::ExitedOnItsOwn(*role, status.to_string()));
                }
            }
            if managed.restart_at.is_some_and(|at| at <= now) {
                match spawn(&managed.spec) {
                    Ok(child) => {
                        managed.child = Some(child);
                        managed.restart_at = None;
                        events.push(Event::Restarted(*role));
                    }
                    Err(error) => {
                        note(&managed.spec, &format!("could not start: {error:#}"));
                        managed.restart_at = Some(now + CRASH_RESTART_DELAY);
                    }
                }
            }
        }
        events
    }

    /// Whether `role` is running now.
    pub fn is_running(&self, role: Role) -> bool {
        self.processes.get(&role).is_some_and(|m| m.child.is_some())
    }

    /// The process id of `role`, while it runs.
    pub fn pid(&self, role: Role) -> Option<u32> {
        self.processes
            .get(&role)
            .and_then(|m| m.child.as_ref())
            .and_then(Child::id)
    }

    /// Whether every process is running (none down or waiting to start again).
    pub fn all_up(&self) -> bool {
        self.processes.values().all(|m| m.child.is_some())
    }

    /// How often each process exited without being killed, with how it ended.
    pub fn crashes(&self) -> Vec<(Role, Vec<ExitStatus>)> {
        self.processes
            .iter()
            .filter(|(_, m)| !m.crashes.is_empty())
            .map(|(role, m)| (*role, m.crashes.clone()))
            .collect()
    }

    /// Stops every process: SIGINT (a graceful shutdown), then SIGKILL for those still
    /// running after `grace`. Returns those that needed SIGKILL. The broker goes last, so
    /// the others leave their consumer groups and flush their producers first.
    pub async fn stop(&mut self, grace: Duration) -> Vec<Role> {
        let mut forced = self.stop_but(Role::Broker, grace).await;
        forced.extend(self.stop_only(&[Role::Broker], grace).await);
        forced
    }

    /// Stops every process but `kept` (see [`Fleet::stop`]).
    pub async fn stop_but(&mut self, kept: Role, grace: Duration) -> Vec<Role> {
        let others: Vec<Role> = self
            .processes
            .keys()
            .copied()
            .filter(|r| *r != kept)
            .collect();
        self.stop_only(&others, grace).await
    }

    async fn stop_only(&mut self, roles: &[Role], grace: Duration) -> Vec<Role> {
        let mut forced = Vec::new();
        let stopping: Vec<Role> = roles
            .iter()
            .copied()
            .filter(|role| self.processes.contains_key(role))
            .collect();
        for role in &stopping {
            let managed = self.processes.get_mut(role).expect("listed");
            managed.restart_at = None;
            if let Some(pid) = managed.child.as_ref().and_then(Child::id) {
                interrupt(pid).await;
            }
        }
        let deadline = Instant::now() + grace;
        for role in stopping {
            let managed = self.processes.get_mut(&role).expect("listed");
            let Some(mut child) = managed.child.take() else {
                continue;
            };
            if tokio::time::timeout_at(deadline, child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
                let _ = child.wait().await;
                forced.push(role);
            }
            note(&managed.spec, "stopped at the end of the run");
        }
        forced
    }
}

/// Starts `spec`, output appended to its log.
fn spawn(spec: &ProcessSpec) -> anyhow::Result<Child> {
    note(
        spec,
        &format!(
            "starting {} {}",
            spec.program.display(),
            spec.args.join(" ")
        ),
    );
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("opening {}", spec.log.display()))?;
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    Ok(command.spawn()?)
}

/// Appends a line from the harness to the process's log.
fn note(spec: &ProcessSpec, what: &str) {
    if let Ok(mut log) = OpenOptions::new().create(true).append(true).open(&spec.log) {
        let _ = writeln!(log, "=== chaos {}: {what}", chrono::Utc::now().to_rfc3339());
    }
}

/// Sends SIGINT (what Ctrl-C sends; `sagas` shuts down gracefully on it).
async fn interrupt(pid: u32) {
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(dir: &std::path::Path, name: &str) -> ProcessSpec {
        ProcessSpec {
            program: "sleep".into(),
            args: vec!["30".into()],
            cwd: None,
            env: vec![],
            log: dir.join(format!("{name}.log")),
        }
    }

    #[tokio::test]
    async fn a_killed_process_is_started_again_when_due_and_a_crash_is_noticed() {
        // The harness listens for Ctrl-C, so its children start with SIGINT's default
        // action (a caught signal is reset on exec, an ignored one is not). Listening here
        // too keeps this test right when it runs as a background job, with SIGINT ignored.
        let _listening =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).unwrap();
        let dir = std::env::temp_dir().join(format!("chaos-fleet-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut fleet = Fleet::default();
        let role = Role::Engine(1);
        fleet.start(role, sleeper(&dir, "engine-1")).unwrap();
        let crasher = Role::Broker;
        let mut spec = sleeper(&dir, "broker");
        spec.program = "false".into();
        spec.args.clear();
        fleet.start(crasher, spec).unwrap();

        fleet.kill(role, Duration::from_millis(200)).await.unwrap();
        assert!(!fleet.all_up());
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut events = Vec::new();
        while !events.contains(&Event::Restarted(role)) {
            assert!(Instant::now() < deadline, "not restarted: {events:?}");
            events.extend(fleet.supervise());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while !events
            .iter()
            .any(|e| matches!(e, Event::ExitedOnItsOwn(Role::Broker, _)))
        {
            assert!(Instant::now() < deadline, "crash not noticed: {events:?}");
            events.extend(fleet.supervise());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(fleet.crashes()[0].0, Role::Broker);
        let log = std::fs::read_to_string(dir.join("engine-1.log")).unwrap();
        assert!(log.contains("killed with SIGKILL"), "{log}");
        assert_eq!(log.matches("starting sleep 30").count(), 2, "{log}");

        let forced = fleet.stop(Duration::from_secs(5)).await;
        assert!(forced.is_empty(), "sleep ends on SIGINT: {forced:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
