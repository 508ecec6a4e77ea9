//! The JSON bodies of the admin API, built from stored rows and events. Pure.

use chrono::{DateTime, Utc};
use saga_core::{
    Progress, RetryPolicy, SagaDefinition, SagaEvent, SagaState, SagaStatus, TimerKind,
};
use saga_engine::store::{RecordedEvent, SagaRow};
use schemas::{Phase, ReplyOutcome};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// A saga in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SagaSummary {
    /// Saga id.
    pub id: Uuid,
    /// Definition name.
    pub definition: String,
    /// Definition version.
    pub definition_version: i32,
    /// `running`, `compensating`, `completed`, `compensated`, `parked` or
    /// `resolved_manually`.
    pub status: String,
    /// The step the saga is at, if any.
    pub step: Option<String>,
    /// Events in its history (the version operator actions must name).
    pub version: i64,
    /// First event.
    pub created_at: DateTime<Utc>,
    /// Last event.
    pub updated_at: DateTime<Utc>,
    /// When a timer next wakes it.
    pub next_wakeup_at: Option<DateTime<Utc>>,
    /// Why it is parked.
    pub parked_reason: Option<String>,
}

impl From<&SagaRow> for SagaSummary {
    fn from(row: &SagaRow) -> Self {
        SagaSummary {
            id: row.id,
            definition: row.definition.clone(),
            definition_version: row.definition_version,
            status: row.status.to_string(),
            step: row.step.clone(),
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
            next_wakeup_at: row.next_wakeup_at,
            parked_reason: row.parked_reason.clone(),
        }
    }
}

/// One page of sagas, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SagaPage {
    /// The sagas.
    pub items: Vec<SagaSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// The page size applied (the request's `limit`, capped).
    pub limit: u32,
}

/// Progress of one phase slot of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PhaseProgress {
    /// `idle`, `in_flight`, `succeeded`, `rejected` or `gave_up`.
    pub state: String,
    /// The phase in flight.
    pub phase: Option<String>,
    /// Its latest attempt.
    pub attempt: Option<u32>,
    /// Why it was rejected or given up.
    pub reason: Option<String>,
}

impl From<&Progress> for PhaseProgress {
    fn from(progress: &Progress) -> Self {
        let (state, phase, attempt, reason) = match progress {
            Progress::Idle => ("idle", None, None, None),
            Progress::InFlight { phase, attempt } => {
                ("in_flight", Some(phase.to_string()), Some(*attempt), None)
            }
            Progress::Succeeded => ("succeeded", None, None, None),
            Progress::Rejected { reason } => ("rejected", None, None, Some(reason.clone())),
            Progress::GaveUp { reason } => ("gave_up", None, None, Some(reason.clone())),
        };
        PhaseProgress {
            state: state.into(),
            phase,
            attempt,
            reason,
        }
    }
}

/// One step of a saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepView {
    /// Step name.
    pub name: String,
    /// `tcc` or `compensable`, when this process knows the definition.
    pub kind: Option<String>,
    /// The participant that runs it, when this process knows the definition.
    pub participant: Option<String>,
    /// The forward phase (try or action).
    pub forward: PhaseProgress,
    /// The settling phase (confirm, cancel or compensate).
    pub settle: PhaseProgress,
    /// Commands sent for this step, all phases and attempts.
    pub commands_sent: u32,
    /// The last failure, rejection or give-up of this step.
    pub last_error: Option<String>,
}

/// A saga's durable timer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TimerView {
    /// The step it belongs to (empty for the saga's deadline).
    pub step: String,
    /// `timeout` (waiting for a reply), `backoff` (waiting to retry), `deferred` (held
    /// back by the participant's circuit breaker) or `deadline` (the saga's deadline).
    #[schema(value_type = String)]
    pub kind: TimerKind,
    /// The phase it re-sends (empty for the saga's deadline).
    pub phase: String,
    /// The attempt it concerns.
    pub attempt: i32,
    /// When it fires; empty while the command it times out waits for the broker's
    /// acknowledgement (the timeout starts then).
    pub fire_at: Option<DateTime<Utc>>,
}

/// Everything about one saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SagaDetail {
    /// The list fields.
    #[serde(flatten)]
    pub summary: SagaSummary,
    /// The input it was started with.
    #[schema(value_type = Object)]
    pub input: Value,
    /// Why it is compensating or compensated.
    pub failure: Option<String>,
    /// W3C trace id its messages carry.
    pub trace_id: String,
    /// Its steps, in definition order.
    pub steps: Vec<StepView>,
    /// Its timers.
    pub timers: Vec<TimerView>,
}

