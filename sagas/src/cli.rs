//! The `sagas` command line: parse, then call the library.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::demo::{self, DemoOptions};
use crate::domains::Domain;
use crate::services::Deployment;

/// Saga engine with the checkout scenario.
#[derive(Debug, Parser)]
#[command(name = "sagas", version)]
pub struct Cli {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Connection {
    /// Postgres URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test",
        global = true
    )]
    database_url: String,
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    kafka_brokers: String,
    /// Prefix of every topic name (the demo picks a fresh one per run when unset).
    #[arg(long, env = "TOPIC_PREFIX", global = true)]
    topic_prefix: Option<String>,
    /// Run checkout's forward steps one after the other instead of in parallel.
    #[arg(long, global = true)]
    sequential: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or update the engine's and the domains' tables.
    Migrate,
    /// Run the engine with the checkout definition until Ctrl-C.
    Run,
    /// Run one domain service (balance, points or coupons) until Ctrl-C.
    Participant {
        /// Which domain.
        domain: Domain,
    },
    /// Run the checkout scenario end to end and check its invariants.
    Demo {
        /// Checkout requests to publish.
        #[arg(long, default_value_t = 1_000)]
        requests: usize,
        /// Users the requests are spread over.
        #[arg(long, default_value_t = 100)]
        users: usize,
        /// Seconds to wait for every saga to end.
        #[arg(long, default_value_t = 300)]
        deadline_secs: u64,
    },
}

impl Cli {
    /// Runs the chosen command; the exit code is 0 on success.
    pub async fn run(self) -> anyhow::Result<i32> {
        let is_demo = matches!(self.command, Command::Demo { .. });
        let prefix = match (self.connection.topic_prefix, is_demo) {
            (Some(prefix), _) => prefix,
            (None, true) => format!("demo-{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            (None, false) => String::new(),
        };
        let deployment = Deployment {
            database_url: self.connection.database_url,
            kafka_brokers: self.connection.kafka_brokers,
            topic_prefix: prefix,
            parallel: !self.connection.sequential,
        };
        match self.command {
            Command::Migrate => {
                deployment.migrate().await?;
                println!("migrated the engine and the balance, points and coupons schemas");
            }
            Command::Run => {
                let engine = deployment.engine().await?;
                engine.run(ctrl_c()).await?;
            }
            Command::Participant { domain } => {
                let shutdown = ctrl_c();
                let (_, tasks) = deployment.start_participant(domain, shutdown).await?;
                for task in tasks {
                    task.await?;
                }
            }
            Command::Demo {
                requests,
                users,
                deadline_secs,
            } => {
                let options = DemoOptions {
                    requests,
                    users,
                    deadline: Duration::from_secs(deadline_secs),
                };
                let report = demo::run(&deployment, &options).await?;
                println!("{}", report.render());
                return Ok(if report.passed() { 0 } else { 1 });
            }
        }
        Ok(0)
    }
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
