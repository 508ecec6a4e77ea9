//! The engine's side of one conformance run: building commands as the engine would, sending
//! them, taking their replies and reading the business state between them.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use schemas::headers::{SAGA_DEADLINE, TRACEPARENT};
use schemas::{Envelope, MessageKind, Phase};
use serde_json::Value;
use uuid::Uuid;

use super::effects::{self, Change, Effects};
use super::judge::{self, Answer, Asked, Expect};
use super::profile::{fill, Profile};
use super::wire::{Sent, Wire};

/// Which of the profile's bodies a command carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// One the participant accepts.
    Accepted,
    /// One it rejects for a business reason.
    Rejected,
    /// One outside its contract.
    Invalid,
}

/// A command as the kit sends it.
#[derive(Debug, Clone)]
pub struct Command {
    /// Its address.
    pub asked: Asked,
    /// Its envelope's `message_id`.
    pub message_id: Uuid,
    /// Its body.
    pub body: Value,
    /// Its `saga.deadline` header, if any.
    pub deadline: Option<chrono::DateTime<Utc>>,
    /// Its `traceparent` header.
    pub traceparent: String,
    /// When the kit made it (the envelope's `occurred_at`), so that its bytes are the same
    /// every time it is sent.
    pub occurred_at: chrono::DateTime<Utc>,
}

impl Command {
    /// The same command as the next attempt (a new message).
    pub fn next_attempt(&self) -> Command {
        let mut next = self.clone();
        next.asked.attempt += 1;
        next.message_id = Uuid::new_v4();
        next
    }

    /// The envelope's bytes, as sent.
    pub fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.envelope()).expect("an envelope is JSON")
    }

    /// The envelope, as JSON.
    pub fn envelope(&self) -> Value {
        let mut envelope = Envelope::new(MessageKind::Command, self.body.clone())
            .for_saga(self.asked.saga_id)
            .for_step(
                self.asked.step.clone(),
                self.asked.phase,
                self.asked.attempt,
            );
        envelope.message_id = self.message_id;
        envelope.occurred_at = self.occurred_at;
        serde_json::to_value(envelope).expect("an envelope is JSON")
    }

    /// The Kafka headers the engine would send.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![(TRACEPARENT, self.traceparent.clone())];
        if let Some(deadline) = self.deadline {
            let text = deadline.to_rfc3339_opts(SecondsFormat::Millis, true);
            headers.push((SAGA_DEADLINE, text));
        }
        headers
    }
}

/// One run against one participant.
pub struct Session<'a> {
    /// The broker side.
    pub wire: &'a Wire,
    /// What to send.
    pub profile: &'a Profile,
    effects: Option<&'a Effects>,
    /// How long to wait for each reply or dead letter.
    pub timeout: Duration,
    sagas: Mutex<Vec<Uuid>>,
}

impl<'a> Session<'a> {
    /// A session sending `profile`'s commands through `wire`, reading the state through
    /// `effects` when given.
    pub fn new(
        wire: &'a Wire,
        profile: &'a Profile,
        effects: Option<&'a Effects>,
        timeout: Duration,
    ) -> Self {
        Session {
            wire,
            profile,
            effects,
            timeout,
            sagas: Mutex::new(Vec::new()),
        }
    }

    /// A fresh saga id, remembered for the final check of unasked replies.
    pub fn new_saga(&self) -> Uuid {
        let saga_id = Uuid::new_v4();
        self.sagas.lock().expect("sagas lock").push(saga_id);
        saga_id
    }

    /// Every saga this session used.
    pub fn sagas(&self) -> Vec<Uuid> {
        self.sagas.lock().expect("sagas lock").clone()
    }

    /// The first attempt of `phase` of the profile's step in `saga_id`, carrying `body`.
    pub fn command(&self, saga_id: Uuid, phase: Phase, body: Body) -> Command {
        let template = match body {
            Body::Accepted => &self.profile.accepted_body,
            Body::Rejected => &self.profile.rejected_body,
            Body::Invalid => &self.profile.invalid_body,
        };
        Command {
            asked: Asked {
                saga_id,
                step: self.profile.step.clone(),
                phase,
                attempt: 1,
            },
            message_id: Uuid::new_v4(),
            body: fill(template, saga_id).expect("bodies are checked when the profile is made"),
            deadline: None,
            traceparent: format!(
                "00-{}-{}-01",
                Uuid::new_v4().simple(),
                &Uuid::new_v4().simple().to_string()[..16]
            ),
            occurred_at: Utc::now(),
        }
    }

    /// The forward phase (`try` or `action`) of the step.
    pub fn forward(&self, saga_id: Uuid, body: Body) -> Command {
        self.command(saga_id, self.profile.shape.forward(), body)
    }

    /// The undo phase (`cancel` or `compensate`) of the step, with the accepted body.
    pub fn undo(&self, saga_id: Uuid) -> Command {
        self.command(saga_id, self.profile.shape.undo(), Body::Accepted)
    }

    /// Sends `command`'s envelope.
    pub async fn send(&self, command: &Command) -> Result<Sent, String> {
        self.send_raw(
            command.asked.saga_id,
            &command.bytes(),
            &command.headers(),
            None,
        )
        .await
    }

    /// Sends `bytes` keyed by `saga_id` (on `partition` when given).
    pub async fn send_raw(
        &self,
        saga_id: Uuid,
        bytes: &[u8],
        headers: &[(&str, String)],
        partition: Option<i32>,
    ) -> Result<Sent, String> {
        let key = saga_id.hyphenated().to_string();
        self.wire
            .send(&key, bytes, headers, partition)
            .await
            .map_err(|e| format!("{e:#}"))
    }

    /// The next reply in `command`'s saga, read as the answer to `command`.
    pub async fn reply(&self, command: &Command) -> Result<Answer, String> {
        let asked = &command.asked;
        let reply = self
            .wire
            .next_reply(asked.saga_id, self.timeout)
            .await
            .ok_or_else(|| {
                format!(
                    "no reply within {:?} to {} attempt {}",
                    self.timeout, asked.phase, asked.attempt
                )
            })?;
        judge::read_answer(asked, &reply).map_err(|e| format!("{} reply: {e}", asked.phase))
    }

    /// Sends `command`, takes its reply and checks it says `expect`.
    pub async fn ask(&self, command: &Command, expect: Expect) -> Result<Answer, String> {
        self.send(command).await?;
        let answer = self.reply(command).await?;
        judge::expect(&answer, expect).map_err(|e| {
            let asked = &command.asked;
            format!("{} attempt {}: {e}", asked.phase, asked.attempt)
        })?;
        Ok(answer)
    }

    /// The business state now (`None` without `--check-sql`).
    pub async fn state(&self) -> Result<Option<String>, String> {
        match self.effects {
            Some(effects) => effects.read().await.map(Some),
            None => Ok(None),
        }
    }

    /// Checks that the state changed (or not) since `before`, after `what`.
    pub async fn expect_state(
        &self,
        before: &Option<String>,
        wanted: Change,
        what: &str,
    ) -> Result<Option<String>, String> {
        let after = self.state().await?;
        effects::check(before, &after, wanted, what)?;
        Ok(after)
    }
}
