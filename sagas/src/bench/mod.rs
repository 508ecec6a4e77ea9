//! `sagas bench`: how many checkout sagas the engine finishes per raw Postgres commit, and
//! how fast, measured in one run on one machine.
//!
//! A run creates a database of its own (`sagabench_<id>`) and topic prefix
//! (`bench-<id>.`) on the configured Postgres and broker, then:
//!
//! 1. measures the raw limit: single-row `INSERT` transactions per second from as many
//!    clients as the engine's pool holds ([`raw`]);
//! 2. starts `--engines` engine processes (one consumer group) and the three domain services
//!    as child processes ([`fleet`]);
//! 3. publishes the demo's checkout mix **open loop**: triggers at a fixed rate, whatever
//!    completes ([`rate`], [`traffic`]); each batch of requests has its own users and
//!    coupons, seeded before it is published ([`workload`], `demo::seed_workload`, `batches`);
//! 4. with `--find-peak`, climbs a ladder of rates, judging after each step whether the
//!    backlog stayed bounded ([`peak`]), and waits for the backlog to drain;
//! 5. warms up, then measures at `--rate` (or half the peak) for `--duration` (or `--soak`,
//!    printing RSS and p99 each minute): latency into an HDR histogram ([`latency`]),
//!    engine RSS before and after, WAL written per saga;
//! 6. waits for every saga to end, stops the processes, checks the demo's invariants and
//!    the event history over every saga of the run, and reports ([`report`]).
//!
//! **Latency** is taken from the lifecycle topic, not from `sagas.updated_at`: the bench
//! publishes the trigger and reads the saga's `finished` event with the same monotonic
//! clock, so no clock of Postgres or of another process enters, and the time to tell the
//! world (the outbox relay's hop) is part of it, as it is for any client waiting on the
//! outcome. The publish moment is the moment the trigger was due on the open-loop schedule.

mod batches;
pub mod fleet;
pub mod latency;
pub mod peak;
pub mod rate;
pub mod raw;
pub mod report;
pub mod traffic;
pub mod workload;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use saga_core::SagaStatus;
use saga_plumbing::db;
use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use self::batches::Batches;
use self::rate::Arrivals;
use self::report::Report;
use self::traffic::{Tag, Tracker};
use self::workload::Mix;
use crate::chaos::broker::{self, Storage};
use crate::chaos::database;
use crate::chaos::processes::Fleet;
use crate::chaos::schedule::Role;
use crate::checkout::{self, TRIGGER_TOPIC};
use crate::demo::verify::{self, Pools};
use crate::domains::Domain;
use crate::services::Deployment;
use crate::settings::Settings;

/// What `sagas bench` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Arrival rate of the measured phase without `find_peak` (sagas per second).
    pub rate: f64,
    /// Search the highest sustained rate first, then measure at half of it.
    pub find_peak: bool,
    /// Length of the measured phase.
    pub duration: Duration,
    /// A soak instead: measure this long and report RSS and p99 each minute.
    pub soak: Option<Duration>,
    /// Unmeasured traffic before the measured phase (and before the peak search).
    pub warmup: Duration,
    /// Which requests.
    pub mix: Mix,
    /// Engine processes in the consumer group.
    pub engines: u8,
    /// Partitions of every topic (the settings' when `None`).
    pub partitions: Option<i32>,
    /// Users per batch of requests.
    pub users: usize,
    /// How long the raw limit is measured.
    pub raw_for: Duration,
    /// First rate of the peak search.
    pub start_rate: f64,
    /// Length of one step of the peak search.
    pub step: Duration,
    /// The peak search stops climbing past this rate.
    pub max_rate: f64,
    /// How long to wait for the backlog to drain (after the search, and at the end).
    pub drain: Duration,
    /// Where the run directory (the processes' logs) is created.
    pub runs_dir: PathBuf,
    /// Flags every child `sagas` process gets before its subcommand.
    pub child_flags: Vec<String>,
    /// Start a broker of the run's own (a fresh tansu on a free port, with this storage)
    /// instead of using the configured one.
    pub own_broker: Option<Storage>,
}

