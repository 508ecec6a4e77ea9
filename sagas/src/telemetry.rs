//! Logs and traces of the `sagas` binary. Logs go to standard error as text or JSON lines;
//! spans are exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (nothing is
//! exported, and nothing is paid for, when it is not).

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cli::LogFormat;

/// What is logged without `RUST_LOG`: warnings, and the engine's own milestones (ready,
/// consumers started and stopped, operator actions).
pub const DEFAULT_LOG_FILTER: &str =
    "warn,saga_engine=info,saga_admin=info,saga_plumbing=info,saga_participant=info,sagas=info";

/// The environment variable that turns trace export on.
pub const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(error) = provider.shutdown() {
                eprintln!("sagas: flushing traces failed: {error}");
            }
        }
    }
}

/// Installs the log output (text with colours on a terminal, JSON lines otherwise, or as
/// `format` says) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the span exporter for
/// service `service`.
pub fn init(format: Option<LogFormat>, service: &str) -> Telemetry {
    let terminal = std::io::stderr().is_terminal();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format.unwrap_or(if terminal {
        LogFormat::Text
    } else {
        LogFormat::Json
    }) {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.with_ansi(terminal).boxed(),
    };
    let (provider, problem) = match std::env::var(OTLP_ENDPOINT) {
        Ok(endpoint) if !endpoint.is_empty() => match exporter(service) {
            Ok(provider) => (Some(provider), None),
            Err(error) => (
                None,
                Some(format!("traces are not exported to {endpoint}: {error}")),
            ),
        },
        _ => (None, None),
    };
    let traces = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("sagas")));
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .init();
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
    Telemetry { provider }
}

fn exporter(service: &str) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_attribute(KeyValue::new("service.name", service.to_string()))
                .build(),
        )
        .build())
}
