//! Circuit breakers, one per participant: when a participant keeps failing (`failed`
//! replies, reply timeouts) the engine stops sending it new forward commands for a
//! cool-down, then lets one probe through.
//!
//! [`Breaker`] is the pure state machine (time comes in as an argument); [`Breakers`] holds
//! one per participant for an engine process and reports their state as the gauge
//! [`crate::metrics::BREAKER_STATE`]. The state lives in the memory of each engine process:
//! several engines each learn on their own from the replies and timeouts they apply, and a
//! restarted engine starts closed. That is enough for its purpose (sparing a struggling
//! participant most of the traffic); it never decides the outcome of a saga.
//!
//! Half-open, the breaker judges by its probe alone: the probe's failure opens it again,
//! while failures of commands sent before it opened (a backlog timing out) are ignored; any
//! answer closes it, since the participant is evidently working.
//!
//! Held commands wait at their step with the same attempt number (see
//! [`saga_core::defer_commands`]); nothing fails because of a breaker alone. A held command
//! asks again when the breaker may let it through: at the end of the cool-down, or, while a
//! probe is out, when the probe's window ends. Confirm,
//! cancel and compensate are never held back: they settle sagas, and holding them would
//! keep the reserved resources of a participant that is struggling reserved for longer.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// When breakers open and how long they stay open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSettings {
    /// Whether breakers hold commands back at all (default true).
    pub enabled: bool,
    /// Failures (failed replies and reply timeouts) within `window` that open a
    /// participant's breaker (default 20).
    pub failure_threshold: u32,
    /// The window failures are counted in (default 60 s).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long an open breaker holds new forward commands back before it lets a probe
    /// through (default 10 s). A probe without an outcome for this long lets another through.
    #[serde(with = "humantime_serde")]
    pub cool_down: Duration,
    /// Held commands ask again spread over this long after the breaker may let them
    /// through (default 1 s), so they do not all ask at once.
    #[serde(with = "humantime_serde")]
    pub recheck: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            enabled: true,
            failure_threshold: 20,
            window: Duration::from_secs(60),
            cool_down: Duration::from_secs(10),
            recheck: Duration::from_secs(1),
        }
    }
}

/// What a breaker lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Everything (gauge value 0).
    Closed,
    /// One probe at a time (gauge value 1).
    HalfOpen,
    /// No new forward command (gauge value 2).
    Open,
}

impl BreakerState {
    /// Its name in reports and logs: `closed`, `half_open` or `open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }

    /// The value of the `saga_breaker_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge_value(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a forward command may go to its participant now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send it.
    Send,
    /// Hold it back; ask again after this long.
    Hold(Duration),
}

/// The command a signal or an admission concerns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommandRef {
    /// Its saga.
    pub saga_id: uuid::Uuid,
    /// Its step.
    pub step: String,
    /// Its attempt.
    pub attempt: u32,
}

impl CommandRef {
    /// The command of `saga_id`'s `step`, attempt `attempt`.
    pub fn new(saga_id: uuid::Uuid, step: impl Into<String>, attempt: u32) -> Self {
        CommandRef {
            saga_id,
            step: step.into(),
            attempt,
        }
    }
}

/// What a participant did, as far as its breaker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// It answered (ok or rejected): it is alive.
    Answered,
    /// It replied `failed`, or a reply timed out.
    Failed,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        probe: Option<(Instant, CommandRef)>,
    },
}

/// One participant's breaker (pure: every call takes the current time).
#[derive(Debug, Clone)]
pub struct Breaker {
    phase: Phase,
    failures: VecDeque<Instant>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            phase: Phase::Closed,
            failures: VecDeque::new(),
        }
    }
}

