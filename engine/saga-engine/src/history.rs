//! The events are the source of truth: folding a saga's events must give exactly the state
//! snapshot and the projection row stored beside them. [`verify`] checks that for every
//! saga of a database (`sagas verify-history`); [`differences`] is the pure comparison.

use std::collections::HashMap;

use saga_core::{SagaEvent, SagaState};
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::{RecordedEvent, SagaRow, SAGA_COLUMNS};
use crate::Result;

/// Sagas [`verify`] reads per query (keyset pages by id), each page with all of its
/// events: bounds the memory of one page, while the round trips stay few.
const SAGAS_PER_PAGE: i64 = 500;

/// A saga whose stored state is not what its events fold into.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// The saga.
    pub saga_id: Uuid,
    /// What differs, for people.
    pub what: Vec<String>,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryReport {
    /// Sagas whose events were folded and compared.
    pub checked: u64,
    /// Events checked in all.
    pub events: u64,
    /// Sagas that differ (empty: every snapshot is its history's fold).
    pub differences: Vec<Difference>,
}

impl HistoryReport {
    /// Whether every snapshot matched its history.
    pub fn matches(&self) -> bool {
        self.differences.is_empty()
    }

    /// The report for people: each saga that differs with what differs, then a last line
    /// `verify-history: N sagas checked (E events), D differ`.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for difference in &self.differences {
            text.push_str(&format!("saga {} differs:\n", difference.saga_id));
            for what in &difference.what {
                text.push_str(&format!("  {what}\n"));
            }
        }
        text.push_str(&format!(
            "verify-history: {} sagas checked ({} events), {} differ",
            self.checked,
            self.events,
            self.differences.len()
        ));
        text
    }
}

