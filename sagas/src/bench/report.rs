//! The bench's report (pure): the table, the per-minute soak line and the last line, and
//! reading the last line back.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use super::latency::Quantiles;
use super::peak::{Step, Verdict};

/// The raw database limit measured at the start of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct RawLimit {
    /// Concurrent clients (the engine's pool size).
    pub clients: u32,
    /// Single-row `INSERT` transactions committed per second.
    pub commits_per_s: f64,
    /// The server's `synchronous_commit`.
    pub synchronous_commit: String,
}

/// How the measured sagas ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Published in the measured phase.
    pub sagas: usize,
    /// Ended completed.
    pub completed: usize,
    /// Ended compensated.
    pub compensated: usize,
    /// Parked (or resolved by hand).
    pub parked: usize,
    /// Not ended when the run stopped waiting.
    pub stuck: usize,
}

/// Everything the report shows.
#[derive(Debug, Clone)]
pub struct Report {
    /// The raw limit.
    pub raw: RawLimit,
    /// The peak search's steps (empty without `--find-peak`).
    pub steps: Vec<Step>,
    /// The highest sustained rate found, when searched for.
    pub peak: Option<f64>,
    /// Arrival rate of the measured phase.
    pub rate: f64,
    /// Length of the measured phase.
    pub measured_for: Duration,
    /// Sagas of the measured phase that ended, per second of the phase.
    pub achieved_per_s: f64,
    /// Latency from publish to end over the measured phase.
    pub latency: Quantiles,
    /// Measured sagas whose end the lifecycle topic never told (their latency is missing).
    pub unseen: usize,
    /// Engine processes.
    pub engines: usize,
    /// Engine RSS (all engine processes together) before and after the measured phase, MiB.
    pub rss_mb: (f64, f64),
    /// WAL written during the measured phase per measured saga (whole cluster).
    pub wal_bytes_per_saga: Option<f64>,
    /// How the measured sagas ended.
    pub outcomes: Outcomes,
    /// Every saga the run published.
    pub published_total: usize,
    /// Invariant violations over every saga of the run (empty: ok).
    pub violations: Vec<String>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Report {
    /// The figure the last line calls `peak_sagas_per_s`: the peak found, or without a
    /// search the rate the measured phase achieved.
    pub fn peak_figure(&self) -> f64 {
        self.peak.unwrap_or(self.achieved_per_s)
    }

    /// Sagas per raw commit.
    pub fn ratio(&self) -> f64 {
        if self.raw.commits_per_s > 0.0 {
            self.peak_figure() / self.raw.commits_per_s
        } else {
            0.0
        }
    }

    /// Whether every invariant holds and nothing is stuck.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.outcomes.stuck == 0
    }

