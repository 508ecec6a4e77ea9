//! The peak search's decision (pure): whether the backlog stayed bounded during one step of
//! the rate ladder, and which rate is the highest sustained.

use std::time::Duration;

/// Counters read once a second during a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Since the step began.
    pub at: Duration,
    /// Triggers published so far (whole run).
    pub published: u64,
    /// Sagas ended so far (whole run): finished or parked.
    pub ended: u64,
}

impl Sample {
    /// Sagas published and not ended yet.
    pub fn in_flight(&self) -> u64 {
        self.published.saturating_sub(self.ended)
    }
}

/// Completions over the second half of a step must reach this share of the arrivals.
pub const MIN_COMPLETION_SHARE: f64 = 0.9;
/// The backlog at the end of a step may hold at most this many seconds of arrivals (by
/// Little's law, a mean publish-to-end latency of at most this), plus [`BACKLOG_SLACK`].
pub const MAX_BACKLOG: Duration = Duration::from_secs(2);
/// Sagas in flight always allowed, whatever the rate (a low rate has few in flight).
pub const BACKLOG_SLACK: u64 = 20;

/// How one step went.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Completions kept up with arrivals and the backlog stayed small.
    Bounded,
    /// The backlog grew; why, in words.
    Unbounded(String),
}

/// Judges a step at `rate` by its samples (in time order, at least two). The first half
/// is left out: the backlog of the previous, lower step settles there.
pub fn judge(rate: f64, samples: &[Sample]) -> Verdict {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Verdict::Unbounded("no samples".into());
    };
    let half = first.at + (last.at.saturating_sub(first.at)) / 2;
    let mid = samples.iter().find(|s| s.at >= half).unwrap_or(first);
    let arrivals = last.published.saturating_sub(mid.published);
    let completions = last.ended.saturating_sub(mid.ended);
    let window = last.at.saturating_sub(mid.at).as_secs_f64().max(1e-3);
    if arrivals > 0 && (completions as f64) < MIN_COMPLETION_SHARE * arrivals as f64 {
        return Verdict::Unbounded(format!(
            "completions {:.1}/s fell below {:.0}% of arrivals {:.1}/s",
            completions as f64 / window,
            MIN_COMPLETION_SHARE * 100.0,
            arrivals as f64 / window
        ));
    }
    let allowed = (rate * MAX_BACKLOG.as_secs_f64()) as u64 + BACKLOG_SLACK;
    if last.in_flight() > allowed {
        return Verdict::Unbounded(format!(
            "{} sagas in flight at the end, more than {allowed} ({}s of arrivals + {BACKLOG_SLACK})",
            last.in_flight(),
            MAX_BACKLOG.as_secs()
        ));
    }
    Verdict::Bounded
}

/// One step of the search and how it went.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Arrival rate of the step (triggers per second).
    pub rate: f64,
    /// Sagas in flight at its end.
    pub in_flight: u64,
    /// Completions per second over the step.
    pub completed_per_s: f64,
    /// Its verdict.
    pub verdict: Verdict,
}

/// The search over rates: from `start`, ×`factor` per step while the steps stay bounded
/// (up to `max`); when the very first step is unbounded, ÷`factor` per step instead until
/// one is bounded (down to `min`). Rates are rounded to one decimal.
#[derive(Debug, Clone)]
pub struct Search {
    start: f64,
    factor: f64,
    min: f64,
    max: f64,
    steps: Vec<Step>,
}

impl Search {
    /// A search that has tried nothing yet. `start` must be positive and `factor` above 1.
    pub fn new(start: f64, factor: f64, min: f64, max: f64) -> Self {
        assert!(
            start > 0.0 && factor > 1.0,
            "a search climbs from a positive start"
        );
        Search {
            start,
            factor,
            min,
            max,
            steps: Vec::new(),
        }
    }

