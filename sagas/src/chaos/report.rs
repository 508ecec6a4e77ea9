//! The fault run's verdict (pure): the counts, how they are derived from saga statuses, and
//! the one summary line.

use saga_core::SagaStatus;

/// What became of the valid triggers, one count per outcome that must be zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fates {
    /// Valid triggers (distinct orders) published.
    pub sagas: usize,
    /// Valid triggers that started no saga at all.
    pub lost: usize,
    /// Sagas still running or compensating at the deadline.
    pub stuck: usize,
    /// Sagas parked for an operator.
    pub parked: usize,
}

impl Fates {
    /// Counts the fate of each valid trigger from its saga's status (`None`: no saga).
    pub fn of(statuses: impl IntoIterator<Item = Option<SagaStatus>>) -> Fates {
        let mut fates = Fates::default();
        for status in statuses {
            fates.sagas += 1;
            match status {
                None => fates.lost += 1,
                Some(SagaStatus::Running | SagaStatus::Compensating) => fates.stuck += 1,
                Some(SagaStatus::Parked) => fates.parked += 1,
                Some(
                    SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::ResolvedManually,
                ) => {}
            }
        }
        fates
    }
}

/// How many faults were injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injected {
    /// `kill -9` of an engine or a domain service (each followed by a restart).
    pub kills: usize,
    /// Broker restarts on the same storage.
    pub broker_restarts: usize,
    /// Postgres restarts.
    pub pg_restarts: usize,
}

/// Everything the run concludes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// What became of the valid triggers.
    pub fates: Fates,
    /// Faults injected.
    pub injected: Injected,
    /// Effects applied more often than the participants' barriers recorded them.
    pub doubled: usize,
    /// Rows in the engine's and the domain services' `dead_letters` tables.
    pub dead_letters: usize,
    /// Invariants that do not hold (empty: all hold).
    pub violations: Vec<String>,
    /// Why the run could not do what it set out to (a fault not injected, a publish that
    /// never succeeded); the run fails when any.
    pub harness_errors: Vec<String>,
}

impl Verdict {
    /// Whether the run passed: nothing lost, doubled, stuck or parked, every invariant
    /// held and every fault was injected.
    pub fn passed(&self) -> bool {
        let f = &self.fates;
        f.lost == 0
            && f.stuck == 0
            && f.parked == 0
            && self.doubled == 0
            && self.violations.is_empty()
            && self.harness_errors.is_empty()
    }

    /// The last line of the run.
    pub fn summary_line(&self) -> String {
        format!(
            "chaos: sagas={} kills={} broker_restarts={} pg_restarts={} lost={} doubled={} \
             stuck={} parked={} dead_letters={} invariants={}",
            self.fates.sagas,
            self.injected.kills,
            self.injected.broker_restarts,
            self.injected.pg_restarts,
            self.fates.lost,
            self.doubled,
            self.fates.stuck,
            self.fates.parked,
            self.dead_letters,
            if self.violations.is_empty() {
                "ok"
            } else {
                "FAILED"
            }
        )
    }

    /// The violations and harness errors (at most `limit` of each), then the summary line.
    pub fn render(&self, limit: usize) -> String {
        let mut out = String::new();
        for error in self.harness_errors.iter().take(limit) {
            out.push_str(&format!("harness: {error}\n"));
        }
        for violation in self.violations.iter().take(limit) {
            out.push_str(&format!("invariant violated: {violation}\n"));
        }
        if self.violations.len() > limit {
            out.push_str(&format!(
                "… and {} more violations\n",
                self.violations.len() - limit
            ));
        }
        out.push_str(&self.summary_line());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fates_count_missing_unfinished_and_parked_sagas_apart() {
        let fates = Fates::of([
            Some(SagaStatus::Completed),
            Some(SagaStatus::Compensated),
            None,
            Some(SagaStatus::Running),
            Some(SagaStatus::Compensating),
            Some(SagaStatus::Parked),
            Some(SagaStatus::ResolvedManually),
        ]);
        assert_eq!(
            fates,
            Fates {
                sagas: 7,
                lost: 1,
                stuck: 2,
                parked: 1
            }
        );
    }

    fn clean() -> Verdict {
        Verdict {
            fates: Fates::of(vec![Some(SagaStatus::Completed); 300]),
            injected: Injected {
                kills: 6,
                broker_restarts: 2,
                pg_restarts: 1,
            },
            dead_letters: 3,
            ..Verdict::default()
        }
    }

    #[test]
    fn the_summary_line_has_the_agreed_form() {
        let verdict = clean();
        assert!(verdict.passed());
        assert_eq!(
            verdict.render(10),
            "chaos: sagas=300 kills=6 broker_restarts=2 pg_restarts=1 lost=0 doubled=0 \
             stuck=0 parked=0 dead_letters=3 invariants=ok"
        );
    }

    #[test]
    fn any_count_that_must_be_zero_fails_the_run() {
        let mut lost = clean();
        lost.fates.lost = 1;
        let mut stuck = clean();
        stuck.fates.stuck = 1;
        let mut parked = clean();
        parked.fates.parked = 1;
        let mut doubled = clean();
        doubled.doubled = 2;
        let mut harness = clean();
        harness
            .harness_errors
            .push("no broker restart happened".into());
        for verdict in [lost, stuck, parked, doubled, harness] {
            assert!(!verdict.passed(), "{verdict:?}");
        }
    }

    #[test]
    fn violations_are_printed_before_a_failed_summary() {
        let mut verdict = clean();
        verdict.violations = vec!["user 1: 5 cents still frozen".into(); 3];
        let text = verdict.render(2);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "invariant violated: user 1: 5 cents still frozen");
        assert_eq!(lines[2], "… and 1 more violations");
        assert!(lines[3].ends_with("invariants=FAILED"));
        assert!(!verdict.passed());
    }
}
