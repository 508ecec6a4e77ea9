//! Retry policy: how often and how soon a step's command is sent again.
//!
//! The wait before a retry grows exponentially up to a cap, and is then spread by jitter so
//! that sagas failing together (a participant that was down) do not retry in lockstep. The
//! jitter is pure: [`RetryPolicy::jittered_backoff`] takes a seed, and the engine derives the
//! seed from the saga and the attempt ([`jitter_seed`]), so one decision always yields the
//! same wait and tests can assert it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a retry's wait is spread below the exponential backoff `b` of its attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Exactly `b`: every saga retries at the same moment.
    None,
    /// Anywhere in `[0, b]`: spreads retries the most, but one may follow its failure at once.
    Full,
    /// In `[b/2, b]`: never sooner than half the backoff, spread over the other half. The
    /// default, so a retry never hammers a participant right after it failed.
    #[default]
    Equal,
}

/// Attempts and exponential backoff for one kind of phase. A value with defaults, built
/// with the `with_*` methods, stored with the definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    multiplier: f64,
    #[serde(default)]
    jitter: Jitter,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::exponential(Duration::from_millis(100), Duration::from_secs(10))
    }
}

impl RetryPolicy {
    /// Doubling backoff from `initial` up to `max`, five attempts, [`Jitter::Equal`].
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: initial,
            max_backoff: max.max(initial),
            multiplier: 2.0,
            jitter: Jitter::default(),
        }
    }

    /// The same policy with `attempts` attempts in all.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The same policy with the wait growing by `multiplier` per attempt (at least 1).
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_finite() {
            multiplier.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// The same policy with its waits spread by `jitter`.
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Attempts in all, the first one included (at least 1).
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Wait before the second attempt after a transient failure, before jitter.
    pub fn initial_backoff(&self) -> Duration {
        self.initial_backoff
    }

    /// Longest wait between attempts.
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// Growth of the wait per attempt.
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// How the waits are spread.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The exponential wait after attempt `attempt` (from 1) failed transiently, capped at
    /// [`max_backoff`](Self::max_backoff), before jitter: the longest the wait can be.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30) as i32;
        let wait = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exponent);
        Duration::from_secs_f64(wait.min(self.max_backoff.as_secs_f64()))
    }

    /// The shortest and the longest wait after attempt `attempt` under this policy's jitter.
    pub fn backoff_bounds(&self, attempt: u32) -> (Duration, Duration) {
        let longest = self.backoff(attempt);
        let shortest = match self.jitter {
            Jitter::None => longest,
            Jitter::Full => Duration::ZERO,
            Jitter::Equal => longest / 2,
        };
        (shortest, longest)
    }

    /// The wait after attempt `attempt` failed transiently: a point within
    /// [`backoff_bounds`](Self::backoff_bounds) chosen by `seed` (the same seed, the same
    /// wait; nearby seeds, unrelated waits).
    pub fn jittered_backoff(&self, attempt: u32, seed: u64) -> Duration {
        let (shortest, longest) = self.backoff_bounds(attempt);
        shortest + (longest - shortest).mul_f64(unit_fraction(seed))
    }

    /// Whether another attempt may follow attempt `attempt`.
    pub fn allows_after(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }
}

/// A jitter seed from the byte strings that identify one wait (e.g. saga, step, phase,
/// attempt). Stable across builds and platforms (64-bit FNV-1a; each part is followed by
/// its length, so `["ab", "c"]` and `["a", "bc"]` differ).
pub fn jitter_seed<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for part in parts {
        feed(part);
        feed(&(part.len() as u64).to_le_bytes());
    }
    hash
}