/// Folds the events of every saga in the engine schema of `pool` and compares the result
/// with the stored snapshot and projection columns. Events without a projection row are
/// reported too.
pub async fn verify(pool: &PgPool) -> Result<HistoryReport> {
    let mut report = HistoryReport::default();
    let mut after = Uuid::nil();
    loop {
        let rows: Vec<SagaRow> = sqlx::query_as(&format!(
            "SELECT {SAGA_COLUMNS} FROM sagas WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(SAGAS_PER_PAGE)
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let events: Vec<RecordedEvent> = sqlx::query_as(
            "SELECT saga_id, seq, event_type, data, recorded_at FROM saga_events
             WHERE saga_id = ANY($1) ORDER BY saga_id, seq",
        )
        .bind(&ids)
        .fetch_all(pool)
        .await?;
        report.events += events.len() as u64;
        let mut by_saga: HashMap<Uuid, Vec<RecordedEvent>> = HashMap::new();
        for event in events {
            by_saga.entry(event.saga_id).or_default().push(event);
        }
        for row in &rows {
            report.checked += 1;
            let history = by_saga.remove(&row.id).unwrap_or_default();
            let what = differences(row, &history);
            if !what.is_empty() {
                report.differences.push(Difference {
                    saga_id: row.id,
                    what,
                });
            }
        }
    }
    let orphans: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT e.saga_id FROM saga_events e
         WHERE NOT EXISTS (SELECT 1 FROM sagas s WHERE s.id = e.saga_id)",
    )
    .fetch_all(pool)
    .await?;
    report
        .differences
        .extend(orphans.into_iter().map(|saga_id| Difference {
            saga_id,
            what: vec!["events without a projection row".into()],
        }));
    Ok(report)
}

/// How `row` differs from what `history` (its events, oldest first) folds into; empty when
/// it does not.
pub fn differences(row: &SagaRow, history: &[RecordedEvent]) -> Vec<String> {
    let mut what = Vec::new();
    let mut state: Option<SagaState> = None;
    for (i, recorded) in history.iter().enumerate() {
        let expected_seq = i as i64 + 1;
        if recorded.seq != expected_seq {
            what.push(format!("event {expected_seq} has seq {}", recorded.seq));
        }
        match serde_json::from_value::<SagaEvent>(recorded.data.clone()) {
            Ok(event) => {
                if event.name() != recorded.event_type {
                    what.push(format!(
                        "event {} is stored as `{}` but holds `{}`",
                        recorded.seq,
                        recorded.event_type,
                        event.name()
                    ));
                }
                state = SagaState::apply(state, &event);
            }
            Err(error) => what.push(format!("event {} does not decode: {error}", recorded.seq)),
        }
    }
    if row.version != history.len() as i64 {
        what.push(format!(
            "version {} but {} events",
            row.version,
            history.len()
        ));
    }
    let Some(folded) = state else {
        what.push("the events fold into no saga (no Started event)".into());
        return what;
    };
    match row.saga_state() {
        Ok(snapshot) if snapshot == folded => {}
        Ok(snapshot) => what.push(format!(
            "snapshot differs from the fold: stored {}, folded {}",
            serde_json::to_string(&snapshot).unwrap_or_default(),
            serde_json::to_string(&folded).unwrap_or_default()
        )),
        Err(error) => what.push(format!("snapshot does not decode: {error}")),
    }
    let mut column = |name: &str, stored: String, folded: String| {
        if stored != folded {
            what.push(format!("{name} is `{stored}`, the fold says `{folded}`"));
        }
    };
    column("status", row.status.to_string(), folded.status.to_string());
    column(
        "step",
        format!("{:?}", row.step),
        format!("{:?}", folded.current_step()),
    );
    column(
        "definition",
        format!("{}@{}", row.definition, row.definition_version),
        format!("{}@{}", folded.definition, folded.version),
    );
    column(
        "parked_reason",
        format!("{:?}", row.parked_reason),
        format!("{:?}", folded.parked_reason),
    );
    column("input", row.input.to_string(), folded.input.to_string());
    what
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use saga_core::SagaStatus;
    use schemas::{Phase, ReplyOutcome};
    use serde_json::json;

    use super::*;

    fn history(saga_id: Uuid) -> Vec<RecordedEvent> {
        let events = [
            SagaEvent::Started {
                definition: "order".into(),
                version: 1,
                input: json!({ "id": "o-1" }),
                steps: vec!["funds".into()],
                trace_id: "t".into(),
            },
            SagaEvent::CommandSent {
                step: "funds".into(),
                phase: Phase::Try,
                attempt: 1,
            },
            SagaEvent::ReplyReceived {
                step: "funds".into(),
                phase: Phase::Try,
                attempt: 1,
                outcome: ReplyOutcome::Rejected {
                    reason: "no".into(),
                },
            },
        ];
        events
            .iter()
            .enumerate()
            .map(|(i, event)| RecordedEvent {
                saga_id,
                seq: i as i64 + 1,
                event_type: event.name().into(),
                data: serde_json::to_value(event).unwrap(),
                recorded_at: Utc::now(),
            })
            .collect()
    }

    fn row_of(saga_id: Uuid, history: &[RecordedEvent]) -> SagaRow {
        let mut state = None;
        for recorded in history {
            let event: SagaEvent = serde_json::from_value(recorded.data.clone()).unwrap();
            state = SagaState::apply(state, &event);
        }
        let state = state.unwrap();
        SagaRow {
            id: saga_id,
            definition: state.definition.clone(),
            definition_version: state.version as i32,
            status: state.status,
            step: state.current_step().map(str::to_string),
            input: state.input.clone(),
            state: crate::store::snapshot(&state).unwrap(),
            version: history.len() as i64,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            next_wakeup_at: None,
            parked_reason: None,
        }
    }

    #[test]
    fn a_row_written_from_its_events_matches() {
        let saga = Uuid::new_v4();
        let events = history(saga);
        assert_eq!(
            differences(&row_of(saga, &events), &events),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_changed_snapshot_status_or_version_is_found() {
        let saga = Uuid::new_v4();
        let events = history(saga);
        let mut row = row_of(saga, &events);
        row.status = SagaStatus::Completed;
        row.state["status"] = json!("completed");
        row.version = 2;
        let found = differences(&row, &events);
        assert!(
            found.iter().any(|d| d.starts_with("status is `completed`")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|d| d.starts_with("snapshot differs")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|d| d == "version 2 but 3 events"),
            "{found:?}"
        );
    }

    #[test]
    fn a_missing_or_mislabelled_event_is_found() {
        let saga = Uuid::new_v4();
        let mut events = history(saga);
        let row = row_of(saga, &events);
        events[1].event_type = "Completed".into();
        let found = differences(&row, &events);
        assert!(
            found.iter().any(|d| d.contains("stored as `Completed`")),
            "{found:?}"
        );
        events.remove(1);
        let found = differences(&row, &events);
        assert!(found.iter().any(|d| d == "event 2 has seq 3"), "{found:?}");
    }
}
