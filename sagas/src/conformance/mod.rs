//! `sagas conformance`: the engine's side of the participant protocol
//! (`schemas/PROTOCOL.md`), played against a running participant in any language.
//!
//! It sends commands on the participant's topic as the engine would and judges what comes
//! back on the replies topic and the dead-letter queue: first delivery, duplicates, a new
//! attempt, undo before and after the forward phase, the late forward phase, the deadline,
//! TCC's confirm, poison, `traceparent`. With `--check-sql` it also reads the participant's
//! business state between commands and checks each effect happened once, or not at all.
//!
//! - [`profile`]: what to send to which participant (built in for the checkout's three);
//! - [`cases`]: the situations and what each expects;
//! - [`session`]: building, sending and answering commands as the engine does;
//! - [`judge`]: checking a reply or dead letter against the protocol (pure);
//! - [`effects`]: the `--check-sql` hook;
//! - [`wire`]: the Kafka side.

pub mod cases;
pub mod effects;
pub mod judge;
pub mod profile;
pub mod session;
pub mod wire;

use std::time::Duration;

use saga_plumbing::db::DatabaseUrl;
use saga_plumbing::kafka::KafkaSettings;
use saga_plumbing::topics::Topics;

use self::cases::Case;
use self::effects::Effects;
use self::profile::Profile;
use self::session::Session;
use self::wire::Wire;

/// What `sagas conformance` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The participant and what to send it.
    pub profile: Profile,
    /// The query standing for the participant's business state, if any.
    pub check_sql: Option<String>,
    /// The database `check_sql` runs on.
    pub database: Option<DatabaseUrl>,
    /// How long to wait for each reply or dead letter.
    pub timeout: Duration,
    /// Partitions of the topics, when the kit has to create them.
    pub partitions: i32,
}

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    /// Which case.
    pub case: Case,
    /// What went wrong; `None` when it passed.
    pub failure: Option<String>,
}

impl CaseResult {
    /// The case's line: `pass  <name>` or `FAIL  <name>: <what went wrong>`.
    pub fn render(&self) -> String {
        match &self.failure {
            None => format!("pass  {}", self.case.name()),
            Some(failure) => format!("FAIL  {}: {failure}", self.case.name()),
        }
    }
}

/// Every case's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The participant judged.
    pub participant: String,
    /// One per case run, in order.
    pub results: Vec<CaseResult>,
}

impl Report {
    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| r.failure.is_some()).count()
    }

    /// Whether every case passed.
    pub fn passed(&self) -> bool {
        self.failed() == 0
    }

    /// The last line: `conformance: participant=NAME cases=N passed=P failed=F`.
    pub fn summary(&self) -> String {
        let cases = self.results.len();
        let failed = self.failed();
        format!(
            "conformance: participant={} cases={cases} passed={} failed={failed}",
            self.participant,
            cases - failed
        )
    }
}

/// Runs every case that applies to the participant's step, calling `on_case` as each one
/// ends.
pub async fn run(
    kafka: &KafkaSettings,
    topics: &Topics,
    options: &Options,
    mut on_case: impl FnMut(&CaseResult),
) -> anyhow::Result<Report> {
    let profile = &options.profile;
    let effects = match &options.check_sql {
        Some(sql) => {
            let database = options.database.as_ref().ok_or_else(|| {
                anyhow::anyhow!("--check-sql needs the participant's database (--database-url)")
            })?;
            Some(Effects::connect(database, sql).await?)
        }
        None => None,
    };
    let wire = Wire::open(
        kafka,
        &topics.commands(&profile.participant),
        &topics.replies(),
        &topics.dlq(),
        options.partitions,
    )
    .await?;
    let session = Session::new(&wire, profile, effects.as_ref(), options.timeout);
    let mut results = Vec::new();
    let mut silent: Option<String> = None;
    for case in Case::ALL
        .into_iter()
        .filter(|case| case.applies_to(profile.shape))
    {
        let failure = match &silent {
            Some(silent) => Some(silent.clone()),
            None => case.run(&session).await.err(),
        };
        // A participant that answered nothing to the first case is not there: say so
        // instead of waiting out every other case.
        if failure.is_some() && silent.is_none() && wire.replies_read() == 0 {
            silent = Some(format!(
                "not run: nothing came back on {} — is the participant running and \
                 consuming {}?",
                topics.replies(),
                wire.commands_topic()
            ));
        }
        let result = CaseResult { case, failure };
        on_case(&result);
        results.push(result);
    }
    Ok(Report {
        participant: profile.participant.clone(),
        results,
    })
}
