//! `sagas chaos`: the demo as separate processes, under faults.
//!
//! Starts a broker of its own (tansu, SQLite storage, its own port), a fresh database and
//! topic prefix, then two engines (one consumer group) and the three domain services as
//! child processes. While the checkout workload is published (every trigger twice, plus
//! poison messages), it kills engines and services with SIGKILL and starts them again,
//! restarts the broker and Postgres. Then it waits for every saga to end and judges the
//! run: nothing lost, doubled, stuck or parked, every invariant holds.
//!
//! - [`schedule`]: the seeded plan of publishes and faults (pure).
//! - [`processes`]: starting, killing and restarting the child processes.
//! - [`broker`]: the run's own broker.
//! - [`faults`]: injecting the faults and supervising the fleet.
//! - [`publish`]: the triggers and poison messages, through broker restarts.
//! - [`database`]: the run's own database.
//! - [`check`], [`doubled`]: judging the tables afterwards; [`report`]: the verdict (pure).

pub mod broker;
pub mod check;
pub mod database;
pub mod doubled;
pub mod faults;
pub mod processes;
pub mod publish;
pub mod report;
pub mod schedule;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use saga_core::SagaStatus;
use saga_plumbing::db;
use sqlx::PgPool;
use tokio::sync::{watch, Mutex};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::faults::{say, Director, Progress};
use self::processes::{Fleet, ProcessSpec};
use self::report::Verdict;
use self::schedule::{Publish, Role, Schedule, Shape};
use crate::checkout::{self, TRIGGER_TOPIC};
use crate::demo::verify::Pools;
use crate::demo::{generate, seed};
use crate::domains::Domain;
use crate::services::Deployment;
use crate::settings::Settings;

/// What `sagas chaos` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The short run (300 sagas, about a minute of faults) instead of the full one.
    pub quick: bool,
    /// Sagas (distinct orders); default 300 quick, 10,000 full.
    pub sagas: Option<usize>,
    /// Seed of the schedule; random (and printed) when not given.
    pub seed: Option<u64>,
    /// Users the requests are spread over.
    pub users: usize,
    /// How long to wait, after the last fault, for every saga to end.
    pub deadline: Duration,
    /// Where the run directory (logs, broker storage) is created.
    pub runs_dir: PathBuf,
    /// The run's broker listens on this port of 127.0.0.1 (a free one when `None`).
    pub broker_port: Option<u16>,
    /// The `tansu` executable (found on PATH or in ~/.cargo/bin when not given).
    pub tansu: Option<PathBuf>,
    /// Shell command that restarts Postgres.
    pub restart_postgres: String,
    /// Flags every child `sagas` process gets before its subcommand (`--config`, …).
    pub child_flags: Vec<String>,
}

/// How long processes get to stop on SIGINT before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long a message is sent again before the run gives up on it.
const PUBLISH_GIVE_UP: Duration = Duration::from_secs(120);
/// How long the broker and the engines get to come up at the start.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Broker storage panics after which the run stops waiting: the broker, not the engine,
/// decides the outcome from then on.
const BROKER_PANIC_LIMIT: usize = 3;