impl SagaDetail {
    /// Builds the detail from the row, its events, its timers and (when known) its
    /// definition. `None` when the stored snapshot does not decode.
    pub fn build(
        row: &SagaRow,
        events: &[RecordedEvent],
        timers: Vec<TimerView>,
        definition: Option<&SagaDefinition>,
    ) -> Option<SagaDetail> {
        let state: SagaState = row.saga_state().ok()?;
        let decoded = decode(events);
        let steps = state
            .steps
            .iter()
            .map(|step| {
                let def = definition.and_then(|d| d.step(&step.name)).map(|(_, s)| s);
                StepView {
                    name: step.name.clone(),
                    kind: def.map(|s| s.kind().as_str().to_string()),
                    participant: def.map(|s| s.participant().to_string()),
                    forward: (&step.forward).into(),
                    settle: (&step.settle).into(),
                    commands_sent: decoded
                        .iter()
                        .filter(|(_, e)| {
                            matches!(e, SagaEvent::CommandSent { step: s, .. } if *s == step.name)
                        })
                        .count() as u32,
                    last_error: last_error(&decoded, &step.name),
                }
            })
            .collect();
        Some(SagaDetail {
            summary: row.into(),
            input: row.input.clone(),
            failure: state.failure,
            trace_id: state.trace_id,
            steps,
            timers,
        })
    }
}

fn decode(events: &[RecordedEvent]) -> Vec<(&RecordedEvent, SagaEvent)> {
    events
        .iter()
        .filter_map(|r| serde_json::from_value(r.data.clone()).ok().map(|e| (r, e)))
        .collect()
}

fn last_error(events: &[(&RecordedEvent, SagaEvent)], name: &str) -> Option<String> {
    events.iter().rev().find_map(|(_, event)| match event {
        SagaEvent::ReplyReceived {
            step,
            phase,
            outcome: ReplyOutcome::Failed { error },
            ..
        } if step == name => Some(format!("{phase} failed: {error}")),
        SagaEvent::ReplyReceived {
            step,
            phase,
            outcome: ReplyOutcome::Rejected { reason },
            ..
        } if step == name => Some(format!("{phase} rejected: {reason}")),
        SagaEvent::GaveUp { step, reason, .. } if step == name => Some(reason.clone()),
        _ => None,
    })
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// Position in the history, from 1.
    pub seq: i64,
    /// Event name, e.g. `CommandSent`.
    pub event_type: String,
    /// The event's body.
    #[schema(value_type = Object)]
    pub data: Value,
    /// When it was appended.
    pub recorded_at: DateTime<Utc>,
}

/// One command sent and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Exchange {
    /// Step.
    pub step: String,
    /// Phase.
    pub phase: String,
    /// Attempt, from 1.
    pub attempt: u32,
    /// When the command was handed to the outbox.
    pub sent_at: DateTime<Utc>,
    /// When its reply was applied.
    pub replied_at: Option<DateTime<Utc>>,
    /// `ok`, `rejected` or `failed`; absent without a reply.
    pub outcome: Option<String>,
    /// The rejection reason or failure message.
    pub detail: Option<String>,
    /// No reply came before the engine sent the next attempt or gave up.
    pub timed_out: bool,
}

/// A saga's whole story.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SagaHistory {
    /// Saga id.
    pub saga_id: Uuid,
    /// Events in the history.
    pub version: i64,
    /// The events, in order.
    pub events: Vec<EventView>,
    /// The commands sent and the replies received, in the order sent.
    pub exchanges: Vec<Exchange>,
}