    /// The rate to try next, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        let round = |rate: f64| (rate * 10.0).round() / 10.0;
        let Some(last) = self.steps.last() else {
            return Some(round(self.start));
        };
        let climbing = self.steps[0].verdict == Verdict::Bounded;
        let last_bounded = last.verdict == Verdict::Bounded;
        let next = match (climbing, last_bounded) {
            (true, true) => last.rate * self.factor,
            (false, false) => last.rate / self.factor,
            // Climbing hit the first unbounded step, or descending found a bounded one.
            _ => return None,
        };
        let next = round(next);
        (self.min..=self.max).contains(&next).then_some(next)
    }

    /// Adds the outcome of the step at [`Search::next_rate`].
    pub fn record(&mut self, step: Step) {
        self.steps.push(step);
    }

    /// The steps so far.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The highest rate judged bounded below every unbounded one: climbing, the last
    /// bounded step before the first unbounded; descending, the bounded step it ended on.
    pub fn peak(&self) -> Option<f64> {
        let climbing = self
            .steps
            .first()
            .is_some_and(|s| s.verdict == Verdict::Bounded);
        if climbing {
            self.steps
                .iter()
                .take_while(|s| s.verdict == Verdict::Bounded)
                .map(|s| s.rate)
                .last()
        } else {
            self.steps
                .iter()
                .find(|s| s.verdict == Verdict::Bounded)
                .map(|s| s.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(rate: u64, completion_rate: u64, backlog: u64) -> Vec<Sample> {
        (0..=10)
            .map(|t| Sample {
                at: Duration::from_secs(t),
                published: 1_000 + rate * t,
                ended: 1_000 + completion_rate * t - backlog.min(completion_rate * t),
            })
            .collect()
    }

    #[test]
    fn completions_that_keep_up_with_arrivals_are_bounded() {
        assert_eq!(judge(50.0, &samples(50, 50, 3)), Verdict::Bounded);
    }

    #[test]
    fn completions_below_ninety_percent_are_unbounded() {
        let verdict = judge(100.0, &samples(100, 80, 0));
        let Verdict::Unbounded(why) = verdict else {
            panic!("80% kept up: {verdict:?}")
        };
        assert!(why.contains("80.0/s") && why.contains("100.0/s"), "{why}");
    }

    #[test]
    fn a_large_steady_backlog_is_unbounded_even_when_completions_keep_up() {
        // 500 in flight at 100/s: five seconds of arrivals queued.
        let verdict = judge(100.0, &samples(100, 100, 500));
        assert!(matches!(verdict, Verdict::Unbounded(ref why) if why.contains("500 sagas")));
        assert_eq!(judge(100.0, &samples(100, 100, 150)), Verdict::Bounded);
    }

    #[test]
    fn a_backlog_left_by_the_first_half_does_not_count_if_it_drains() {
        let mut steps = samples(50, 50, 0);
        steps[2].ended -= 60; // a stall early in the step, caught up by the middle
        assert_eq!(judge(50.0, &steps), Verdict::Bounded);
    }

    fn step(rate: f64, bounded: bool) -> Step {
        Step {
            rate,
            in_flight: 0,
            completed_per_s: rate,
            verdict: if bounded {
                Verdict::Bounded
            } else {
                Verdict::Unbounded("x".into())
            },
        }
    }

    /// Runs a search against an engine that sustains rates up to `capacity`.
    fn search(capacity: f64) -> Search {
        let mut search = Search::new(25.0, 1.5, 1.0, 1_000.0);
        while let Some(rate) = search.next_rate() {
            search.record(step(rate, rate <= capacity));
        }
        search
    }

    #[test]
    fn climbing_stops_at_the_first_unbounded_step_and_the_peak_is_the_one_below() {
        let search = search(90.0);
        let rates: Vec<f64> = search.steps().iter().map(|s| s.rate).collect();
        assert_eq!(rates, vec![25.0, 37.5, 56.3, 84.4, 126.6]);
        assert_eq!(search.peak(), Some(84.4));
    }

    #[test]
    fn an_unbounded_first_step_makes_the_search_descend_until_one_is_bounded() {
        let search = search(12.0);
        let rates: Vec<f64> = search.steps().iter().map(|s| s.rate).collect();
        assert_eq!(rates, vec![25.0, 16.7, 11.1]);
        assert_eq!(search.peak(), Some(11.1));
    }

    #[test]
    fn the_search_ends_at_its_bounds() {
        assert_eq!(search(0.5).peak(), None, "nothing at or above 1/s");
        let top = search(1e9);
        assert!(top.steps().iter().all(|s| s.rate <= 1_000.0));
        assert_eq!(top.peak(), top.steps().last().map(|s| s.rate));
    }

    #[test]
    fn a_later_bounded_step_does_not_raise_the_peak_past_an_unbounded_one() {
        let mut search = Search::new(25.0, 1.5, 1.0, 1_000.0);
        search.record(step(25.0, true));
        search.record(step(37.5, false));
        assert_eq!(search.next_rate(), None);
        search.record(step(56.3, true));
        assert_eq!(search.peak(), Some(25.0));
    }
}
