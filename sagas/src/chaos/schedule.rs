//! The fault run's schedule (pure): from a seed, when each trigger and poison message is
//! published and when each fault strikes. The same seed and shape give the same schedule.

use std::time::Duration;

use crate::domains::Domain;

/// A small deterministic random source (SplitMix64): the schedule must be reproducible
/// from the printed seed, on any machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A source seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// A number in `[0, 1)`.
    pub fn fraction(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A duration in `[low, high)`.
    pub fn between(&mut self, low: Duration, high: Duration) -> Duration {
        low + (high.saturating_sub(low)).mul_f64(self.fraction())
    }

    /// Puts `items` in a random order.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// A process of the run: what a fault strikes and what the harness keeps running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `sagas run`, instance 1 or 2 (one consumer group).
    Engine(u8),
    /// `sagas participant <domain>`.
    Participant(Domain),
    /// The run's own Kafka broker.
    Broker,
}

impl Role {
    /// The processes a kill may strike: both engines and the three domain services.
    pub const KILLABLE: [Role; 5] = [
        Role::Engine(1),
        Role::Engine(2),
        Role::Participant(Domain::Balance),
        Role::Participant(Domain::Points),
        Role::Participant(Domain::Coupons),
    ];

    /// Short name, also the name of the process's log file: `engine-1`, `balance`, `broker`.
    pub fn name(self) -> String {
        match self {
            Role::Engine(n) => format!("engine-{n}"),
            Role::Participant(domain) => domain.name().to_string(),
            Role::Broker => "broker".to_string(),
        }
    }
}

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// `kill -9` the process, start it again `restart_after` later.
    Kill {
        /// Which process.
        role: Role,
        /// How long it stays dead.
        restart_after: Duration,
    },
    /// `kill -9` the broker, start it again on the same storage `down_for` later.
    RestartBroker {
        /// How long it stays down.
        down_for: Duration,
    },
    /// Restart Postgres through the services script.
    RestartPostgres,
}

impl Fault {
    /// How long the fault lasts, as far as the schedule plans (a Postgres restart is
    /// given a few seconds); faults are placed so that these spans do not overlap.
    pub fn span(&self) -> Duration {
        match self {
            Fault::Kill { restart_after, .. } => *restart_after + Duration::from_secs(1),
            Fault::RestartBroker { down_for } => *down_for + Duration::from_secs(2),
            Fault::RestartPostgres => Duration::from_secs(4),
        }
    }
}

/// A malformed message for the trigger topic; each must end in the dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Poison {
    /// A payload that is not JSON.
    BadJson,
    /// A well-formed envelope of the wrong kind (a reply).
    WrongKind,
    /// A valid trigger naming a definition nobody registered (`saga.definition` header).
    UnknownDefinition,
}

impl Poison {
    /// Every kind.
    pub const ALL: [Poison; 3] = [
        Poison::BadJson,
        Poison::WrongKind,
        Poison::UnknownDefinition,
    ];
}

/// One message to publish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Publish {
    /// A copy of the trigger of request `request` of the workload.
    Trigger {
        /// Index into the workload's requests.
        request: usize,
    },
    /// The `number`-th poison message (numbers are unique in a run).
    Poison {
        /// What is wrong with it.
        kind: Poison,
        /// Unique per run, part of its key.
        number: usize,
    },
}

/// Something that happens `at` after the run starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timed<T> {
    /// Offset from the start of the run.
    pub at: Duration,
    /// What happens.
    pub what: T,
}

/// The size of a run: how many sagas, over how long, with how many faults.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// Distinct checkout requests (sagas).
    pub sagas: usize,
    /// Triggers are published and faults strike within this window.
    pub window: Duration,
    /// Faults start this long after the run (the first sagas get going).
    pub lead: Duration,
    /// `kill -9` of engines and domain services.
    pub kills: usize,
    /// Broker restarts.
    pub broker_restarts: usize,
    /// Postgres restarts.
    pub pg_restarts: usize,
    /// Poison messages of each [`Poison`] kind.
    pub poison_each: usize,
}

impl Shape {
    /// The `--quick` run: 300 sagas over two minutes, the minimum faults plus one kill.
    pub fn quick() -> Shape {
        Shape {
            sagas: 300,
            window: Duration::from_secs(120),
            lead: Duration::from_secs(5),
            kills: 6,
            broker_restarts: 2,
            pg_restarts: 1,
            poison_each: 1,
        }
    }

    /// A full run of `sagas` sagas: published at about 15 per second (at least two
    /// minutes; well below what the processes can carry on a 2-core machine, so that
    /// faults, not overload, decide the outcome), with a kill every ~20 s, a broker restart
    /// every ~2½ minutes and a Postgres restart every ~3 minutes, never fewer than the quick
    /// run's faults.
    pub fn full(sagas: usize) -> Shape {
        let window = Duration::from_secs((sagas as u64 / 15).max(120));
        let secs = window.as_secs() as usize;
        Shape {
            sagas,
            window,
            lead: Duration::from_secs(5),
            kills: (secs / 20).max(6),
            broker_restarts: (secs / 150).max(2),
            pg_restarts: (secs / 200).max(1),
            poison_each: 2,
        }
    }
}