impl SagaHistory {
    /// Builds the story from the events, oldest first.
    pub fn build(saga_id: Uuid, events: &[RecordedEvent]) -> SagaHistory {
        let decoded = decode(events);
        let mut exchanges: Vec<Exchange> = Vec::new();
        for (recorded, event) in &decoded {
            match event {
                SagaEvent::CommandSent {
                    step,
                    phase,
                    attempt,
                } => {
                    for earlier in exchanges.iter_mut().filter(|x| {
                        x.step == *step && x.phase == phase.as_str() && x.replied_at.is_none()
                    }) {
                        earlier.timed_out = true;
                    }
                    exchanges.push(Exchange {
                        step: step.clone(),
                        phase: phase.to_string(),
                        attempt: *attempt,
                        sent_at: recorded.recorded_at,
                        replied_at: None,
                        outcome: None,
                        detail: None,
                        timed_out: false,
                    });
                }
                SagaEvent::ReplyReceived {
                    step,
                    phase,
                    attempt,
                    outcome,
                } => {
                    if let Some(exchange) = exchanges.iter_mut().rev().find(|x| {
                        x.step == *step
                            && x.phase == phase.as_str()
                            && x.attempt == *attempt
                            && x.replied_at.is_none()
                    }) {
                        let (name, detail) = outcome_parts(outcome);
                        exchange.replied_at = Some(recorded.recorded_at);
                        exchange.outcome = Some(name.into());
                        exchange.detail = detail;
                        exchange.timed_out = false;
                    }
                }
                SagaEvent::GaveUp { step, phase, .. } => {
                    for open in exchanges.iter_mut().filter(|x| {
                        x.step == *step && x.phase == phase.as_str() && x.replied_at.is_none()
                    }) {
                        open.timed_out = true;
                    }
                }
                _ => {}
            }
        }
        SagaHistory {
            saga_id,
            version: events.len() as i64,
            events: events
                .iter()
                .map(|e| EventView {
                    seq: e.seq,
                    event_type: e.event_type.clone(),
                    data: e.data.clone(),
                    recorded_at: e.recorded_at,
                })
                .collect(),
            exchanges,
        }
    }
}

fn outcome_parts(outcome: &ReplyOutcome) -> (&'static str, Option<String>) {
    match outcome {
        ReplyOutcome::Ok { .. } => ("ok", None),
        ReplyOutcome::Rejected { reason } => ("rejected", Some(reason.clone())),
        ReplyOutcome::Failed { error } => ("failed", Some(error.clone())),
    }
}

/// A retry policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RetryView {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Wait before the second attempt, in milliseconds.
    pub initial_backoff_ms: u64,
    /// Longest wait between attempts, in milliseconds.
    pub max_backoff_ms: u64,
    /// Growth of the wait per attempt.
    pub multiplier: f64,
}

impl From<&RetryPolicy> for RetryView {
    fn from(policy: &RetryPolicy) -> Self {
        RetryView {
            max_attempts: policy.max_attempts(),
            initial_backoff_ms: policy.initial_backoff().as_millis() as u64,
            max_backoff_ms: policy.max_backoff().as_millis() as u64,
            multiplier: policy.multiplier(),
        }
    }
}

/// One step of a definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DefinitionStepView {
    /// Step name.
    pub name: String,
    /// `tcc` or `compensable`.
    pub kind: String,
    /// The participant that runs it.
    pub participant: String,
    /// Reply timeout per attempt, in milliseconds.
    pub timeout_ms: u64,
    /// Retry of the forward phase.
    pub retry: RetryView,
    /// Retry of confirm, cancel or compensate.
    pub settle_retry: RetryView,
}

/// A registered definition version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DefinitionView {
    /// Name.
    pub name: String,
    /// Version.
    pub version: u32,
    /// The topic whose messages start it.
    pub trigger_topic: String,
    /// `sequential` or `parallel`.
    pub mode: String,
    /// Its steps, in order.
    pub steps: Vec<DefinitionStepView>,
}

impl From<&SagaDefinition> for DefinitionView {
    fn from(definition: &SagaDefinition) -> Self {
        DefinitionView {
            name: definition.name().to_string(),
            version: definition.version(),
            trigger_topic: definition.trigger_topic().to_string(),
            mode: definition.mode().as_str().to_string(),
            steps: definition
                .steps()
                .iter()
                .map(|step| DefinitionStepView {
                    name: step.name().to_string(),
                    kind: step.kind().as_str().to_string(),
                    participant: step.participant().to_string(),
                    timeout_ms: definition.timeout_for(step.name()).as_millis() as u64,
                    retry: definition
                        .retry_for(step.name(), step.forward_phase())
                        .into(),
                    settle_retry: definition.retry_for(step.name(), settle_phase(step)).into(),
                })
                .collect(),
        }
    }
}

fn settle_phase(step: &saga_core::StepDef) -> Phase {
    step.undo_phase()
}

