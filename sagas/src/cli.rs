//! The `sagas` command line: parse, load the settings, then call the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use figment::value::Value;
use saga_plumbing::db::{self, DatabaseUrl};
use tokio_util::sync::CancellationToken;

use crate::domains::Domain;
use crate::services::Deployment;
use crate::settings::{FlagOverrides, Settings};
use crate::{bench, chaos, demo};

/// Saga engine with the checkout scenario.
#[derive(Debug, Parser)]
#[command(name = "sagas", version)]
pub struct Cli {
    #[command(flatten)]
    flags: GlobalFlags,
    #[command(subcommand)]
    command: Command,
}

/// Flags every command takes; each overrides the file and the environment.
#[derive(Debug, Args)]
struct GlobalFlags {
    /// TOML settings file (see `sagas config` for every key).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Postgres URL (`database_url`; env DATABASE_URL or SAGAS_DATABASE_URL).
    // A `DatabaseUrl`, so that `Debug` never prints its password.
    #[arg(long, global = true, value_parser = database_url)]
    database_url: Option<DatabaseUrl>,
    /// Kafka bootstrap servers (`kafka.brokers`; env KAFKA_BROKERS).
    #[arg(long, global = true, alias = "brokers")]
    kafka_brokers: Option<String>,
    /// Prefix of every topic name (`topics.prefix`; env TOPIC_PREFIX; the demo picks a
    /// fresh one when it is empty).
    #[arg(long, global = true)]
    topic_prefix: Option<String>,
    /// Run checkout's forward steps one after the other (`checkout.parallel = false`).
    #[arg(long, global = true)]
    sequential: bool,
    /// Log lines as `text` or `json` (default: text on a terminal, JSON otherwise).
    #[arg(long, value_enum, global = true)]
    log_format: Option<LogFormat>,
}

