//! The demo's report (pure): a table per request kind and the one-line summary.

use std::fmt::Write;
use std::time::Duration;

use saga_core::SagaStatus;

use super::workload::Kind;

/// Counts for one row of the table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Requests.
    pub sagas: usize,
    /// Ended completed.
    pub completed: usize,
    /// Ended compensated.
    pub compensated: usize,
    /// Parked.
    pub parked: usize,
    /// Not finished at the deadline.
    pub stuck: usize,
}

impl Tally {
    /// Counts one saga in `status` at the deadline (`None`: it never started).
    pub fn add(&mut self, status: Option<SagaStatus>) {
        self.sagas += 1;
        match status {
            Some(SagaStatus::Completed) => self.completed += 1,
            Some(SagaStatus::Compensated) => self.compensated += 1,
            // Both needed an operator; the demo's summary counts them together.
            Some(SagaStatus::Parked | SagaStatus::ResolvedManually) => self.parked += 1,
            Some(SagaStatus::Running | SagaStatus::Compensating) | None => self.stuck += 1,
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.sagas += other.sagas;
        self.completed += other.completed;
        self.compensated += other.compensated;
        self.parked += other.parked;
        self.stuck += other.stuck;
    }
}

/// Everything the report shows.
#[derive(Debug, Clone)]
pub struct Report {
    /// One row per request kind.
    pub rows: Vec<(Kind, Tally)>,
    /// Duplicate triggers published.
    pub duplicates: usize,
    /// Messages sent to the DLQ during the run.
    pub dead_lettered: u64,
    /// Invariant violations (empty: ok).
    pub violations: Vec<String>,
    /// Trigger-publish-to-terminal latencies.
    pub latencies: Vec<Duration>,
    /// From the first publish to the last terminal state.
    pub elapsed: Duration,
}

/// The `q`-quantile (0..=1) of `values` by nearest rank; zero when empty.
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl Report {
    /// Sum over all rows.
    pub fn total(&self) -> Tally {
        let mut total = Tally::default();
        for (_, tally) in &self.rows {
            total.merge(tally);
        }
        total
    }

    /// Whether the run passed: nothing stuck, every invariant held.
    pub fn passed(&self) -> bool {
        self.total().stuck == 0 && self.violations.is_empty()
    }

    /// The table, the violations (if any) and the summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, label: &str, t: &Tally| {
            let _ = writeln!(
                out,
                "{label:<22} {:>7} {:>10} {:>12} {:>7} {:>6}",
                t.sagas, t.completed, t.compensated, t.parked, t.stuck
            );
        };
        let _ = writeln!(
            out,
            "{:<22} {:>7} {:>10} {:>12} {:>7} {:>6}",
            "request kind", "sagas", "completed", "compensated", "parked", "stuck"
        );
        for (kind, tally) in &self.rows {
            line(&mut out, kind.label(), tally);
        }
        let total = self.total();
        line(&mut out, "all", &total);
        let _ = writeln!(out, "duplicate triggers published: {}", self.duplicates);
        let _ = writeln!(out, "messages dead-lettered: {}", self.dead_lettered);
        for violation in self.violations.iter().take(20) {
            let _ = writeln!(out, "invariant violated: {violation}");
        }
        let per_second = if self.elapsed.is_zero() {
            0.0
        } else {
            total.sagas as f64 / self.elapsed.as_secs_f64()
        };
        let _ = write!(
            out,
            "summary: sagas={} completed={} compensated={} parked={} stuck={} invariants={} p50_ms={} p99_ms={} sagas_per_s={:.1}",
            total.sagas,
            total.completed,
            total.compensated,
            total.parked,
            total.stuck,
            if self.violations.is_empty() { "ok" } else { "FAILED" },
            quantile(&self.latencies, 0.50).as_millis(),
            quantile(&self.latencies, 0.99).as_millis(),
            per_second
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let values = ms(&[50, 10, 40, 20, 30]);
        assert_eq!(quantile(&values, 0.5), Duration::from_millis(30));
        assert_eq!(quantile(&values, 0.99), Duration::from_millis(50));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn the_summary_line_has_the_agreed_form() {
        let mut happy = Tally::default();
        happy.add(Some(SagaStatus::Completed));
        happy.add(Some(SagaStatus::Completed));
        let mut rejected = Tally::default();
        rejected.add(Some(SagaStatus::Compensated));
        rejected.add(Some(SagaStatus::Running));
        let report = Report {
            rows: vec![(Kind::Happy, happy), (Kind::UsedCoupon, rejected)],
            duplicates: 1,
            dead_lettered: 0,
            violations: vec![],
            latencies: ms(&[10, 20, 30]),
            elapsed: Duration::from_secs(2),
        };
        let text = report.render();
        assert_eq!(
            text.lines().last().unwrap(),
            "summary: sagas=4 completed=2 compensated=1 parked=0 stuck=1 invariants=ok p50_ms=20 p99_ms=30 sagas_per_s=2.0"
        );
        assert!(!report.passed(), "a stuck saga fails the run");
    }

    #[test]
    fn a_violation_fails_the_run() {
        let report = Report {
            rows: vec![],
            duplicates: 0,
            dead_lettered: 0,
            violations: vec!["user 1: 5 cents still frozen".into()],
            latencies: vec![],
            elapsed: Duration::ZERO,
        };
        assert!(report.render().contains("invariants=FAILED"));
        assert!(!report.passed());
    }
}