/// Each step of the peak search multiplies the rate by this.
pub const STEP_FACTOR: f64 = 1.5;
/// The peak search descends no lower than this rate (sagas per second).
pub const MIN_RATE: f64 = 1.0;
/// How often the peak search reads the counters.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// A soak prints one line per this much time.
const SOAK_LINE_EVERY: Duration = Duration::from_secs(60);
/// How long processes get to stop on SIGINT before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Prefix of the databases bench runs create.
pub const DATABASE_PREFIX: &str = "sagabench_";

/// Runs the bench against the Postgres server and broker of `settings`; prints progress,
/// and returns the report (the caller prints it and sets the exit code). On `interrupt`
/// it stops every process it started and returns an error.
pub async fn run(
    settings: &Settings,
    options: &Options,
    interrupt: CancellationToken,
) -> anyhow::Result<Report> {
    let run_id = Uuid::new_v4().simple().to_string()[..8].to_string();
    let run_dir = options.runs_dir.join(&run_id);
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let database = format!("{DATABASE_PREFIX}{run_id}");
    let mut run_settings = settings.clone();
    run_settings.database_url = database::create(&settings.database_url, &database).await?;
    run_settings.topics.prefix = format!("bench-{run_id}.");
    if let Some(partitions) = options.partitions {
        run_settings.engine.partitions = partitions;
        run_settings.participant.partitions = partitions;
    }
    let fleet = Arc::new(Mutex::new(Fleet::default()));
    let stop = CancellationToken::new();
    let result = tokio::select! {
        result = async {
            if let Some(storage) = options.own_broker {
                run_settings.kafka.brokers =
                    start_broker(storage, &run_dir, &mut *fleet.lock().await).await?;
            }
            println!(
                "bench: database {database}, topics {}*, broker {}, {} partitions, {} engine(s), \
                 logs in {}",
                run_settings.topics.prefix,
                run_settings.kafka.brokers,
                run_settings.engine.partitions,
                options.engines,
                run_dir.display()
            );
            drive(run_settings, options, &run_dir, fleet.clone(), stop.clone()).await
        } => result,
        _ = interrupt.cancelled() => Err(anyhow::anyhow!("interrupted")),
    };
    stop.cancel();
    fleet.lock().await.stop(STOP_GRACE).await;
    let kept = || {
        println!(
            "bench: kept database {database} and the logs in {} for inspection",
            run_dir.display()
        )
    };
    match result {
        Ok(report) if report.passed() => {
            let _ = database::drop(&settings.database_url, &database).await;
            Ok(report)
        }
        Ok(report) => {
            kept();
            Ok(report)
        }
        Err(error) => {
            kept();
            Err(error)
        }
    }
}

/// Starts a fresh broker for the run, with `storage`, on a free port; returns its address.
/// A fresh broker holds nothing of earlier runs, whose messages slow a long-running one.
async fn start_broker(
    storage: Storage,
    run_dir: &Path,
    fleet: &mut Fleet,
) -> anyhow::Result<String> {
    let addr = crate::chaos::free_port()?;
    let tansu = broker::locate(None)?;
    fleet.start(
        Role::Broker,
        broker::spec_with(&tansu, addr, run_dir, storage),
    )?;
    broker::wait_until_up(addr, crate::chaos::START_TIMEOUT).await?;
    if storage == Storage::Sqlite {
        broker::index_headers(run_dir, crate::chaos::START_TIMEOUT).await?;
    }
    Ok(addr.to_string())
}