/// Everything that happens in a run, in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// The seed it was made from.
    pub seed: u64,
    /// Faults, in time order, not overlapping.
    pub faults: Vec<Timed<Fault>>,
    /// Messages to publish, in time order: every trigger twice, and the poison messages.
    pub publishes: Vec<Timed<Publish>>,
}

impl Schedule {
    /// The schedule of a run of `shape`, drawn from `seed`.
    pub fn plan(seed: u64, shape: &Shape) -> Schedule {
        let mut rng = Rng::new(seed);
        let faults = plan_faults(&mut rng, shape);
        let publishes = plan_publishes(&mut rng, shape, &faults);
        Schedule {
            seed,
            faults,
            publishes,
        }
    }

    /// How many faults of each sort: (kills, broker restarts, Postgres restarts).
    pub fn fault_counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for fault in &self.faults {
            match fault.what {
                Fault::Kill { .. } => counts.0 += 1,
                Fault::RestartBroker { .. } => counts.1 += 1,
                Fault::RestartPostgres => counts.2 += 1,
            }
        }
        counts
    }
}

/// The consumers' group session timeout (`session.timeout.ms` of the engine's and the
/// services' consumers).
pub const GROUP_SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// Shortest time a killed process stays down. Longer than the group session timeout: the
/// broker the run uses (tansu 0.6) puts a member killed and restarted within the session
/// timeout into the next generation's assignment under its old id, and nothing consumes
/// the partitions it is given until yet another member joins. Restarted later, the dead
/// member has expired and the restarted process's join shares the partitions among the
/// living (see the README's fault harness section).
pub const KILLED_DOWN_MIN: Duration = Duration::from_secs(7);
/// Longest time a killed process stays down.
pub const KILLED_DOWN_MAX: Duration = Duration::from_secs(10);

/// Kill targets: each killable process once (in random order) before any twice.
fn kill_targets(rng: &mut Rng, kills: usize) -> Vec<Role> {
    let mut targets = Vec::with_capacity(kills);
    while targets.len() < kills {
        let mut round = Role::KILLABLE;
        rng.shuffle(&mut round);
        targets.extend(round.into_iter().take(kills - targets.len()));
    }
    targets
}

/// The faults in random order, each in its own slot of the window so none overlaps.
fn plan_faults(rng: &mut Rng, shape: &Shape) -> Vec<Timed<Fault>> {
    let mut faults: Vec<Fault> = kill_targets(rng, shape.kills)
        .into_iter()
        .map(|role| Fault::Kill {
            role,
            restart_after: rng.between(KILLED_DOWN_MIN, KILLED_DOWN_MAX),
        })
        .collect();
    for _ in 0..shape.broker_restarts {
        faults.push(Fault::RestartBroker {
            down_for: rng.between(Duration::from_secs(1), Duration::from_secs(4)),
        });
    }
    faults.extend(std::iter::repeat_n(
        Fault::RestartPostgres,
        shape.pg_restarts,
    ));
    rng.shuffle(&mut faults);
    if faults.is_empty() {
        return Vec::new();
    }
    let slot = shape.window.saturating_sub(shape.lead) / faults.len() as u32;
    faults
        .into_iter()
        .enumerate()
        .map(|(i, fault)| {
            let slack = slot.saturating_sub(fault.span());
            Timed {
                at: shape.lead + slot * i as u32 + slack.mul_f64(rng.fraction()),
                what: fault,
            }
        })
        .collect()
}

/// How long before a fault its burst of triggers is published (at most).
const BURST_LEAD: Duration = Duration::from_millis(1500);
/// Most triggers in one burst.
const MAX_BURST: usize = 40;