impl Breaker {
    /// Its state at `now` (an open breaker whose cool-down ended is half-open).
    pub fn state(&mut self, now: Instant) -> BreakerState {
        self.wake(now);
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Failures counted in the current window (closed breakers only).
    pub fn recent_failures(&self) -> usize {
        self.failures.len()
    }

    /// Whether `command` may go at `now`. Half-open, the first command asked for is the
    /// probe (asked for again, it may go again); the others wait for the probe's outcome,
    /// for `cool_down` at most.
    pub fn admit(
        &mut self,
        command: &CommandRef,
        now: Instant,
        settings: &BreakerSettings,
    ) -> Admission {
        self.wake(now);
        match &mut self.phase {
            Phase::Closed => Admission::Send,
            Phase::Open { until } => Admission::Hold(until.saturating_duration_since(now)),
            Phase::HalfOpen { probe } => match probe {
                Some((sent, probe)) if probe == command => {
                    *sent = now;
                    Admission::Send
                }
                Some((sent, _)) if now.saturating_duration_since(*sent) < settings.cool_down => {
                    Admission::Hold(settings.cool_down - now.saturating_duration_since(*sent))
                }
                _ => {
                    *probe = Some((now, command.clone()));
                    Admission::Send
                }
            },
        }
    }

    /// Takes `signal` about `command` into account at `now`: enough failures within the
    /// window open a closed breaker; half-open, any answer closes it and the probe's
    /// failure opens it again. Other signals are ignored: they concern commands sent
    /// before the breaker opened.
    pub fn record(
        &mut self,
        signal: Signal,
        command: &CommandRef,
        now: Instant,
        settings: &BreakerSettings,
    ) {
        self.wake(now);
        match (&self.phase, signal) {
            (Phase::Closed, Signal::Failed) => {
                self.failures.push_back(now);
                while self
                    .failures
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) > settings.window)
                {
                    self.failures.pop_front();
                }
                if self.failures.len() >= settings.failure_threshold.max(1) as usize {
                    self.open(now, settings);
                }
            }
            (Phase::HalfOpen { .. }, Signal::Answered) => {
                self.phase = Phase::Closed;
                self.failures.clear();
            }
            (
                Phase::HalfOpen {
                    probe: Some((_, probe)),
                },
                Signal::Failed,
            ) if probe == command => self.open(now, settings),
            (Phase::HalfOpen { .. }, Signal::Failed)
            | (Phase::Closed, Signal::Answered)
            | (Phase::Open { .. }, _) => {}
        }
    }

    fn open(&mut self, now: Instant, settings: &BreakerSettings) {
        self.phase = Phase::Open {
            until: now + settings.cool_down,
        };
        self.failures.clear();
    }

    fn wake(&mut self, now: Instant) {
        if let Phase::Open { until } = self.phase {
            if now >= until {
                self.phase = Phase::HalfOpen { probe: None };
            }
        }
    }
}

/// One participant's breaker as shown in `/v1/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerReport {
    /// The participant.
    pub participant: String,
    /// Its breaker's state.
    pub state: BreakerState,
    /// Failures counted towards opening it (closed breakers).
    pub recent_failures: usize,
}

/// The breakers of one engine process, one per participant; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Breakers {
    settings: BreakerSettings,
    breakers: Arc<Mutex<HashMap<String, Breaker>>>,
}

