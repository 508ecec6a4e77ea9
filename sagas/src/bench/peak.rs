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

/// The highest rate of a step judged bounded, from the start of the ladder up to the first
/// unbounded step (rates above it do not count even if a later step looked fine).
pub fn peak(steps: &[Step]) -> Option<f64> {
    steps
        .iter()
        .take_while(|s| s.verdict == Verdict::Bounded)
        .map(|s| s.rate)
        .last()
}

/// Whether the search goes on after `steps`: until the first unbounded step.
pub fn keep_climbing(steps: &[Step]) -> bool {
    steps.iter().all(|s| s.verdict == Verdict::Bounded)
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

    #[test]
    fn the_peak_is_the_last_bounded_rate_before_the_first_unbounded_one() {
        let step = |rate, bounded: bool| Step {
            rate,
            in_flight: 0,
            completed_per_s: rate,
            verdict: if bounded {
                Verdict::Bounded
            } else {
                Verdict::Unbounded("x".into())
            },
        };
        let steps = [step(25.0, true), step(37.5, true), step(56.3, false)];
        assert_eq!(peak(&steps), Some(37.5));
        assert!(!keep_climbing(&steps));
        assert!(keep_climbing(&steps[..2]));
        assert_eq!(peak(&[step(25.0, false), step(37.5, true)]), None);
    }
}