/// Sagas of one definition in one status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusCount {
    /// Definition name.
    pub definition: String,
    /// `running`, `compensating`, `completed`, `compensated`, `parked` or
    /// `resolved_manually`.
    #[schema(value_type = String)]
    pub status: SagaStatus,
    /// How many.
    pub count: i64,
}

/// The oldest saga still running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OldestRunning {
    /// Saga id.
    pub saga_id: Uuid,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// How long ago, in seconds.
    pub age_seconds: f64,
}

/// Messages waiting in the engine's outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OutboxStats {
    /// Rows not yet acknowledged by Kafka.
    pub backlog: i64,
    /// Age of the oldest row, in seconds.
    pub oldest_age_seconds: Option<f64>,
}

/// The state of the deployment at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    /// Counts per definition and status.
    pub sagas: Vec<StatusCount>,
    /// Sagas waiting for an operator.
    pub parked: i64,
    /// The oldest saga still running or compensating.
    pub oldest_running: Option<OldestRunning>,
    /// The engine's outbox.
    pub outbox: OutboxStats,
    /// Timers due now and not yet fired.
    pub timers_due: i64,
    /// Dead letters kept in the engine's table and not discarded.
    pub dead_letters: i64,
    /// Messages this engine process dead-lettered since it started.
    pub dead_lettered_by_this_process: u64,
    /// The circuit breaker of each participant, as this engine process sees it.
    pub breakers: Vec<BreakerStats>,
}

/// One participant's circuit breaker in this engine process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BreakerStats {
    /// The participant.
    pub participant: String,
    /// `closed` (commands go), `half_open` (one probe goes) or `open` (new forward
    /// commands wait at their step).
    pub state: String,
    /// Failed replies and timeouts counted towards opening it (while closed).
    pub recent_failures: u64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn recorded(seq: i64, event: SagaEvent) -> RecordedEvent {
        RecordedEvent {
            saga_id: Uuid::nil(),
            seq,
            event_type: event.name().into(),
            data: serde_json::to_value(&event).unwrap(),
            recorded_at: Utc::now(),
        }
    }

    fn sent(step: &str, phase: Phase, attempt: u32) -> SagaEvent {
        SagaEvent::CommandSent {
            step: step.into(),
            phase,
            attempt,
        }
    }

    fn reply(step: &str, phase: Phase, attempt: u32, outcome: ReplyOutcome) -> SagaEvent {
        SagaEvent::ReplyReceived {
            step: step.into(),
            phase,
            attempt,
            outcome,
        }
    }

    #[test]
    fn the_story_pairs_each_command_with_its_reply_and_marks_timeouts() {
        let events: Vec<RecordedEvent> = [
            SagaEvent::Started {
                definition: "order".into(),
                version: 1,
                input: json!({}),
                steps: vec!["funds".into()],
                trace_id: "t".into(),
            },
            sent("funds", Phase::Try, 1),
            sent("funds", Phase::Try, 2),
            reply(
                "funds",
                Phase::Try,
                2,
                ReplyOutcome::Failed {
                    error: "db down".into(),
                },
            ),
            sent("funds", Phase::Try, 3),
            reply("funds", Phase::Try, 3, ReplyOutcome::ok()),
            sent("funds", Phase::Confirm, 1),
            SagaEvent::GaveUp {
                step: "funds".into(),
                phase: Phase::Confirm,
                reason: "no reply".into(),
            },
        ]
        .into_iter()
        .enumerate()
        .map(|(i, e)| recorded(i as i64 + 1, e))
        .collect();
        let story = SagaHistory::build(Uuid::nil(), &events);
        assert_eq!(story.version, 8);
        assert_eq!(story.events.len(), 8);
        let summary: Vec<(String, u32, Option<String>, bool)> = story
            .exchanges
            .iter()
            .map(|x| (x.phase.clone(), x.attempt, x.outcome.clone(), x.timed_out))
            .collect();
        assert_eq!(
            summary,
            [
                ("try".to_string(), 1, None, true),
                ("try".to_string(), 2, Some("failed".to_string()), false),
                ("try".to_string(), 3, Some("ok".to_string()), false),
                ("confirm".to_string(), 1, None, true),
            ]
        );
        assert_eq!(story.exchanges[1].detail.as_deref(), Some("db down"));
        assert_eq!(
            last_error(&decode(&events), "funds").as_deref(),
            Some("no reply")
        );
    }
}