/// Runs the fault harness with `settings` (Postgres server, engine and service settings)
/// and returns its verdict (the caller prints it and sets the exit code). On `interrupt`
/// it stops every process it started and returns an error.
pub async fn run(
    settings: &Settings,
    options: &Options,
    interrupt: CancellationToken,
) -> anyhow::Result<Verdict> {
    let shape = match (options.quick, options.sagas) {
        (true, Some(sagas)) => Shape {
            sagas,
            ..Shape::quick()
        },
        (true, None) => Shape::quick(),
        (false, sagas) => Shape::full(sagas.unwrap_or(10_000)),
    };
    let seed = options
        .seed
        .unwrap_or_else(|| Uuid::new_v4().as_u64_pair().0);
    let schedule = Schedule::plan(seed, &shape);
    let (kills, broker_restarts, pg_restarts) = schedule.fault_counts();
    let run_id = Uuid::new_v4().simple().to_string()[..8].to_string();
    let run_dir = options.runs_dir.join(&run_id);
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    println!(
        "chaos: seed={seed} sagas={} window={}s kills={kills} broker_restarts={broker_restarts} \
         pg_restarts={pg_restarts} run_dir={}",
        shape.sagas,
        shape.window.as_secs(),
        run_dir.display()
    );
    println!(
        "chaos: the same schedule again: sagas chaos{} --sagas {} --seed {seed}",
        if options.quick { " --quick" } else { "" },
        shape.sagas
    );

    let database = format!("{}{run_id}", database::NAME_PREFIX);
    let database_url = database::create(&settings.database_url, &database).await?;
    let mut run_settings = settings.clone();
    run_settings.database_url = database_url;
    let broker_addr = match options.broker_port {
        Some(port) => SocketAddr::from(([127, 0, 0, 1], port)),
        None => free_port()?,
    };
    run_settings.kafka.brokers = broker_addr.to_string();
    // tansu's SQLite storage panics in its idempotent-produce check under restarts and
    // load, and then refuses every request: the run's producers are not idempotent (see
    // `kafka.idempotence`), so a re-sent batch may be stored twice, which the inboxes absorb.
    run_settings.kafka.idempotence = false;
    run_settings.topics.prefix = format!("chaos-{run_id}.");
    // The harness's own pools stay small: the children need the connections.
    run_settings.engine.pool.max_connections = 3;
    run_settings.participant.pool.max_connections = 2;
    let deployment = Deployment::new(run_settings);

    let fleet = Arc::new(Mutex::new(Fleet::default()));
    let stop = CancellationToken::new();
    let result = tokio::select! {
        result = drive(&deployment, options, &schedule, &run_dir, broker_addr, fleet.clone(), stop.clone()) => result,
        _ = interrupt.cancelled() => Err(anyhow::anyhow!("interrupted")),
    };
    // Whatever happened, no child outlives the run.
    stop.cancel();
    fleet.lock().await.stop(STOP_GRACE).await;
    let verdict = result?;
    if verdict.passed() {
        let _ = database::drop(&settings.database_url, &database).await;
        for file in std::fs::read_dir(&run_dir)?.flatten() {
            if file
                .file_name()
                .to_string_lossy()
                .starts_with(broker::STORAGE_FILE)
            {
                let _ = std::fs::remove_file(file.path());
            }
        }
    } else {
        println!(
            "chaos: kept database {database} and the logs in {} for inspection",
            run_dir.display()
        );
    }
    Ok(verdict)
}