/// A fraction in `[0, 1)` from `seed`, evenly spread: the seed goes through a 64-bit
/// finaliser (the SplitMix64 mixing steps) and its top 53 bits become the fraction.
fn unit_fraction(seed: u64) -> f64 {
    let mut x = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn policy(jitter: Jitter) -> RetryPolicy {
        RetryPolicy::exponential(Duration::from_millis(50), Duration::from_millis(300))
            .with_jitter(jitter)
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let waits: Vec<u128> = (1..=5)
            .map(|a| policy(Jitter::None).backoff(a).as_millis())
            .collect();
        assert_eq!(waits, [50, 100, 200, 300, 300]);
    }

    #[test]
    fn attempts_are_bounded() {
        let policy = RetryPolicy::default().with_max_attempts(3);
        assert!(policy.allows_after(2));
        assert!(!policy.allows_after(3));
        assert_eq!(
            RetryPolicy::default().with_max_attempts(0).max_attempts(),
            1
        );
    }

    #[test]
    fn equal_jitter_is_the_default() {
        assert_eq!(RetryPolicy::default().jitter(), Jitter::Equal);
        assert_eq!(
            RetryPolicy::exponential(Duration::from_millis(1), Duration::from_secs(1)).jitter(),
            Jitter::Equal
        );
    }

    #[test]
    fn jittered_waits_stay_within_their_bounds_and_vary() {
        let cases = [
            (
                Jitter::Full,
                [(0, 50), (0, 100), (0, 200), (0, 300), (0, 300)],
            ),
            (
                Jitter::Equal,
                [(25, 50), (50, 100), (100, 200), (150, 300), (150, 300)],
            ),
        ];
        for (jitter, bounds) in cases {
            let policy = policy(jitter);
            for (attempt, (low, high)) in (1..=5).zip(bounds) {
                let (low, high) = (Duration::from_millis(low), Duration::from_millis(high));
                assert_eq!(policy.backoff_bounds(attempt), (low, high));
                let waits: BTreeSet<Duration> = (0..200u64)
                    .map(|seed| policy.jittered_backoff(attempt, seed))
                    .collect();
                assert!(
                    waits.iter().all(|w| (low..=high).contains(w)),
                    "{jitter:?} attempt {attempt}: {waits:?} outside [{low:?}, {high:?}]"
                );
                // 200 consecutive seeds give (nearly) 200 different waits, spread over the
                // whole range rather than bunched at one end.
                assert!(waits.len() > 190, "{jitter:?}: only {} waits", waits.len());
                let span = high - low;
                assert!(*waits.first().unwrap() < low + span / 10, "{waits:?}");
                assert!(*waits.last().unwrap() > high - span / 10, "{waits:?}");
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_wait_and_no_jitter_gives_the_backoff() {
        let equal = policy(Jitter::Equal);
        assert_eq!(equal.jittered_backoff(3, 42), equal.jittered_backoff(3, 42));
        assert_ne!(equal.jittered_backoff(3, 42), equal.jittered_backoff(3, 43));
        let none = policy(Jitter::None);
        assert!((0..50).all(|seed| none.jittered_backoff(2, seed) == Duration::from_millis(100)));
    }

    #[test]
    fn seeds_depend_on_every_part_and_its_boundaries() {
        let seed = |parts: &[&str]| jitter_seed(parts.iter().map(|p| p.as_bytes()));
        assert_eq!(
            seed(&["saga", "funds", "try"]),
            seed(&["saga", "funds", "try"])
        );
        assert_ne!(
            seed(&["saga", "funds", "try"]),
            seed(&["saga", "funds", "cancel"])
        );
        assert_ne!(seed(&["ab", "c"]), seed(&["a", "bc"]));
        // Pinned: the seed must not change between builds, or a replayed decision would
        // choose another wait.
        assert_eq!(seed(&[]), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn a_policy_stored_before_jitter_existed_reads_back_with_the_default() {
        let stored = r#"{"max_attempts":3,"initial_backoff":{"secs":0,"nanos":50000000},
            "max_backoff":{"secs":1,"nanos":0},"multiplier":2.0}"#;
        let policy: RetryPolicy = serde_json::from_str(stored).unwrap();
        assert_eq!(policy.jitter(), Jitter::Equal);
        assert_eq!(policy.max_attempts(), 3);
    }
}