/// Everything between creating the database and judging the run.
async fn drive(
    settings: Settings,
    options: &Options,
    run_dir: &std::path::Path,
    fleet: Arc<Mutex<Fleet>>,
    stop: CancellationToken,
) -> anyhow::Result<Report> {
    let raw = raw::measure(
        &settings.database_url,
        settings.engine.pool.max_connections,
        options.raw_for,
    )
    .await?;
    println!(
        "bench: raw limit {:.0} commits/s ({} clients)",
        raw.commits_per_s, raw.clients
    );

    let mut own = settings.clone();
    // The bench's own pools stay small: the processes under test need the connections.
    own.engine.pool.max_connections = 3;
    own.participant.pool.max_connections = 2;
    let deployment = Deployment::new(own);
    deployment.migrate().await.context("migrating")?;
    let mut pools = HashMap::new();
    for domain in Domain::ALL {
        pools.insert(domain, deployment.connect(domain).await?);
    }
    let own = deployment.settings();
    let engine_pool =
        db::connect(&own.connections().db(&own.engine.schema, &own.engine.pool)).await?;
    let topics = deployment.topics();
    let trigger_topic = topics.trigger(TRIGGER_TOPIC);
    deployment
        .kafka()
        .ensure_topics(
            &[&trigger_topic, &topics.lifecycle()],
            settings.engine.partitions,
        )
        .await?;
    let tracker = Tracker::default();
    let following = traffic::follow(
        deployment.kafka(),
        &topics.lifecycle(),
        &format!("{}bench", topics.prefix),
        tracker.clone(),
        stop.clone(),
    )?;

    let started = Instant::now();
    {
        let mut fleet = fleet.lock().await;
        fleet::start(
            &settings,
            options.engines,
            &options.child_flags,
            run_dir,
            &mut fleet,
        )
        .await?;
    }
    println!(
        "bench: {} engine(s) ready after {:.1} s",
        options.engines,
        started.elapsed().as_secs_f64()
    );

    let mut run = Batches {
        pools: &pools,
        producer: deployment.kafka().producer()?,
        topic: trigger_topic,
        tracker: tracker.clone(),
        definition: deployment.checkout()?,
        mix: options.mix,
        users: options.users,
        all: workload::empty(),
        batches: 0,
        measured: Vec::new(),
    };

    let mut search = peak::Search::new(options.start_rate, STEP_FACTOR, MIN_RATE, options.max_rate);
    let rate = if options.find_peak {
        let arrivals = Arrivals::new(options.start_rate, options.warmup.max(SAMPLE_EVERY));
        let batch = run.prepare(&arrivals).await?;
        run.send(batch, arrivals, |_| Tag::Unmeasured).await?;
        while let Some(rate) = search.next_rate() {
            let step = run.step(rate, options.step).await?;
            let verdict = match &step.verdict {
                peak::Verdict::Bounded => "bounded".to_string(),
                peak::Verdict::Unbounded(why) => format!("unbounded: {why}"),
            };
            println!(
                "bench: step {rate:.1}/s: {:.1}/s ended, {} in flight, {verdict}",
                step.completed_per_s, step.in_flight
            );
            search.record(step);
        }
        let Some(peak) = search.peak() else {
            anyhow::bail!("no step of the peak search was bounded, not even {MIN_RATE}/s");
        };
        println!("bench: peak {peak:.1}/s; waiting for the backlog to drain");
        let drained = drain(&engine_pool, &tracker, options.drain).await?;
        anyhow::ensure!(
            drained,
            "the backlog of the peak search did not drain within {:?}",
            options.drain
        );
        peak / 2.0
    } else {
        options.rate
    };

    let measured_for = options.soak.unwrap_or(options.duration);
    println!(
        "bench: measuring at {rate:.1}/s for {} s after {} s of warm-up",
        measured_for.as_secs(),
        options.warmup.as_secs()
    );
    let warmup = options.warmup;
    let monitor = monitor(
        &fleet,
        options.engines,
        &engine_pool,
        &tracker,
        warmup,
        options.soak.is_some().then_some(measured_for),
    );
    let arrivals = Arrivals::new(rate, warmup + measured_for);
    let batch = run.prepare(&arrivals).await?;
    let publishing = run.send(batch, arrivals, |due| {
        if due >= warmup {
            Tag::Measured
        } else {
            Tag::Unmeasured
        }
    });
    let (published, monitored) = tokio::join!(publishing, monitor);
    published?;
    let start_mark = monitored?;
    let (_, ended_at_end) = tracker.counters();
    let achieved_per_s =
        ended_at_end.saturating_sub(start_mark.ended) as f64 / measured_for.as_secs_f64();

    let drained = drain(&engine_pool, &tracker, options.drain).await?;
    if !drained {
        println!("bench: not every saga ended within {:?}", options.drain);
    }
    let wal_bytes: f64 =
        sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::float8")
            .bind(&start_mark.wal_lsn)
            .fetch_one(&engine_pool)
            .await?;
    let rss_end = fleet::engines_rss_mb(&*fleet.lock().await, options.engines);

    stop.cancel();
    let _ = following.await;
    {
        // A broker of the run's own outlives this function's Kafka clients: `run` stops it.
        let mut fleet = fleet.lock().await;
        fleet.stop_but(Role::Broker, STOP_GRACE).await;
        for (role, statuses) in fleet.crashes() {
            println!(
                "bench: {} exited on its own {} times; see its log",
                role.name(),
                statuses.len()
            );
        }
    }

    let outcomes = run.outcomes(&engine_pool).await?;
    let view = Pools {
        engine: &engine_pool,
        balance: &pools[&Domain::Balance],
        points: &pools[&Domain::Points],
        coupons: &pools[&Domain::Coupons],
    };
    let saga_of_order = run.saga_of_order();
    let mut violations = verify::violations(&view, &run.all, &saga_of_order).await?;
    let history = saga_engine::history::verify(&engine_pool).await?;
    violations.extend(history.differences.iter().map(|d| {
        format!(
            "saga {}: stored state is not the fold of its events: {}",
            d.saga_id,
            d.what.join("; ")
        )
    }));
    Ok(Report {
        raw,
        peak: options.find_peak.then(|| search.peak()).flatten(),
        steps: search.steps().to_vec(),
        rate,
        measured_for,
        achieved_per_s,
        latency: tracker.total(),
        unseen: tracker.unseen_measured(),
        engines: usize::from(options.engines),
        rss_mb: (start_mark.rss_mb, rss_end),
        wal_bytes_per_saga: (outcomes.sagas > 0).then(|| wal_bytes / outcomes.sagas as f64),
        outcomes,
        published_total: run.all.requests.len(),
        violations,
    })
}