impl GlobalFlags {
    /// The flags a child process of `sagas chaos` gets so that it reads the same
    /// settings (the run's database, broker and prefix are added by the harness).
    fn child_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(config) = &self.config {
            flags.extend(["--config".to_string(), config.display().to_string()]);
        }
        if self.sequential {
            flags.push("--sequential".into());
        }
        flags.extend(["--log-format".to_string(), "text".to_string()]);
        flags
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people; colours only on a terminal.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or update the engine's and the domains' tables.
    Migrate,
    /// Run the engine with the checkout definition and the admin API until Ctrl-C.
    Run {
        /// Admin API listen address (`admin.addr`; default 127.0.0.1:8080).
        #[arg(long)]
        admin_addr: Option<std::net::SocketAddr>,
    },
    /// Run one domain service (balance, points or coupons) until Ctrl-C.
    Participant {
        /// Which domain.
        domain: Domain,
        /// Serve this process's `/metrics` here (`participant.metrics_addr`).
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Run the checkout scenario end to end and check its invariants.
    Demo {
        /// Checkout requests to publish (`demo.requests`).
        #[arg(long)]
        requests: Option<usize>,
        /// Users the requests are spread over (`demo.users`).
        #[arg(long)]
        users: Option<usize>,
        /// Seconds to wait for every saga to end (`demo.deadline`).
        #[arg(long)]
        deadline_secs: Option<u64>,
        /// Keep the engine, the services and the admin API (dashboard) up after the
        /// summary, until Ctrl-C.
        #[arg(long)]
        serve: bool,
        /// Admin API listen address with `--serve` (`admin.addr`; default 127.0.0.1:8080).
        #[arg(long)]
        admin_addr: Option<std::net::SocketAddr>,
    },
    /// Print the effective settings (defaults, file, environment, flags), secrets hidden.
    Config,
    /// Inspect and steer sagas through a running engine's admin API.
    Admin(crate::admin_cli::AdminArgs),
    /// Fold every saga's events and compare them with the stored state; exit 1 on any
    /// difference.
    VerifyHistory,
    /// The checkout workload as separate processes under faults (kill -9, broker and
    /// Postgres restarts); exit 1 unless nothing is lost, doubled, stuck or parked.
    Chaos(ChaosArgs),
    /// Open-loop benchmark: the raw commit limit, then the checkout workload at a fixed
    /// rate (or the peak search), latency percentiles, engine RSS and WAL per saga; exit 1
    /// unless every invariant holds.
    Bench(BenchArgs),
    /// Play the engine's side of the participant protocol against a running participant
    /// (any language) and judge its replies; exit 1 on any failed case.
    Conformance(ConformanceArgs),
}

/// Options of `sagas conformance`.
#[derive(Debug, Args)]
struct ConformanceArgs {
    /// The participant: its commands travel on `<prefix><NAME>.commands`. `balance`,
    /// `points` and `coupons` have built-in profiles; any other needs --step and the bodies.
    #[arg(long, value_name = "NAME")]
    participant: String,
    /// The step the commands name (built in: reserve_funds, deduct_points, redeem_coupon).
    #[arg(long)]
    step: Option<String>,
    /// The step is TCC (try / confirm / cancel) rather than compensable.
    #[arg(long)]
    tcc: bool,
    /// A command body the participant accepts, with a visible effect (JSON; `{{saga_id}}`
    /// is replaced by the case's saga id).
    #[arg(long, value_name = "JSON")]
    accepted_body: Option<String>,
    /// A valid command body the participant rejects for a business reason (JSON).
    #[arg(long, value_name = "JSON")]
    rejected_body: Option<String>,
    /// A command body outside the participant's contract (JSON).
    #[arg(long, value_name = "JSON")]
    invalid_body: Option<String>,
    /// A query on the participant's database (--database-url) whose rows stand for the
    /// state the commands touch; checked between commands. Without it, replies alone are
    /// judged.
    #[arg(long, value_name = "SQL")]
    check_sql: Option<String>,
    /// Seconds to wait for each reply or dead letter.
    #[arg(long, default_value_t = 15)]
    timeout_secs: u64,
}

/// Options of `sagas bench`.
#[derive(Debug, Args)]
struct BenchArgs {
    /// Arrival rate of the measured phase, sagas per second (ignored with --find-peak).
    #[arg(long, default_value_t = 50.0, value_parser = positive_rate)]
    rate: f64,
    /// Step the rate up until the backlog grows, report the highest sustained rate, then
    /// measure at half of it.
    #[arg(long)]
    find_peak: bool,
    /// Seconds of the measured phase.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Measure this many seconds instead of --duration, printing RSS and p99 per minute.
    #[arg(long, value_name = "SECONDS")]
    soak: Option<u64>,
    /// Seconds of unmeasured traffic before measuring (and before the peak search).
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// `demo` (70% complete, the rest compensate) or `happy` (all complete).
    #[arg(long, value_enum, default_value_t = bench::workload::Mix::Demo)]
    mix: bench::workload::Mix,
    /// Engine processes in one consumer group.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=16))]
    engines: u8,
    /// Partitions of every topic (`engine.partitions`, `participant.partitions`).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=1024))]
    partitions: Option<i32>,
    /// Users each batch of requests is spread over.
    #[arg(long, default_value_t = 1_000)]
    users: usize,
    /// Seconds the raw commit limit is measured.
    #[arg(long, default_value_t = 5)]
    raw_secs: u64,
    /// First rate of the peak search (sagas per second).
    #[arg(long, default_value_t = 25.0, value_parser = positive_rate)]
    start_rate: f64,
    /// Seconds of each peak-search step.
    #[arg(long, default_value_t = 12)]
    step_secs: u64,
    /// The peak search stops climbing past this rate.
    #[arg(long, default_value_t = 20_000.0, value_parser = positive_rate)]
    max_rate: f64,
    /// Seconds to wait for every saga to end (after the search, and at the end).
    #[arg(long, default_value_t = 120)]
    drain_secs: u64,
    /// Directory under which the run directory (the processes' logs) is created.
    #[arg(long, value_name = "DIR")]
    runs_dir: Option<PathBuf>,
    /// Start a fresh broker of the run's own (tansu, on a free port) with this storage,
    /// instead of using the configured one (`--kafka-brokers`).
    #[arg(long, value_enum, value_name = "STORAGE")]
    own_broker: Option<crate::chaos::broker::Storage>,
}

/// The `--database-url` flag, wrapped at once so that no `Debug` of the flags shows its
/// password (it is checked with the other settings).
fn database_url(value: &str) -> Result<DatabaseUrl, std::convert::Infallible> {
    Ok(DatabaseUrl::new(value))
}

/// Runs `sagas conformance`, printing one line per case and the summary.
async fn conformance(deployment: &Deployment, args: ConformanceArgs) -> anyhow::Result<i32> {
    use crate::conformance::{self, profile};
    let settings = deployment.settings();
    let profile = profile::Profile::resolve(
        &args.participant,
        profile::ProfileFlags {
            step: args.step,
            tcc: args.tcc,
            accepted_body: args.accepted_body,
            rejected_body: args.rejected_body,
            invalid_body: args.invalid_body,
        },
    )
    .map_err(anyhow::Error::msg)?;
    let options = conformance::Options {
        profile,
        check_sql: args.check_sql,
        database: Some(settings.database_url.clone()),
        timeout: std::time::Duration::from_secs(args.timeout_secs.max(1)),
        partitions: settings.participant.partitions,
    };
    let report = conformance::run(&settings.kafka, &settings.topics, &options, |result| {
        println!("{}", result.render())
    })
    .await?;
    println!("{}", report.summary());
    Ok(if report.passed() { 0 } else { 1 })
}

/// A rate flag: a positive number of sagas per second.
fn positive_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "`{value}` is not a positive number of sagas per second"
        )),
    }
}

