//! `sagas admin …`: the operator's command line, a client of the admin HTTP API.
//!
//! - `client`: the HTTP calls, with errors that say which address did not answer or what
//!   the API refused.
//! - `render`: aligned tables and the per-step timeline (pure).

mod client;
mod render;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use client::AdminClient;

/// Talk to a running engine's admin API.
#[derive(Parser)]
#[command(name = "admin")]
pub struct AdminArgs {
    /// The admin API's base URL.
    #[arg(
        long,
        env = "SAGAS_ADMIN_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    admin_url: String,
    /// Bearer token (env SAGAS_ADMIN_TOKEN; `admin.token` of the settings otherwise).
    #[arg(long, env = "SAGAS_ADMIN_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// `table` (aligned, for people) or `json` (the API's body, for scripts).
    #[arg(long, value_enum, default_value_t = OutputFormat::Table, global = true)]
    output: OutputFormat,
    #[command(subcommand)]
    command: AdminCommand,
}

/// Like the derived `Debug`, with `***` for the token.
impl std::fmt::Debug for AdminArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminArgs")
            .field("admin_url", &self.admin_url)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("output", &self.output)
            .field("command", &self.command)
            .finish()
    }
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned tables.
    Table,
    /// Pretty JSON.
    Json,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// List sagas, newest first.
    List(ListArgs),
    /// One saga: its steps and the per-step timeline.
    Show {
        /// Saga id.
        id: String,
    },
    /// One saga's events, commands and replies.
    History {
        /// Saga id.
        id: String,
    },
    /// Find a saga by its definition and business key (e.g. an order id).
    Find {
        /// Definition name.
        definition: String,
        /// The trigger's idempotency key.
        key: String,
    },
    /// Counts per definition and status, outbox, parked, dead letters.
    Stats,
    /// The definitions the engine runs.
    Definitions,
    /// Start a saga: publish its trigger with this input (JSON).
    Start {
        /// Definition name.
        definition: String,
        /// The saga input as JSON, e.g. '{"order_id": "…", …}'.
        input: String,
    },
    /// Re-send what a saga waits for now, as the next attempt.
    Retry(ActionArgs),
    /// Let a parked saga continue with fresh retries.
    Resume(ActionArgs),
    /// Abort a running saga: undo what may have been done.
    Compensate(ActionArgs),
    /// End a parked saga that was fixed by hand.
    Resolve(ActionArgs),
    /// Messages the engine could not process: list, replay, discard.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
}

#[derive(Debug, Subcommand)]
enum DeadLetterCommand {
    /// List them, newest first.
    List {
        /// The discarded ones instead.
        #[arg(long)]
        discarded: bool,
        /// Page size.
        #[arg(long)]
        limit: Option<u32>,
        /// Continue from a previous page's cursor.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Publish one again to the topic it came from.
    Replay(LetterArgs),
    /// Discard one (it stays listed under --discarded).
    Discard(LetterArgs),
}

#[derive(Debug, Args)]
struct LetterArgs {
    /// Dead-letter id.
    id: i64,
    /// Why (recorded).
    #[arg(long)]
    reason: String,
    /// Who (default: $USER).
    #[arg(long)]
    actor: Option<String>,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Statuses, comma-separated.
    #[arg(long)]
    status: Option<String>,
    /// Definition name.
    #[arg(long)]
    definition: Option<String>,
    /// Definition version.
    #[arg(long)]
    version: Option<u32>,
    /// The step sagas are at.
    #[arg(long)]
    step: Option<String>,
    /// Only parked sagas.
    #[arg(long)]
    parked: bool,
    /// Created at or after this time (RFC 3339, e.g. 2026-11-23T10:00:00Z).
    #[arg(long)]
    created_after: Option<String>,
    /// Created before this time (RFC 3339).
    #[arg(long)]
    created_before: Option<String>,
    /// Last changed at or after this time (RFC 3339).
    #[arg(long)]
    updated_after: Option<String>,
    /// Last changed before this time (RFC 3339).
    #[arg(long)]
    updated_before: Option<String>,
    /// Page size.
    #[arg(long)]
    limit: Option<u32>,
    /// Continue from a previous page's cursor.
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(Debug, Args)]
struct ActionArgs {
    /// Saga id.
    id: String,
    /// Why (recorded in the saga's history).
    #[arg(long)]
    reason: String,
    /// Who (default: $USER).
    #[arg(long)]
    actor: Option<String>,
    /// Repeating the command with the same key acts once.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// What a command printed and its exit code.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Text for standard output.
    pub text: String,
    /// 0 on success.
    pub code: i32,
}

impl AdminArgs {
    /// Runs the command against the API; `fallback_token` is the settings' `admin.token`.
    pub async fn execute(&self, fallback_token: Option<&str>) -> anyhow::Result<Output> {
        let token = self.token.as_deref().or(fallback_token);
        let client = AdminClient::new(&self.admin_url, token)?;
        let (body, table) = match &self.command {
            AdminCommand::List(list) => {
                let body = client.get(&["v1", "sagas"], &list.query()).await?;
                let table = render::saga_page(&body);
                (body, table)
            }
            AdminCommand::Show { id } => {
                let saga = client.get(&["v1", "sagas", id], &[]).await?;
                let history = client.get(&["v1", "sagas", id, "history"], &[]).await?;
                let table = render::saga(&saga, &history);
                (json!({ "saga": saga, "history": history }), table)
            }
            AdminCommand::History { id } => {
                let body = client.get(&["v1", "sagas", id, "history"], &[]).await?;
                let table = render::history(&body);
                (body, table)
            }
            AdminCommand::Find { definition, key } => {
                let path = ["v1", "definitions", definition, "sagas", key];
                let saga = client.get(&path, &[]).await?;
                let id = saga["id"].as_str().unwrap_or_default();
                let history = client.get(&["v1", "sagas", id, "history"], &[]).await?;
                let table = render::saga(&saga, &history);
                (saga, table)
            }
            AdminCommand::Stats => {
                let body = client.get(&["v1", "stats"], &[]).await?;
                let table = render::stats(&body);
                (body, table)
            }
            AdminCommand::Definitions => {
                let body = client.get(&["v1", "definitions"], &[]).await?;
                let table = render::definitions(&body);
                (body, table)
            }
            AdminCommand::Start { definition, input } => {
                let input: Value = serde_json::from_str(input)
                    .map_err(|e| anyhow::anyhow!("the input is not JSON: {e}"))?;
                let body = client
                    .post(&["v1", "triggers", definition], &input, None)
                    .await?;
                let table = render::trigger(&body);
                (body, table)
            }
            AdminCommand::DeadLetters(command) => dead_letters(&client, command).await?,
            AdminCommand::Retry(args)
            | AdminCommand::Resume(args)
            | AdminCommand::Compensate(args)
            | AdminCommand::Resolve(args) => {
                let action = self.action_name();
                let actor = actor(&args.actor);
                let body = client
                    .post(
                        &["v1", "sagas", &args.id, action],
                        &json!({ "reason": args.reason, "actor": actor }),
                        args.idempotency_key.as_deref(),
                    )
                    .await?;
                let table = render::accepted(&body);
                (body, table)
            }
        };
        let text = match self.output {
            OutputFormat::Json => serde_json::to_string_pretty(&body)?,
            OutputFormat::Table => table,
        };
        Ok(Output { text, code: 0 })
    }