/// What the run looked like when the measured phase began.
#[derive(Debug, Clone, Default)]
struct Mark {
    ended: u64,
    wal_lsn: String,
    rss_mb: f64,
}

/// Waits out the warm-up, marks the start of the measured phase, and during a soak prints
/// a line per minute.
async fn monitor(
    fleet: &Mutex<Fleet>,
    engines: u8,
    engine_pool: &PgPool,
    tracker: &Tracker,
    warmup: Duration,
    soak: Option<Duration>,
) -> anyhow::Result<Mark> {
    let start = Instant::now();
    tokio::time::sleep(warmup).await;
    tracker.take_window();
    let wal_lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(engine_pool)
        .await?;
    let start_mark = Mark {
        ended: tracker.counters().1,
        wal_lsn,
        rss_mb: fleet::engines_rss_mb(&*fleet.lock().await, engines),
    };
    if let Some(soak) = soak {
        let measured_start = start + warmup;
        let mut minute = 0;
        while SOAK_LINE_EVERY * (minute + 1) <= soak {
            minute += 1;
            tokio::time::sleep_until(measured_start + SOAK_LINE_EVERY * minute).await;
            let window = tracker.take_window();
            let rss = fleet::engines_rss_mb(&*fleet.lock().await, engines);
            let (published, ended) = tracker.counters();
            println!(
                "{}",
                report::soak_line(
                    u64::from(minute),
                    rss,
                    &window,
                    published.saturating_sub(ended)
                )
            );
        }
    }
    Ok(start_mark)
}

/// Polls until every saga published so far has ended (by the table, which needs no
/// lifecycle event) or `within` passes; says which.
async fn drain(pool: &PgPool, tracker: &Tracker, within: Duration) -> anyhow::Result<bool> {
    let until = Instant::now() + within;
    let ended: Vec<&str> = SagaStatus::all()
        .filter(|s| s.is_terminal() || *s == SagaStatus::Parked)
        .map(SagaStatus::as_str)
        .collect();
    loop {
        let (published, _) = tracker.counters();
        let (done,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM sagas WHERE definition = $1 AND status = ANY($2)")
                .bind(checkout::NAME)
                .bind(&ended)
                .fetch_one(pool)
                .await?;
        if done as u64 >= published {
            return Ok(true);
        }
        if Instant::now() >= until {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