/// Options of `sagas chaos`.
#[derive(Debug, Args)]
struct ChaosArgs {
    /// A short run: 300 sagas, about a minute of faults.
    #[arg(long)]
    quick: bool,
    /// Sagas (distinct checkout requests); default 300 with --quick, else 10,000.
    #[arg(long)]
    sagas: Option<usize>,
    /// Seed of the fault schedule (printed at the start; random when not given).
    #[arg(long)]
    seed: Option<u64>,
    /// Users the requests are spread over; default 100 with --quick, else 1,000 (ten sagas
    /// per user: with 100, a full run measures lock contention on the users' rows rather
    /// than the faults; see the README).
    #[arg(long)]
    users: Option<usize>,
    /// Seconds to wait, after the last fault, for every saga to end.
    #[arg(long, default_value_t = 300)]
    deadline_secs: u64,
    /// Directory under which the run directory (logs, broker storage) is created.
    #[arg(long, value_name = "DIR")]
    runs_dir: Option<PathBuf>,
    /// Port of the run's own broker on 127.0.0.1 (default: a free one).
    #[arg(long)]
    broker_port: Option<u16>,
    /// The tansu executable (default: on PATH, else ~/.cargo/bin/tansu).
    #[arg(long, value_name = "PATH")]
    tansu: Option<PathBuf>,
    /// Shell command that restarts Postgres.
    #[arg(long, default_value = "bash scripts/services.sh restart-postgres")]
    restart_postgres: String,
}

impl Cli {
    /// The service name traces carry: `sagas-run`, `sagas-participant-balance`, ….
    pub fn service_name(&self) -> String {
        match &self.command {
            Command::Participant { domain, .. } => {
                format!("sagas-participant-{}", domain.name())
            }
            Command::Run { .. } => "sagas-run".into(),
            Command::Demo { .. } => "sagas-demo".into(),
            _ => "sagas".into(),
        }
    }

    /// The `--log-format` asked for, if any.
    pub fn log_format(&self) -> Option<LogFormat> {
        self.flags.log_format
    }