/// Everything between setting up and judging. `fleet` holds the processes so that the
/// caller can stop them whatever happens here (`stop` ends the supervision).
async fn drive(
    deployment: &Deployment,
    options: &Options,
    schedule: &Schedule,
    run_dir: &Path,
    broker_addr: SocketAddr,
    fleet: Arc<Mutex<Fleet>>,
    stop: CancellationToken,
) -> anyhow::Result<Verdict> {
    let settings = deployment.settings();
    let sagas = schedule
        .publishes
        .iter()
        .filter(|p| matches!(p.what, Publish::Trigger { .. }))
        .count()
        / 2;
    let workload = generate(sagas, options.users);
    let poison_sent = schedule.publishes.len() - 2 * sagas;

    anyhow::ensure!(
        !broker::answers(broker_addr).await,
        "something already listens on {}: stop it or pass --broker-port",
        broker_addr
    );
    let tansu = broker::locate(options.tansu.as_deref())?;
    let broker_spec = broker::spec(&tansu, broker_addr, run_dir);
    let broker_watch = broker::PanicWatch::new(&broker_spec.log);
    fleet.lock().await.start(Role::Broker, broker_spec)?;
    broker::wait_until_up(broker_addr, START_TIMEOUT).await?;
    broker::index_headers(run_dir, START_TIMEOUT).await?;

    deployment.migrate().await.context("migrating")?;
    let mut pools = HashMap::new();
    for domain in Domain::ALL {
        pools.insert(domain, deployment.connect(domain).await?);
    }
    seed(&pools, &workload).await.context("seeding")?;
    let engine_db = settings
        .connections()
        .db(&settings.engine.schema, &settings.engine.pool);
    let engine_pool = db::connect(&engine_db).await?;
    let trigger_topic = deployment.topics().trigger(TRIGGER_TOPIC);
    deployment
        .kafka()
        .ensure_topics(&[&trigger_topic], settings.engine.partitions)
        .await?;

    let exe = std::env::current_exe().context("locating the sagas binary")?;
    let mut common = options.child_flags.clone();
    common.extend(connection_flags(settings));
    let mut admin_addrs = Vec::new();
    for n in [1, 2] {
        let addr = free_port()?;
        admin_addrs.push(addr);
        let mut args = common.clone();
        args.extend(["run".into(), "--admin-addr".into(), addr.to_string()]);
        let spec = without_idempotence(sagas_spec(&exe, args, run_dir, Role::Engine(n)));
        fleet.lock().await.start(Role::Engine(n), spec)?;
    }
    for domain in Domain::ALL {
        let mut args = common.clone();
        args.extend(["participant".into(), domain.name().into()]);
        let role = Role::Participant(domain);
        let spec = without_idempotence(sagas_spec(&exe, args, run_dir, role));
        fleet.lock().await.start(role, spec)?;
    }
    for addr in &admin_addrs {
        wait_until_ready(*addr, START_TIMEOUT).await?;
    }

    let definition = deployment.checkout()?;
    let saga_of_order: HashMap<Uuid, Uuid> = workload
        .requests
        .iter()
        .map(|r| {
            let order = r.body.order_id;
            (order, definition.saga_id(&order.to_string()))
        })
        .collect();

    let start = Instant::now();
    say(start, "publishing; faults begin");
    let director = Director {
        fleet: fleet.clone(),
        faults: schedule.faults.clone(),
        start,
        restart_postgres: options.restart_postgres.clone(),
        postgres_log: run_dir.join("postgres-restarts.log"),
        broker_watch,
    };
    let (progress_tx, mut progress) = watch::channel(Progress::default());
    let directing = tokio::spawn(director.run(progress_tx, stop.clone()));

    let published = publish::run(
        deployment.kafka(),
        &trigger_topic,
        &workload,
        &schedule.publishes,
        start,
        PUBLISH_GIVE_UP,
    )
    .await;
    say(start, "published every message");
    let last_fault = schedule
        .faults
        .last()
        .map_or(Duration::ZERO, |f| f.at + f.what.span());
    let faults_done = tokio::time::timeout_at(
        start + last_fault + START_TIMEOUT,
        progress.wait_for(|p| p.done),
    )
    .await
    .is_ok_and(|waited| waited.is_ok());
    if faults_done {
        say(
            start,
            "every fault injected and every process up again; waiting for the sagas",
        );
    }
    let broker_failed = progress.clone();
    let ended = wait_until_ended(&engine_pool, sagas, options.deadline, start, || {
        broker_failed.borrow().broker_panics >= BROKER_PANIC_LIMIT
    })
    .await;
    say(start, &format!("{ended} of {sagas} sagas ended"));

    stop.cancel();
    directing.await.context("the fault director")?;
    let crashes = {
        let mut fleet = fleet.lock().await;
        fleet.stop(STOP_GRACE).await;
        fleet.crashes()
    };
    let progress = progress.borrow().clone();
    if progress.broker_panics > 0 {
        println!(
            "chaos: the broker's storage panicked {} times and was restarted (a tansu defect, \
             not the engine's; see broker.log)",
            progress.broker_panics
        );
    }
    let broker_failed = progress.broker_panics >= BROKER_PANIC_LIMIT;

    let pools_view = Pools {
        engine: &engine_pool,
        balance: &pools[&Domain::Balance],
        points: &pools[&Domain::Points],
        coupons: &pools[&Domain::Coupons],
    };
    let mut verdict = check::judge(
        &pools_view,
        &workload,
        &saga_of_order,
        poison_sent,
        progress.injected,
    )
    .await?;
    verdict.harness_errors.extend(progress.errors);
    match published {
        Ok(published) => verdict.harness_errors.extend(published.failures),
        Err(error) => verdict
            .harness_errors
            .push(format!("publishing stopped: {error:#}")),
    }
    if broker_failed {
        verdict.harness_errors.push(format!(
            "the broker's storage panicked {} times (tansu 0.6 defect); the run stopped \
             waiting, and what is stuck says nothing about the engine",
            progress.broker_panics
        ));
    }
    if !faults_done {
        verdict
            .harness_errors
            .push("the faults did not finish, or a process did not come back".into());
    }
    for (role, statuses) in crashes {
        let how: Vec<String> = statuses.iter().map(|s| s.to_string()).collect();
        println!(
            "chaos: {} exited on its own {} times ({}); see {}",
            role.name(),
            statuses.len(),
            how.join(", "),
            run_dir.join(format!("{}.log", role.name())).display()
        );
    }
    Ok(verdict)
}

