//! When each trigger is due (pure): an open-loop arrival schedule at a fixed rate.

use std::time::Duration;

/// Triggers at a fixed rate, independent of completions: trigger `i` (from 0) is due
/// `i / rate` seconds after the start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrivals {
    rate: f64,
    count: usize,
}

impl Arrivals {
    /// `rate` triggers per second for `span`: `ceil(rate × span)` triggers, at least one.
    /// `rate` must be positive.
    pub fn new(rate: f64, span: Duration) -> Self {
        assert!(rate > 0.0, "an arrival rate must be positive, got {rate}");
        let count = (rate * span.as_secs_f64()).ceil().max(1.0) as usize;
        Arrivals { rate, count }
    }

    /// Triggers per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// How many triggers the schedule holds.
    pub fn count(&self) -> usize {
        self.count
    }

    /// When trigger `i` is due, from the start.
    pub fn due_at(&self, i: usize) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// How many triggers are due `elapsed` after the start (never more than the schedule
    /// holds): the publisher sends until it has sent this many.
    pub fn due_by(&self, elapsed: Duration) -> usize {
        let due = (elapsed.as_secs_f64() * self.rate).floor() as usize + 1;
        due.min(self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_are_spread_evenly_and_the_first_is_due_at_once() {
        let arrivals = Arrivals::new(50.0, Duration::from_secs(2));
        assert_eq!(arrivals.count(), 100);
        assert_eq!(arrivals.due_at(0), Duration::ZERO);
        assert_eq!(arrivals.due_at(50), Duration::from_secs(1));
        assert_eq!(arrivals.due_by(Duration::ZERO), 1);
        assert_eq!(arrivals.due_by(Duration::from_millis(999)), 50);
        assert_eq!(arrivals.due_by(Duration::from_secs(1)), 51);
        assert_eq!(arrivals.due_by(Duration::from_secs(60)), 100, "capped");
    }

    #[test]
    fn a_fractional_count_rounds_up_and_a_tiny_span_still_sends_one() {
        assert_eq!(Arrivals::new(2.5, Duration::from_secs(1)).count(), 3);
        assert_eq!(Arrivals::new(10.0, Duration::ZERO).count(), 1);
    }
}