    /// The settings these flags select, over the file and the environment.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let flags = &self.flags;
        let mut overrides: FlagOverrides = Vec::new();
        let mut set = |key, value: Option<Value>| {
            if let Some(value) = value {
                overrides.push((key, value));
            }
        };
        set(
            "database_url",
            flags
                .database_url
                .as_ref()
                .map(|url| Value::from(url.expose())),
        );
        set(
            "kafka.brokers",
            flags.kafka_brokers.clone().map(Value::from),
        );
        set("topics.prefix", flags.topic_prefix.clone().map(Value::from));
        set("checkout.parallel", flags.sequential.then(|| false.into()));
        if let Command::Run { admin_addr } | Command::Demo { admin_addr, .. } = &self.command {
            set("admin.addr", admin_addr.map(|a| Value::from(a.to_string())));
        }
        if let Command::Participant { metrics_addr, .. } = &self.command {
            set(
                "participant.metrics_addr",
                metrics_addr.map(|a| Value::from(a.to_string())),
            );
        }
        if let Command::Demo {
            requests,
            users,
            deadline_secs,
            ..
        } = &self.command
        {
            set("demo.requests", requests.map(Value::from));
            set("demo.users", users.map(Value::from));
            set(
                "demo.deadline",
                deadline_secs.map(|s| Value::from(format!("{s}s"))),
            );
        }
        Ok(Settings::load(flags.config.as_deref(), overrides)?)
    }

    /// Runs the chosen command; the exit code is 0 on success.
    pub async fn run(self) -> anyhow::Result<i32> {
        let mut settings = self.settings()?;
        if matches!(self.command, Command::Demo { .. }) && settings.topics.prefix.is_empty() {
            let run = uuid::Uuid::new_v4().simple().to_string();
            settings.topics.prefix = format!("demo-{}.", &run[..8]);
        }
        let deployment = Deployment::new(settings);
        match self.command {
            Command::Conformance(args) => return conformance(&deployment, args).await,
            Command::Migrate => {
                deployment.migrate().await.context("migrating")?;
                println!("migrated the engine and the balance, points and coupons schemas");
            }
            Command::Run { .. } => deployment.serve_engine(ctrl_c()).await?,
            Command::Participant { domain, .. } => {
                let shutdown = ctrl_c();
                let metrics = match deployment.settings().participant.metrics_addr {
                    Some(addr) => {
                        let listener = tokio::net::TcpListener::bind(addr)
                            .await
                            .with_context(|| format!("cannot serve metrics on {addr}"))?;
                        tracing::info!(addr = %listener.local_addr()?, "metrics listening");
                        Some(tokio::spawn(saga_admin::metrics::serve_process_metrics(
                            listener,
                            shutdown.clone(),
                        )))
                    }
                    None => None,
                };
                saga_admin::metrics::handle();
                let stop = shutdown.child_token();
                let running = deployment.start_participant(domain, stop.clone()).await?;
                running.supervise(&shutdown, &stop).await?;
                if let Some(metrics) = metrics {
                    metrics.await??;
                }
            }
            Command::Demo { serve: false, .. } => {
                let report = demo::run(&deployment).await?;
                println!("{}", report.render());
                return Ok(if report.passed() { 0 } else { 1 });
            }
            Command::Demo { serve: true, .. } => {
                let read_only = matches!(deployment.settings().admin.resolve_token(), Ok(None));
                let report = demo::run_and_serve(&deployment, ctrl_c(), |report, url| {
                    println!("{}", report.render());
                    if read_only {
                        println!(
                            "the admin API only reads: set SAGAS_ADMIN_TOKEN to start, resume \
                             or replay from the dashboard and the CLI"
                        );
                    }
                    println!(
                        "dashboard: {url}/ — the engine, the services and the admin API stay up \
                         until Ctrl-C (try: sagas admin --admin-url {url} list)"
                    );
                })
                .await?;
                return Ok(if report.passed() { 0 } else { 1 });
            }
            Command::Config => print!("{}", deployment.settings().to_toml()),
            Command::VerifyHistory => return verify_history(&deployment).await,
            Command::Chaos(args) => {
                let options = chaos::Options {
                    quick: args.quick,
                    sagas: args.sagas,
                    seed: args.seed,
                    users: args
                        .users
                        .unwrap_or(if args.quick { 100 } else { 1_000 })
                        .max(1),
                    deadline: std::time::Duration::from_secs(args.deadline_secs),
                    runs_dir: args
                        .runs_dir
                        .unwrap_or_else(|| std::env::temp_dir().join("sagas-chaos")),
                    broker_port: args.broker_port,
                    tansu: args.tansu,
                    restart_postgres: args.restart_postgres,
                    child_flags: self.flags.child_flags(),
                };
                let verdict = chaos::run(deployment.settings(), &options, interrupted()).await?;
                println!("{}", verdict.render(20));
                return Ok(if verdict.passed() { 0 } else { 1 });
            }
            Command::Bench(args) => {
                let secs = std::time::Duration::from_secs;
                let options = bench::Options {
                    rate: args.rate,
                    find_peak: args.find_peak,
                    duration: secs(args.duration.max(1)),
                    soak: args.soak.map(|s| secs(s.max(1))),
                    warmup: secs(args.warmup),
                    mix: args.mix,
                    engines: args.engines,
                    partitions: args.partitions,
                    users: args.users.max(1),
                    raw_for: secs(args.raw_secs.max(1)),
                    start_rate: args.start_rate,
                    step: secs(args.step_secs.max(2)),
                    max_rate: args.max_rate,
                    drain: secs(args.drain_secs),
                    runs_dir: args
                        .runs_dir
                        .unwrap_or_else(|| std::env::temp_dir().join("sagas-bench")),
                    child_flags: self.flags.child_flags(),
                    own_broker: args.own_broker,
                };
                let report = bench::run(deployment.settings(), &options, interrupted()).await?;
                println!("{}", report.render(20));
                return Ok(if report.passed() { 0 } else { 1 });
            }
            Command::Admin(args) => {
                let token = deployment.settings().admin.resolve_token().ok().flatten();
                let output = args.execute(token.as_ref().map(|t| t.expose())).await?;
                println!("{}", output.text);
                return Ok(output.code);
            }
        }
        Ok(0)
    }
}