/// `spec` with producers that are not idempotent, like the harness's own (see `run`).
fn without_idempotence(mut spec: ProcessSpec) -> ProcessSpec {
    spec.env
        .push(("SAGAS_KAFKA__IDEMPOTENCE".into(), "false".into()));
    spec
}

/// How to start `sagas` with `args` as `role`.
pub(crate) fn sagas_spec(exe: &Path, args: Vec<String>, run_dir: &Path, role: Role) -> ProcessSpec {
    ProcessSpec {
        program: exe.to_path_buf(),
        args,
        cwd: None,
        env: vec![],
        log: run_dir.join(format!("{}.log", role.name())),
    }
}

/// Ports the run's listeners are picked from: below Linux's ephemeral range (32768 and
/// up), so that no outgoing connection takes one while its process is down, and random,
/// so that runs side by side do not meet.
const PORTS: std::ops::Range<u16> = 20_000..30_000;

/// A loopback address with a port from [`PORTS`] that nobody listens on right now.
pub(crate) fn free_port() -> anyhow::Result<SocketAddr> {
    for _ in 0..100 {
        let span = u128::from(PORTS.end - PORTS.start);
        let port = PORTS.start + (Uuid::new_v4().as_u128() % span) as u16;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if std::net::TcpListener::bind(addr).is_ok() {
            return Ok(addr);
        }
    }
    anyhow::bail!("no free port in {PORTS:?} on 127.0.0.1")
}

/// Waits until the engine's admin API at `addr` says it is ready.
pub(crate) async fn wait_until_ready(addr: SocketAddr, within: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/readyz");
    let deadline = Instant::now() + within;
    loop {
        let ready = client
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the engine at {addr} was not ready within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls until `expected` checkout sagas are terminal or parked, `deadline` passes or
/// `give_up` says so; returns how many were. Postgres may be restarting: a failed query is
/// tried again.
async fn wait_until_ended(
    pool: &PgPool,
    expected: usize,
    deadline: Duration,
    start: Instant,
    give_up: impl Fn() -> bool,
) -> usize {
    let until = Instant::now() + deadline;
    let done: Vec<&str> = SagaStatus::all()
        .filter(|s| s.is_terminal() || *s == SagaStatus::Parked)
        .map(SagaStatus::as_str)
        .collect();
    let mut ended = 0;
    let mut next_report = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let counted: sqlx::Result<(i64,)> =
            sqlx::query_as("SELECT count(*) FROM sagas WHERE definition = $1 AND status = ANY($2)")
                .bind(checkout::NAME)
                .bind(&done)
                .fetch_one(pool)
                .await;
        if let Ok((count,)) = counted {
            ended = count as usize;
        }
        if ended >= expected || give_up() {
            break;
        }
        if Instant::now() >= next_report {
            say(start, &format!("{ended} of {expected} sagas ended"));
            next_report += Duration::from_secs(10);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ended
}

/// The flags that point a child process at the run's database, broker and topic prefix.
pub(crate) fn connection_flags(settings: &Settings) -> [String; 6] {
    [
        "--database-url".to_string(),
        settings.database_url.expose().to_string(),
        "--kafka-brokers".to_string(),
        settings.kafka.brokers.clone(),
        "--topic-prefix".to_string(),
        settings.topics.prefix.clone(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_free_and_outside_the_ephemeral_range() {
        for _ in 0..20 {
            let addr = free_port().unwrap();
            assert!(PORTS.contains(&addr.port()), "{addr}");
            assert!(addr.port() < 32_768);
            std::net::TcpListener::bind(addr).expect("still free");
        }
    }
}
