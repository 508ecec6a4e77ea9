//! Text for people: aligned tables and the per-step timeline. Pure: JSON in, text out.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Aligned columns, a header row first.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(headers.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn short(value: &Value, max: usize) -> String {
    let full = text(value);
    if full.chars().count() <= max {
        return full;
    }
    let cut: String = full.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

fn time(value: &Value) -> Option<DateTime<Utc>> {
    value.as_str()?.parse().ok()
}

fn items(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// A page of `/v1/sagas`.
pub fn saga_page(page: &Value) -> String {
    let rows: Vec<Vec<String>> = items(&page["items"])
        .iter()
        .map(|s| {
            vec![
                text(&s["id"]),
                format!(
                    "{}@{}",
                    text(&s["definition"]),
                    text(&s["definition_version"])
                ),
                text(&s["status"]),
                text(&s["step"]),
                text(&s["updated_at"]),
                short(&s["parked_reason"], 60),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ID",
            "DEFINITION",
            "STATUS",
            "STEP",
            "UPDATED",
            "PARKED REASON",
        ],
        &rows,
    );
    out.push_str(&format!("\n{} saga(s)", rows.len()));
    if let Some(cursor) = page["next_cursor"].as_str() {
        out.push_str(&format!("; next page: --cursor {cursor}"));
    }
    out
}

/// One saga (`/v1/sagas/{id}`) with its per-step timeline from its history.
pub fn saga(saga: &Value, history: &Value) -> String {
    let mut out = vec![
        format!("saga        {}", text(&saga["id"])),
        format!(
            "definition  {}@{}",
            text(&saga["definition"]),
            text(&saga["definition_version"])
        ),
        format!("status      {}", text(&saga["status"])),
        format!("version     {}", text(&saga["version"])),
        format!("created     {}", text(&saga["created_at"])),
        format!("updated     {}", text(&saga["updated_at"])),
        format!("trace       {}", text(&saga["trace_id"])),
    ];
    for (label, key) in [("failure", "failure"), ("parked", "parked_reason")] {
        if !saga[key].is_null() {
            out.push(format!("{label:<12}{}", text(&saga[key])));
        }
    }
    let rows: Vec<Vec<String>> = items(&saga["steps"])
        .iter()
        .map(|s| {
            vec![
                text(&s["name"]),
                text(&s["kind"]),
                text(&s["participant"]),
                progress(&s["forward"]),
                progress(&s["settle"]),
                text(&s["commands_sent"]),
                short(&s["last_error"], 60),
            ]
        })
        .collect();
    out.push(String::new());
    out.push(table(
        &[
            "STEP",
            "KIND",
            "PARTICIPANT",
            "FORWARD",
            "SETTLE",
            "SENT",
            "LAST ERROR",
        ],
        &rows,
    ));
    out.push(String::new());
    out.push(timeline(saga, history));
    out.join("\n")
}

fn progress(slot: &Value) -> String {
    match (slot["state"].as_str(), slot["attempt"].as_u64()) {
        (Some(state), Some(attempt)) => {
            format!("{state} ({} #{attempt})", text(&slot["phase"]))
        }
        (Some(state), None) => state.to_string(),
        _ => "-".into(),
    }
}

/// Per step, each command sent and what came of it, as offsets from the saga's start.
pub fn timeline(saga: &Value, history: &Value) -> String {
    let start = time(&saga["created_at"]);
    let offset = |at: &Value| match (start, time(at)) {
        (Some(start), Some(at)) => format!("+{:.3}s", (at - start).as_seconds_f64()),
        _ => "?".into(),
    };
    let mut out = vec!["timeline".to_string()];
    for step in items(&saga["steps"]) {
        let name = text(&step["name"]);
        out.push(format!("  {name}"));
        for x in items(&history["exchanges"])
            .iter()
            .filter(|x| x["step"] == step["name"])
        {
            let result = match (x["outcome"].as_str(), x["timed_out"].as_bool()) {
                (Some(outcome), _) => {
                    let detail = x["detail"]
                        .as_str()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default();
                    format!("{outcome}{detail} at {}", offset(&x["replied_at"]))
                }
                (None, Some(true)) => "no reply (timed out)".into(),
                (None, _) => "waiting".into(),
            };
            out.push(format!(
                "    {:<9} {:<11} #{:<2} {result}",
                offset(&x["sent_at"]),
                text(&x["phase"]),
                text(&x["attempt"]),
            ));
        }
    }
    let operators: Vec<String> = items(&history["events"])
        .iter()
        .filter(|e| e["event_type"] == "OperatorActed")
        .map(|e| {
            format!(
                "    {:<9} {} by {}: {}",
                offset(&e["recorded_at"]),
                text(&e["data"]["action"]),
                text(&e["data"]["actor"]),
                text(&e["data"]["reason"])
            )
        })
        .collect();
    if !operators.is_empty() {
        out.push("  operator".into());
        out.extend(operators);
    }
    out.join("\n")
}

/// `/v1/sagas/{id}/history`.
pub fn history(history: &Value) -> String {
    let rows: Vec<Vec<String>> = items(&history["events"])
        .iter()
        .map(|e| {
            let mut data = e["data"].clone();
            if let Some(fields) = data.as_object_mut() {
                fields.remove("type");
            }
            vec![
                text(&e["seq"]),
                text(&e["recorded_at"]),
                text(&e["event_type"]),
                short(&data, 90),
            ]
        })
        .collect();
    table(&["SEQ", "TIME", "EVENT", "DATA"], &rows)
}

/// `/v1/stats`.
pub fn stats(stats: &Value) -> String {
    let rows: Vec<Vec<String>> = items(&stats["sagas"])
        .iter()
        .map(|c| {
            vec![
                text(&c["definition"]),
                text(&c["status"]),
                text(&c["count"]),
            ]
        })
        .collect();
    let oldest = match &stats["oldest_running"] {
        Value::Null => "none".to_string(),
        o => format!(
            "{} ({:.1}s old)",
            text(&o["saga_id"]),
            o["age_seconds"].as_f64().unwrap_or_default()
        ),
    };
    let breakers = items(&stats["breakers"])
        .iter()
        .map(|b| format!("{} {}", text(&b["participant"]), text(&b["state"])))
        .collect::<Vec<_>>()
        .join(", ");
    [
        table(&["DEFINITION", "STATUS", "COUNT"], &rows),
        String::new(),
        format!("parked          {}", text(&stats["parked"])),
        format!("oldest running  {oldest}"),
        format!(
            "outbox          {} waiting, oldest {}",
            text(&stats["outbox"]["backlog"]),
            stats["outbox"]["oldest_age_seconds"]
                .as_f64()
                .map(|s| format!("{s:.1}s"))
                .unwrap_or_else(|| "-".into())
        ),
        format!("timers due      {}", text(&stats["timers_due"])),
        format!("dead letters    {}", text(&stats["dead_letters"])),
        format!("breakers        {breakers}"),
    ]
    .join("\n")
}

/// `/v1/definitions`.
pub fn definitions(definitions: &Value) -> String {
    items(definitions)
        .iter()
        .map(|d| {
            let rows: Vec<Vec<String>> = items(&d["steps"])
                .iter()
                .map(|s| {
                    vec![
                        text(&s["name"]),
                        text(&s["kind"]),
                        text(&s["participant"]),
                        format!("{}ms", text(&s["timeout_ms"])),
                        text(&s["retry"]["max_attempts"]),
                        text(&s["settle_retry"]["max_attempts"]),
                    ]
                })
                .collect();
            format!(
                "{}@{} ({}; trigger topic {})\n{}",
                text(&d["name"]),
                text(&d["version"]),
                text(&d["mode"]),
                text(&d["trigger_topic"]),
                table(
                    &[
                        "STEP",
                        "KIND",
                        "PARTICIPANT",
                        "TIMEOUT",
                        "TRIES",
                        "SETTLE TRIES"
                    ],
                    &rows
                )
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// `/v1/dead-letters`.
pub fn dead_letters(page: &Value) -> String {
    let rows: Vec<Vec<String>> = items(&page["items"])
        .iter()
        .map(|l| {
            vec![
                text(&l["id"]),
                text(&l["dead_lettered_at"]),
                format!(
                    "{}[{}]@{}",
                    text(&l["topic"]),
                    text(&l["partition"]),
                    text(&l["offset"])
                ),
                text(&l["key"]),
                short(&l["error"], 70),
            ]
        })
        .collect();
    let mut out = table(&["ID", "AT", "FROM", "KEY", "ERROR"], &rows);
    if let Some(cursor) = page["next_cursor"].as_str() {
        out.push_str(&format!("\nnext page: --cursor {cursor}"));
    }
    out
}

/// `POST /v1/triggers/{definition}`.
pub fn trigger(published: &Value) -> String {
    format!(
        "published the trigger of saga {} (key {}) to {}",
        text(&published["saga_id"]),
        text(&published["key"]),
        text(&published["topic"])
    )
}

/// `POST /v1/sagas/{id}/{action}`.
pub fn accepted(accepted: &Value) -> String {
    let duplicate = if accepted["duplicate"] == true {
        " (this key was used before: nothing new happened)"
    } else {
        ""
    };
    format!(
        "saga {}: {} accepted; status {}, version {}{duplicate}",
        text(&accepted["saga_id"]),
        text(&accepted["action"]),
        text(&accepted["status"]),
        text(&accepted["version"])
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn columns_line_up() {
        let out = table(
            &["ID", "STATUS"],
            &[
                vec!["a".into(), "running".into()],
                vec!["bbbb".into(), "parked".into()],
            ],
        );
        assert_eq!(out, "ID    STATUS\na     running\nbbbb  parked");
    }

    #[test]
    fn the_timeline_shows_each_step_its_attempts_and_operator_actions() {
        let saga = json!({
            "id": "s", "created_at": "2026-11-23T10:00:00Z",
            "steps": [{ "name": "funds" }, { "name": "points" }],
        });
        let history = json!({
            "exchanges": [
                { "step": "funds", "phase": "try", "attempt": 1, "sent_at": "2026-11-23T10:00:00.010Z",
                  "replied_at": null, "outcome": null, "timed_out": true },
                { "step": "funds", "phase": "try", "attempt": 2, "sent_at": "2026-11-23T10:00:05Z",
                  "replied_at": "2026-11-23T10:00:05.250Z", "outcome": "ok", "timed_out": false },
                { "step": "points", "phase": "action", "attempt": 1, "sent_at": "2026-11-23T10:00:00.010Z",
                  "replied_at": "2026-11-23T10:00:00.100Z", "outcome": "rejected",
                  "detail": "not enough points", "timed_out": false },
            ],
            "events": [{ "event_type": "OperatorActed", "recorded_at": "2026-11-23T10:00:04Z",
                         "data": { "action": "retry", "actor": "ana", "reason": "kick" } }],
        });
        let out = timeline(&saga, &history);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "timeline");
        assert_eq!(lines[1], "  funds");
        assert!(lines[2].contains("+0.010s") && lines[2].ends_with("no reply (timed out)"));
        assert!(lines[3].contains("#2") && lines[3].ends_with("ok at +5.250s"));
        assert_eq!(lines[4], "  points");
        assert!(lines[5].ends_with("rejected (not enough points) at +0.100s"));
        assert_eq!(lines[6], "  operator");
        assert!(lines[7].ends_with("retry by ana: kick"));
    }
}