/// `sagas verify-history`: prints what it checked and every saga that differs.
async fn verify_history(deployment: &Deployment) -> anyhow::Result<i32> {
    let settings = deployment.settings();
    let db = settings
        .connections()
        .db(&settings.engine.schema, &settings.engine.pool);
    let pool = db::connect(&db).await.context("connecting to Postgres")?;
    let report = saga_engine::history::verify(&pool).await?;
    println!("{}", report.render());
    Ok(if report.matches() { 0 } else { 1 })
}

/// A token cancelled on Ctrl-C or SIGTERM.
fn interrupted() -> CancellationToken {
    let token = ctrl_c();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(terminate) => terminate,
                Err(_) => return,
            };
        terminate.recv().await;
        cancel.cancel();
    });
    token
}

/// A token cancelled on Ctrl-C.
fn ctrl_c() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        cancel.cancel();
    });
    token
}

#[cfg(test)]
// `Jail::expect_with` fixes the closure's error type to figment's own.
#[allow(clippy::result_large_err)]
mod tests {
    use clap::Parser;
    use figment::Jail;

    use super::*;

    #[test]
    fn debug_of_the_command_line_shows_no_password_and_no_token() {
        Jail::expect_with(|jail| {
            // The process's own DATABASE_URL, SAGAS_ADMIN_TOKEN, … must not leak in.
            jail.clear_env();
            let cli = Cli::try_parse_from([
                "sagas",
                "--database-url",
                "postgres://app:s3cret@db:5432/sagas",
                "admin",
                "--token",
                "t0ken-xyz",
                "list",
            ])
            .unwrap();
            let shown = format!("{cli:?}");
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(!shown.contains("t0ken-xyz"), "{shown}");
            assert!(
                shown.contains("postgres://app:***@db:5432/sagas"),
                "{shown}"
            );
            assert!(shown.contains("token: Some(\"***\")"), "{shown}");
            // The settings still get the real URL.
            let settings = cli.settings().unwrap();
            assert_eq!(
                settings.database_url.expose(),
                "postgres://app:s3cret@db:5432/sagas"
            );
            Ok(())
        });
    }
}
