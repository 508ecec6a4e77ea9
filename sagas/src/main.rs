//! The `sagas` binary: configuration in, library call, exit code out.

use clap::Parser;
use sagas::cli::Cli;
use sagas::telemetry;

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let telemetry = telemetry::init(cli.log_format(), &cli.service_name());
    let code = match cli.run().await {
        Ok(code) => code,
        Err(error) => {
            // One line: what failed and why, each cause after a colon.
            eprintln!("sagas: {error:#}");
            2
        }
    };
    telemetry.shutdown();
    std::process::exit(code);
}