    fn action_name(&self) -> &'static str {
        match self.command {
            AdminCommand::Retry(_) => "retry",
            AdminCommand::Resume(_) => "resume",
            AdminCommand::Compensate(_) => "compensate",
            _ => "resolve",
        }
    }
}

impl ListArgs {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        let mut add = |name, value: Option<String>| {
            if let Some(value) = value {
                query.push((name, value));
            }
        };
        add("status", self.status.clone());
        add("definition", self.definition.clone());
        add("version", self.version.map(|v| v.to_string()));
        add("step", self.step.clone());
        add("parked", self.parked.then(|| "true".to_string()));
        add("created_after", self.created_after.clone());
        add("created_before", self.created_before.clone());
        add("updated_after", self.updated_after.clone());
        add("updated_before", self.updated_before.clone());
        add("limit", self.limit.map(|l| l.to_string()));
        add("cursor", self.cursor.clone());
        query
    }
}

/// `--actor`, else `$USER`, else `sagas-cli`.
fn actor(given: &Option<String>) -> String {
    given
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "sagas-cli".into())
}

async fn dead_letters(
    client: &AdminClient,
    command: &DeadLetterCommand,
) -> anyhow::Result<(Value, String)> {
    Ok(match command {
        DeadLetterCommand::List {
            discarded,
            limit,
            cursor,
        } => {
            let mut query = vec![("discarded", discarded.to_string())];
            if let Some(limit) = limit {
                query.push(("limit", limit.to_string()));
            }
            if let Some(cursor) = cursor {
                query.push(("cursor", cursor.clone()));
            }
            let body = client.get(&["v1", "dead-letters"], &query).await?;
            let table = render::dead_letters(&body);
            (body, table)
        }
        DeadLetterCommand::Replay(args) => {
            let body = client
                .post(
                    &["v1", "dead-letters", &args.id.to_string(), "replay"],
                    &json!({ "reason": args.reason, "actor": actor(&args.actor) }),
                    None,
                )
                .await?;
            let table = format!(
                "dead letter {} published again to {}",
                args.id,
                body["topic"].as_str().unwrap_or("?")
            );
            (body, table)
        }
        DeadLetterCommand::Discard(args) => {
            let body = client
                .delete(
                    &["v1", "dead-letters", &args.id.to_string()],
                    &json!({ "reason": args.reason, "actor": actor(&args.actor) }),
                )
                .await?;
            let table = format!("dead letter {} discarded", args.id);
            (body, table)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_flags_become_the_apis_query_parameters() {
        let args = AdminArgs::try_parse_from([
            "admin",
            "list",
            "--parked",
            "--created-after",
            "2026-11-23T10:00:00Z",
            "--created-before",
            "2026-11-24T10:00:00Z",
            "--updated-after",
            "2026-11-23T11:00:00Z",
            "--updated-before",
            "2026-11-24T11:00:00Z",
        ])
        .unwrap();
        let AdminCommand::List(list) = &args.command else {
            panic!("{args:?}");
        };
        assert_eq!(
            list.query(),
            [
                ("parked", "true".to_string()),
                ("created_after", "2026-11-23T10:00:00Z".into()),
                ("created_before", "2026-11-24T10:00:00Z".into()),
                ("updated_after", "2026-11-23T11:00:00Z".into()),
                ("updated_before", "2026-11-24T11:00:00Z".into()),
            ]
        );
    }
}
