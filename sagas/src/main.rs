//! The `sagas` binary: configuration in, library call, exit code out.

use clap::Parser;
use sagas::cli::Cli;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = Cli::parse().run().await?;
    std::process::exit(code);
}