    /// The table, the violations (at most `max_violations`) and the last line.
    pub fn render(&self, max_violations: usize) -> String {
        let mut out = String::new();
        let raw = &self.raw;
        let _ = writeln!(
            out,
            "raw limit      {:>10.0} commits/s  ({} clients, single-row INSERT per transaction, synchronous_commit={})",
            raw.commits_per_s, raw.clients, raw.synchronous_commit
        );
        if !self.steps.is_empty() {
            let _ = writeln!(
                out,
                "peak search    {:>10} {:>12} {:>10}  verdict",
                "rate/s", "completed/s", "in flight"
            );
            for step in &self.steps {
                let verdict = match &step.verdict {
                    Verdict::Bounded => "bounded".to_string(),
                    Verdict::Unbounded(why) => format!("unbounded: {why}"),
                };
                let _ = writeln!(
                    out,
                    "               {:>10.1} {:>12.1} {:>10}  {verdict}",
                    step.rate, step.completed_per_s, step.in_flight
                );
            }
            match self.peak {
                Some(peak) => {
                    let _ = writeln!(out, "peak           {peak:>10.1} sagas/s sustained");
                }
                None => {
                    let _ = writeln!(
                        out,
                        "peak           none: even the first step was unbounded"
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "measured       {:>10.1} sagas/s offered for {} s, {:.1} sagas/s ended",
            self.rate,
            self.measured_for.as_secs(),
            self.achieved_per_s
        );
        let o = &self.outcomes;
        let _ = writeln!(
            out,
            "outcomes       sagas={} completed={} compensated={} parked={} stuck={} (all phases: {} published)",
            o.sagas, o.completed, o.compensated, o.parked, o.stuck, self.published_total
        );
        let l = &self.latency;
        let _ = writeln!(
            out,
            "latency ms     p50={:.1} p99={:.1} p99.9={:.1} p99.99={:.1} max={:.1} (n={}, publish to end; {} without a lifecycle event)",
            ms(l.p50), ms(l.p99), ms(l.p999), ms(l.p9999), ms(l.max), l.count, self.unseen
        );
        let _ = writeln!(
            out,
            "engine RSS     {:.1} MiB before, {:.1} MiB after the measured phase ({} engine process{})",
            self.rss_mb.0,
            self.rss_mb.1,
            self.engines,
            if self.engines == 1 { "" } else { "es, summed" }
        );
        match self.wal_bytes_per_saga {
            Some(bytes) => {
                let _ = writeln!(
                    out,
                    "WAL            {bytes:>10.0} bytes per saga (whole cluster, measured phase)"
                );
            }
            None => {
                let _ = writeln!(out, "WAL            unknown (no measured saga)");
            }
        }
        for violation in self.violations.iter().take(max_violations) {
            let _ = writeln!(out, "violation: {violation}");
        }
        if self.violations.len() > max_violations {
            let _ = writeln!(
                out,
                "… and {} more violations",
                self.violations.len() - max_violations
            );
        }
        let _ = writeln!(
            out,
            "bench: sagas={} completed={} compensated={} parked={} stuck={} wal_bytes_per_saga={:.0}",
            o.sagas,
            o.completed,
            o.compensated,
            o.parked,
            o.stuck,
            self.wal_bytes_per_saga.unwrap_or(0.0)
        );
        out.push_str(&self.last_line());
        out
    }

    /// `bench: peak_sagas_per_s=… raw_commits_per_s=… ratio=… p50_ms=… … invariants=ok`.
    pub fn last_line(&self) -> String {
        let l = &self.latency;
        format!(
            "bench: peak_sagas_per_s={:.1} raw_commits_per_s={:.0} ratio={:.4} p50_ms={:.1} p99_ms={:.1} p999_ms={:.1} p9999_ms={:.1} rss_start_mb={:.1} rss_end_mb={:.1} invariants={}",
            self.peak_figure(),
            self.raw.commits_per_s,
            self.ratio(),
            ms(l.p50),
            ms(l.p99),
            ms(l.p999),
            ms(l.p9999),
            self.rss_mb.0,
            self.rss_mb.1,
            if self.passed() { "ok" } else { "failed" }
        )
    }
}

/// One soak minute: `soak: minute=3 rss_mb=… p99_ms=… ended=… in_flight=…`.
pub fn soak_line(minute: u64, rss_mb: f64, window: &Quantiles, in_flight: u64) -> String {
    format!(
        "soak: minute={minute} rss_mb={rss_mb:.1} p50_ms={:.1} p99_ms={:.1} ended={} in_flight={in_flight}",
        ms(window.p50),
        ms(window.p99),
        window.count
    )
}

/// The `key=value` fields of a `bench:` line; `None` for any other line.
pub fn parse_line(line: &str) -> Option<BTreeMap<String, String>> {
    let fields = line.strip_prefix("bench: ")?;
    fields
        .split_whitespace()
        .map(|field| {
            let (key, value) = field.split_once('=')?;
            Some((key.to_string(), value.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            raw: RawLimit {
                clients: 10,
                commits_per_s: 8_000.0,
                synchronous_commit: "on".into(),
            },
            steps: vec![],
            peak: Some(96.0),
            rate: 48.0,
            measured_for: Duration::from_secs(60),
            achieved_per_s: 47.9,
            latency: Quantiles {
                count: 2_880,
                p50: Duration::from_micros(61_500),
                p99: Duration::from_millis(180),
                p999: Duration::from_millis(300),
                p9999: Duration::from_millis(410),
                max: Duration::from_millis(420),
            },
            unseen: 0,
            engines: 1,
            rss_mb: (31.24, 33.0),
            wal_bytes_per_saga: Some(26_000.0),
            outcomes: Outcomes {
                sagas: 2_880,
                completed: 2_016,
                compensated: 864,
                parked: 0,
                stuck: 0,
            },
            published_total: 3_500,
            violations: vec![],
        }
    }

    #[test]
    fn the_last_line_has_every_figure_in_order() {
        let report = report();
        assert_eq!(
            report.last_line(),
            "bench: peak_sagas_per_s=96.0 raw_commits_per_s=8000 ratio=0.0120 p50_ms=61.5 \
             p99_ms=180.0 p999_ms=300.0 p9999_ms=410.0 rss_start_mb=31.2 rss_end_mb=33.0 \
             invariants=ok"
        );
        let rendered = report.render(5);
        assert!(rendered.ends_with(&report.last_line()), "{rendered}");
        assert!(
            rendered.contains("bench: sagas=2880 completed=2016"),
            "{rendered}"
        );
        let fields = parse_line(&report.last_line()).unwrap();
        assert_eq!(fields["ratio"], "0.0120");
        assert_eq!(fields["invariants"], "ok");
        assert_eq!(fields.len(), 10);
    }

    #[test]
    fn without_a_search_the_achieved_rate_stands_for_the_peak() {
        let mut report = report();
        report.peak = None;
        assert_eq!(report.peak_figure(), 47.9);
        assert!(report
            .last_line()
            .starts_with("bench: peak_sagas_per_s=47.9 "));
    }

    #[test]
    fn a_violation_or_a_stuck_saga_fails_the_run() {
        let mut report = report();
        report.outcomes.stuck = 1;
        assert!(report.last_line().ends_with("invariants=failed"));
        let mut report = self::report();
        report.violations = (0..7).map(|i| format!("v{i}")).collect();
        let rendered = report.render(5);
        assert!(rendered.contains("violation: v4") && !rendered.contains("violation: v5"));
        assert!(rendered.contains("… and 2 more violations"));
        assert!(!report.passed());
    }

    #[test]
    fn only_bench_lines_parse() {
        assert!(parse_line("chaos: sagas=1").is_none());
        assert!(parse_line("bench: no-equals-sign").is_none());
        let fields = parse_line("bench: a=1 b=x").unwrap();
        assert_eq!(fields["b"], "x");
    }

    #[test]
    fn a_soak_minute_is_one_line() {
        let window = Quantiles {
            count: 2_900,
            p50: Duration::from_millis(60),
            p99: Duration::from_millis(150),
            ..Quantiles::default()
        };
        assert_eq!(
            soak_line(3, 40.04, &window, 7),
            "soak: minute=3 rss_mb=40.0 p50_ms=60.0 p99_ms=150.0 ended=2900 in_flight=7"
        );
    }
}