/// Every trigger twice, and the poison messages at random moments. Before each fault a
/// burst of requests (an even share, at most [`MAX_BURST`]) is published, so that the fault
/// strikes sagas in flight; the other requests go out evenly over the window. Each second
/// copy goes out at a random later moment.
fn plan_publishes(rng: &mut Rng, shape: &Shape, faults: &[Timed<Fault>]) -> Vec<Timed<Publish>> {
    let window = shape.window;
    let burst = (shape.sagas / (faults.len() + 1)).min(MAX_BURST);
    let in_bursts = burst * faults.len();
    let evenly = (shape.sagas - in_bursts).max(1);
    let mut publishes = Vec::with_capacity(2 * shape.sagas + 3 * shape.poison_each);
    for request in 0..shape.sagas {
        let first = if request < in_bursts {
            let fault = &faults[request / burst];
            fault
                .at
                .saturating_sub(rng.between(Duration::ZERO, BURST_LEAD))
        } else {
            window.mul_f64((request - in_bursts) as f64 / evenly as f64)
        };
        let second = rng.between(first, window);
        for at in [first, second] {
            publishes.push(Timed {
                at,
                what: Publish::Trigger { request },
            });
        }
    }
    let mut number = 0;
    for kind in Poison::ALL {
        for _ in 0..shape.poison_each {
            publishes.push(Timed {
                at: rng.between(Duration::ZERO, window),
                what: Publish::Poison { kind, number },
            });
            number += 1;
        }
    }
    // Stable: the two copies of a trigger keep their order when they fall on one moment.
    publishes.sort_by_key(|p| p.at);
    publishes
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let shape = Shape::quick();
        assert_eq!(Schedule::plan(7, &shape), Schedule::plan(7, &shape));
        assert_ne!(
            Schedule::plan(7, &shape).faults,
            Schedule::plan(8, &shape).faults
        );
    }

    #[test]
    fn the_quick_run_has_at_least_the_required_faults() {
        for seed in 0..50 {
            let schedule = Schedule::plan(seed, &Shape::quick());
            let (kills, broker, pg) = schedule.fault_counts();
            assert!(
                kills >= 5 && broker >= 2 && pg >= 1,
                "{kills} {broker} {pg}"
            );
        }
        let (kills, broker, pg) = Schedule::plan(1, &Shape::full(10_000)).fault_counts();
        assert_eq!((kills, broker, pg), (33, 4, 3));
    }

    #[test]
    fn every_process_is_killed_at_least_once() {
        for seed in 0..50 {
            let schedule = Schedule::plan(seed, &Shape::quick());
            for role in Role::KILLABLE {
                assert!(
                    schedule
                        .faults
                        .iter()
                        .any(|f| matches!(f.what, Fault::Kill { role: r, .. } if r == role)),
                    "seed {seed}: {role:?} never killed"
                );
            }
        }
    }

    #[test]
    fn faults_fall_inside_the_window_in_order_and_never_overlap() {
        let shapes = [Shape::quick(), Shape::full(10_000), Shape::full(100_000)];
        for (seed, shape) in (0..50).zip(shapes.iter().cycle()) {
            let faults = Schedule::plan(seed, shape).faults;
            assert!(faults[0].at >= shape.lead);
            for pair in faults.windows(2) {
                assert!(
                    pair[0].at + pair[0].what.span() <= pair[1].at,
                    "seed {seed}: {pair:?} overlap"
                );
            }
            let last = faults.last().unwrap();
            assert!(last.at + last.what.span() <= shape.window);
            assert!(faults.iter().all(|f| match f.what {
                Fault::Kill { restart_after, .. } => restart_after > GROUP_SESSION_TIMEOUT,
                _ => true,
            }));
        }
    }

    #[test]
    fn every_trigger_is_published_twice_and_every_poison_once() {
        let shape = Shape {
            sagas: 200,
            poison_each: 2,
            ..Shape::quick()
        };
        let publishes = Schedule::plan(3, &shape).publishes;
        let mut copies: HashMap<usize, usize> = HashMap::new();
        let mut poison = Vec::new();
        for publish in &publishes {
            assert!(publish.at <= shape.window);
            match publish.what {
                Publish::Trigger { request } => *copies.entry(request).or_default() += 1,
                Publish::Poison { kind, number } => poison.push((kind, number)),
            }
        }
        assert_eq!(copies.len(), 200);
        assert!(copies.values().all(|n| *n == 2));
        assert_eq!(poison.len(), 6);
        for kind in Poison::ALL {
            assert_eq!(poison.iter().filter(|(k, _)| *k == kind).count(), 2);
        }
        let mut numbers: Vec<usize> = poison.iter().map(|(_, n)| *n).collect();
        numbers.dedup();
        assert_eq!(numbers.len(), 6, "poison numbers are unique");
        assert!(publishes.windows(2).all(|w| w[0].at <= w[1].at));
    }

    #[test]
    fn each_fault_strikes_just_after_a_burst_of_triggers() {
        for shape in [Shape::quick(), Shape::full(10_000)] {
            each_fault_follows_a_burst(&shape);
        }
    }

    fn each_fault_follows_a_burst(shape: &Shape) {
        let schedule = Schedule::plan(11, shape);
        let burst = (shape.sagas / (schedule.faults.len() + 1)).min(MAX_BURST);
        assert!(burst >= 20, "{burst}");
        for fault in &schedule.faults {
            let just_before = schedule
                .publishes
                .iter()
                .filter(|p| matches!(p.what, Publish::Trigger { .. }))
                .filter(|p| p.at <= fault.at && fault.at - p.at <= BURST_LEAD)
                .count();
            assert!(
                just_before >= burst,
                "{just_before} triggers before {fault:?}"
            );
        }
    }

    #[test]
    fn random_numbers_stay_in_range() {
        let mut rng = Rng::new(42);
        for _ in 0..1_000 {
            assert!(rng.below(5) < 5);
            let f = rng.fraction();
            assert!((0.0..1.0).contains(&f));
            let d = rng.between(Duration::from_secs(1), Duration::from_secs(2));
            assert!(d >= Duration::from_secs(1) && d < Duration::from_secs(2));
        }
        let mut items: Vec<u32> = (0..20).collect();
        rng.shuffle(&mut items);
        items.sort();
        assert_eq!(items, (0..20).collect::<Vec<_>>());
    }
}