impl Breakers {
    /// Breakers with `settings`, closed for each of `participants` (so the gauge shows
    /// them from the start).
    pub fn new<'a>(
        settings: BreakerSettings,
        participants: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let breakers = Breakers {
            settings,
            breakers: Arc::default(),
        };
        for participant in participants {
            breakers.with(participant, |_, _| ());
        }
        breakers
    }

    /// Their settings.
    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    /// Whether `command`, a new forward command, may go to `participant` now (always,
    /// when disabled).
    pub fn admit(&self, participant: &str, command: &CommandRef) -> Admission {
        if !self.settings.enabled {
            return Admission::Send;
        }
        self.with(participant, |breaker, settings| {
            breaker.admit(command, Instant::now(), settings)
        })
    }

    /// Records what `participant` did with `command`.
    pub fn record(&self, participant: &str, command: &CommandRef, signal: Signal) {
        self.with(participant, |breaker, settings| {
            breaker.record(signal, command, Instant::now(), settings)
        });
    }

    /// Every participant's breaker now, by participant name.
    pub fn report(&self) -> Vec<BreakerReport> {
        let now = Instant::now();
        let mut breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        let mut report: Vec<_> = breakers
            .iter_mut()
            .map(|(participant, breaker)| {
                let state = breaker.state(now);
                crate::metrics::breaker_state(participant, state);
                BreakerReport {
                    participant: participant.clone(),
                    state,
                    recent_failures: breaker.recent_failures(),
                }
            })
            .collect();
        report.sort_by(|a, b| a.participant.cmp(&b.participant));
        report
    }

    fn with<T>(&self, participant: &str, f: impl FnOnce(&mut Breaker, &BreakerSettings) -> T) -> T {
        let mut breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        let breaker = breakers.entry(participant.to_string()).or_default();
        let before = breaker.state(Instant::now());
        let result = f(breaker, &self.settings);
        let after = breaker.state(Instant::now());
        if before != after {
            tracing::warn!(%participant, from = %before, to = %after, "circuit breaker changed");
        }
        crate::metrics::breaker_state(participant, after);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            enabled: true,
            failure_threshold: 3,
            window: Duration::from_secs(10),
            cool_down: Duration::from_secs(5),
            recheck: Duration::from_millis(500),
        }
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    /// Command `n` (its own saga, attempt 1).
    fn cmd(n: u128) -> CommandRef {
        CommandRef::new(uuid::Uuid::from_u128(n), "redeem", 1)
    }

    fn opened(t0: Instant) -> Breaker {
        let mut breaker = Breaker::default();
        for s in 0..3 {
            breaker.record(Signal::Failed, &cmd(s.into()), secs(t0, s), &settings());
        }
        breaker
    }

    #[test]
    fn a_closed_breaker_opens_when_failures_within_the_window_reach_the_threshold() {
        let t0 = Instant::now();
        let mut breaker = Breaker::default();
        breaker.record(Signal::Failed, &cmd(1), t0, &settings());
        breaker.record(Signal::Answered, &cmd(2), secs(t0, 1), &settings());
        breaker.record(Signal::Failed, &cmd(3), secs(t0, 1), &settings());
        assert_eq!(breaker.state(secs(t0, 1)), BreakerState::Closed);
        assert_eq!(
            breaker.admit(&cmd(4), secs(t0, 1), &settings()),
            Admission::Send
        );
        breaker.record(Signal::Failed, &cmd(4), secs(t0, 2), &settings());
        assert_eq!(breaker.state(secs(t0, 2)), BreakerState::Open);
        assert_eq!(
            breaker.admit(&cmd(5), secs(t0, 3), &settings()),
            Admission::Hold(Duration::from_secs(4)),
            "held for the rest of the cool-down"
        );
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let t0 = Instant::now();
        let mut breaker = Breaker::default();
        breaker.record(Signal::Failed, &cmd(1), t0, &settings());
        breaker.record(Signal::Failed, &cmd(2), secs(t0, 1), &settings());
        breaker.record(Signal::Failed, &cmd(3), secs(t0, 12), &settings());
        assert_eq!(breaker.state(secs(t0, 12)), BreakerState::Closed);
        assert_eq!(
            breaker.recent_failures(),
            1,
            "only the failure at 12 s is recent"
        );
    }

    #[test]
    fn an_open_breaker_half_opens_after_the_cool_down_and_lets_one_probe_through() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        assert_eq!(breaker.state(secs(t0, 6)), BreakerState::Open);
        assert_eq!(breaker.state(secs(t0, 7)), BreakerState::HalfOpen);
        assert_eq!(
            breaker.admit(&cmd(10), secs(t0, 7), &settings()),
            Admission::Send
        );
        assert_eq!(
            breaker.admit(&cmd(11), secs(t0, 8), &settings()),
            Admission::Hold(Duration::from_secs(4)),
            "the others wait for the rest of the probe's window"
        );
        assert_eq!(
            breaker.admit(&cmd(10), secs(t0, 8), &settings()),
            Admission::Send,
            "the probe itself may go again (its transaction was retried)"
        );
        // A probe without an outcome for a whole cool-down lets another one through.
        assert_eq!(
            breaker.admit(&cmd(11), secs(t0, 13), &settings()),
            Admission::Send
        );
    }

    #[test]
    fn a_probe_that_succeeds_closes_the_breaker() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        assert_eq!(
            breaker.admit(&cmd(10), secs(t0, 7), &settings()),
            Admission::Send
        );
        breaker.record(Signal::Answered, &cmd(10), secs(t0, 8), &settings());
        assert_eq!(breaker.state(secs(t0, 8)), BreakerState::Closed);
        assert_eq!(
            breaker.admit(&cmd(11), secs(t0, 8), &settings()),
            Admission::Send
        );
        assert_eq!(breaker.recent_failures(), 0);
    }

    #[test]
    fn a_probe_that_fails_opens_the_breaker_again_for_a_new_cool_down() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        assert_eq!(
            breaker.admit(&cmd(10), secs(t0, 7), &settings()),
            Admission::Send
        );
        breaker.record(Signal::Failed, &cmd(10), secs(t0, 9), &settings());
        assert_eq!(breaker.state(secs(t0, 9)), BreakerState::Open);
        assert_eq!(
            breaker.admit(&cmd(11), secs(t0, 10), &settings()),
            Admission::Hold(Duration::from_secs(4))
        );
        assert_eq!(breaker.state(secs(t0, 14)), BreakerState::HalfOpen);
    }

    #[test]
    fn half_open_a_backlog_timing_out_does_not_count_against_the_probe() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        assert_eq!(
            breaker.admit(&cmd(10), secs(t0, 7), &settings()),
            Admission::Send
        );
        // Commands sent long before the breaker opened time out one after another.
        for n in 20..30 {
            breaker.record(Signal::Failed, &cmd(n), secs(t0, 8), &settings());
        }
        assert_eq!(breaker.state(secs(t0, 8)), BreakerState::HalfOpen);
        // Any answer shows the participant works again.
        breaker.record(Signal::Answered, &cmd(21), secs(t0, 9), &settings());
        assert_eq!(breaker.state(secs(t0, 9)), BreakerState::Closed);
    }

    #[test]
    fn an_open_breaker_ignores_late_signals() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        breaker.record(Signal::Answered, &cmd(1), secs(t0, 3), &settings());
        assert_eq!(breaker.state(secs(t0, 3)), BreakerState::Open);
    }

    #[test]
    fn disabled_breakers_let_everything_through_and_reports_list_known_participants() {
        let breakers = Breakers::new(
            BreakerSettings {
                enabled: false,
                failure_threshold: 1,
                ..settings()
            },
            ["points", "balance"],
        );
        breakers.record("points", &cmd(1), Signal::Failed);
        assert_eq!(breakers.admit("points", &cmd(2)), Admission::Send);
        let report = breakers.report();
        let names: Vec<_> = report.iter().map(|r| r.participant.as_str()).collect();
        assert_eq!(names, ["balance", "points"]);
        assert_eq!(report[1].state, BreakerState::Open);
    }

    #[test]
    fn gauge_values_follow_the_documented_scale() {
        assert_eq!(BreakerState::Closed.gauge_value(), 0.0);
        assert_eq!(BreakerState::HalfOpen.gauge_value(), 1.0);
        assert_eq!(BreakerState::Open.gauge_value(), 2.0);
        assert_eq!(BreakerState::HalfOpen.to_string(), "half_open");
    }
}
