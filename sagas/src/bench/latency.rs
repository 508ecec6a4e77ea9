//! Publish-to-end latencies in HDR histograms (pure): one over the whole measured phase and
//! one for the current window (a soak minute), in microseconds.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The longest latency a histogram tells apart (longer ones count as this): one hour.
const HIGHEST_MICROS: u64 = 3_600_000_000;
/// Significant decimal digits kept per value.
const SIGNIFICANT_DIGITS: u8 = 3;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, SIGNIFICANT_DIGITS)
        .expect("the bounds are valid constants")
}

/// The quantiles a report shows.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Quantiles {
    /// How many latencies.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// 99.99th percentile.
    pub p9999: Duration,
    /// Largest.
    pub max: Duration,
}

impl Quantiles {
    /// The quantiles of `histogram` (all zero when it is empty).
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Quantiles::default();
        }
        let at = |q: f64| Duration::from_micros(histogram.value_at_quantile(q));
        Quantiles {
            count: histogram.len(),
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
            p9999: at(0.9999),
            max: Duration::from_micros(histogram.max()),
        }
    }
}

/// The measured phase's latencies.
#[derive(Debug, Clone)]
pub struct Latencies {
    total: Histogram<u64>,
    window: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            total: histogram(),
            window: histogram(),
        }
    }
}

impl Latencies {
    /// Counts one saga's latency in the total and the current window.
    pub fn record(&mut self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, HIGHEST_MICROS);
        self.total.saturating_record(micros);
        self.window.saturating_record(micros);
    }

    /// Quantiles over everything recorded.
    pub fn total(&self) -> Quantiles {
        Quantiles::of(&self.total)
    }

    /// Quantiles of the window since the last call, and a fresh window.
    pub fn take_window(&mut self) -> Quantiles {
        let quantiles = Quantiles::of(&self.window);
        self.window.reset();
        quantiles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_every_recorded_latency() {
        let mut latencies = Latencies::default();
        for ms in 1..=10_000u64 {
            latencies.record(Duration::from_millis(ms));
        }
        let q = latencies.total();
        assert_eq!(q.count, 10_000);
        let near = |d: Duration, ms: f64| (d.as_secs_f64() * 1e3 - ms).abs() <= ms * 0.002;
        assert!(near(q.p50, 5_000.0), "{q:?}");
        assert!(near(q.p99, 9_900.0), "{q:?}");
        assert!(near(q.p999, 9_990.0), "{q:?}");
        assert!(near(q.p9999, 9_999.0), "{q:?}");
        assert!(near(q.max, 10_000.0), "{q:?}");
    }

    #[test]
    fn a_window_starts_afresh_and_the_total_keeps_everything() {
        let mut latencies = Latencies::default();
        latencies.record(Duration::from_millis(500));
        assert_eq!(latencies.take_window().count, 1);
        latencies.record(Duration::from_millis(20));
        let window = latencies.take_window();
        assert_eq!(window.count, 1);
        assert!(window.max < Duration::from_millis(21), "{window:?}");
        assert_eq!(latencies.total().count, 2);
        assert_eq!(latencies.take_window(), Quantiles::default());
    }

    #[test]
    fn a_latency_beyond_an_hour_counts_as_an_hour() {
        let mut latencies = Latencies::default();
        latencies.record(Duration::from_secs(7_200));
        let max = latencies.total().max;
        assert!(max >= Duration::from_secs(3_599) && max <= Duration::from_secs(3_602));
    }
}
