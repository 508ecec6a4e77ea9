//! The cases: each plays one situation of `schemas/PROTOCOL.md` on a saga of its own and
//! returns the first thing the participant got wrong. Cases that end with the step's
//! effect in place undo it, so the next case starts from the same business state (a
//! confirmed TCC step stays settled).

use std::time::Duration;

use schemas::Phase;

use super::effects::Change;
use super::judge::{self, Expect};
use super::profile::Shape;
use super::session::{Body, Session};
use super::wire::Returned;

/// How long the last case waits for replies nobody asked for.
const GRACE: Duration = Duration::from_secs(1);
/// A body that is not JSON.
const NOT_JSON: &[u8] = b"{\"kind\": \"command\", this is not JSON";

/// One situation the participant must handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// The forward phase, delivered once.
    FirstDelivery,
    /// The reply carries the command's `traceparent`.
    Traceparent,
    /// The same message delivered twice.
    SameCommandAgain,
    /// The same command as attempt 2.
    NextAttempt,
    /// The undo after a successful forward phase, and its duplicate.
    UndoAfterForward,
    /// The undo with no forward phase before it.
    UndoBeforeForward,
    /// The forward phase arriving after its undo.
    LateForward,
    /// The undo after a rejected forward phase.
    UndoAfterRejected,
    /// A forward phase past the saga's deadline.
    DeadlinePassed,
    /// An undo past the saga's deadline.
    UndoPastDeadline,
    /// TCC: confirm after a successful try, and its duplicate.
    Confirm,
    /// TCC: confirm before the try fails; its next attempt after the try succeeds.
    ConfirmBeforeTry,
    /// TCC: confirm after a rejected try.
    ConfirmAfterRejected,
    /// A body that is not JSON.
    PoisonNotJson,
    /// A command envelope without `attempt`.
    PoisonNoAttempt,
    /// A command whose body is outside the participant's contract.
    PoisonBody,
    /// A valid command on the partition right after poison.
    ServingAfterPoison,
    /// No saga got a reply the kit did not ask for.
    OneReplyEach,
}

impl Case {
    /// Every case, in the order they run (the last one looks back at all the others).
    pub const ALL: [Case; 18] = [
        Case::FirstDelivery,
        Case::Traceparent,
        Case::SameCommandAgain,
        Case::NextAttempt,
        Case::UndoAfterForward,
        Case::UndoBeforeForward,
        Case::LateForward,
        Case::UndoAfterRejected,
        Case::DeadlinePassed,
        Case::UndoPastDeadline,
        Case::Confirm,
        Case::ConfirmBeforeTry,
        Case::ConfirmAfterRejected,
        Case::PoisonNotJson,
        Case::PoisonNoAttempt,
        Case::PoisonBody,
        Case::ServingAfterPoison,
        Case::OneReplyEach,
    ];

    /// What the case shows, in a few words.
    pub fn name(self) -> &'static str {
        match self {
            Case::FirstDelivery => "first delivery: answered ok, fields copied, effect applied",
            Case::Traceparent => "traceparent copied to the reply",
            Case::SameCommandAgain => "same command again: stored reply, no second effect",
            Case::NextAttempt => {
                "next attempt: same answer under a new message id, no second effect"
            }
            Case::UndoAfterForward => "undo after the forward phase: effect undone once",
            Case::UndoBeforeForward => "undo before the forward phase: null compensation",
            Case::LateForward => "forward phase after its undo: rejected, no effect",
            Case::UndoAfterRejected => "undo after a rejected forward phase: null compensation",
            Case::DeadlinePassed => "forward phase past saga.deadline: rejected `deadline passed`",
            Case::UndoPastDeadline => "undo past saga.deadline: still runs",
            Case::Confirm => "confirm after try: settled once",
            Case::ConfirmBeforeTry => "confirm before try: failed, then its next attempt succeeds",
            Case::ConfirmAfterRejected => "confirm after a rejected try: rejected",
            Case::PoisonNotJson => "poison, not JSON: dead-lettered with dlq.* headers",
            Case::PoisonNoAttempt => "poison, command without attempt: dead-lettered",
            Case::PoisonBody => "poison, body outside the contract: dead-lettered or rejected",
            Case::ServingAfterPoison => "still serving the partition after poison",
            Case::OneReplyEach => "one reply per command, none for poison",
        }
    }

    /// Whether the case applies to a step of `shape`.
    pub fn applies_to(self, shape: Shape) -> bool {
        let tcc_only = matches!(
            self,
            Case::Confirm | Case::ConfirmBeforeTry | Case::ConfirmAfterRejected
        );
        shape == Shape::Tcc || !tcc_only
    }

    /// Plays the case; the error is the first thing that went wrong.
    pub async fn run(self, session: &Session<'_>) -> Result<(), String> {
        match self {
            Case::FirstDelivery => first_delivery(session).await,
            Case::Traceparent => traceparent(session).await,
            Case::SameCommandAgain => same_command_again(session).await,
            Case::NextAttempt => next_attempt(session).await,
            Case::UndoAfterForward => undo_after_forward(session).await,
            Case::UndoBeforeForward => undo_before_forward(session).await,
            Case::LateForward => late_forward(session).await,
            Case::UndoAfterRejected => undo_after_rejected(session).await,
            Case::DeadlinePassed => deadline_passed(session).await,
            Case::UndoPastDeadline => undo_past_deadline(session).await,
            Case::Confirm => confirm(session).await,
            Case::ConfirmBeforeTry => confirm_before_try(session).await,
            Case::ConfirmAfterRejected => confirm_after_rejected(session).await,
            Case::PoisonNotJson => poison_not_json(session).await,
            Case::PoisonNoAttempt => poison_no_attempt(session).await,
            Case::PoisonBody => poison_body(session).await,
            Case::ServingAfterPoison => serving_after_poison(session).await,
            Case::OneReplyEach => one_reply_each(session).await,
        }
    }
}

/// Undoes the forward phase a case left in place; the state must be `baseline` again.
async fn undo_to(
    session: &Session<'_>,
    saga_id: uuid::Uuid,
    baseline: &Option<String>,
) -> Result<(), String> {
    let undo = session.undo(saga_id);
    session.ask(&undo, Expect::Ok).await?;
    session
        .expect_state(baseline, Change::None, "the forward phase and its undo")
        .await?;
    Ok(())
}

async fn first_delivery(session: &Session<'_>) -> Result<(), String> {
    let saga = session.new_saga();
    let before = session.state().await?;
    session
        .ask(&session.forward(saga, Body::Accepted), Expect::Ok)
        .await?;
    session
        .expect_state(&before, Change::Some, "the forward phase")
        .await?;
    undo_to(session, saga, &before).await
}

async fn traceparent(session: &Session<'_>) -> Result<(), String> {
    let saga = session.new_saga();
    let before = session.state().await?;
    let forward = session.forward(saga, Body::Accepted);
    let answer = session.ask(&forward, Expect::Ok).await?;
    if answer.traceparent.as_deref() != Some(forward.traceparent.as_str()) {
        return Err(format!(
            "the reply's traceparent is {:?}, the command's was {:?}",
            answer.traceparent, forward.traceparent
        ));
    }
    undo_to(session, saga, &before).await
}

async fn same_command_again(session: &Session<'_>) -> Result<(), String> {
    let saga = session.new_saga();
    let before = session.state().await?;
    let forward = session.forward(saga, Body::Accepted);
    let first = session.ask(&forward, Expect::Ok).await?;
    let applied = session.state().await?;
    let again = session.ask(&forward, Expect::Ok).await?;
    judge::same_answer(&first, &again)?;
    if again.message_id != first.message_id {
        return Err(format!(
            "the reply to the same attempt got a new message_id ({} after {}): the engine \
             would apply it twice",
            again.message_id, first.message_id
        ));
    }
    session
        .expect_state(&applied, Change::None, "the duplicate forward phase")
        .await?;
    undo_to(session, saga, &before).await
}

async fn next_attempt(session: &Session<'_>) -> Result<(), String> {
    let saga = session.new_saga();
    let before = session.state().await?;
    let forward = session.forward(saga, Body::Accepted);
    let first = session.ask(&forward, Expect::Ok).await?;
    let applied = session.state().await?;
    let again = session.ask(&forward.next_attempt(), Expect::Ok).await?;
    judge::same_answer(&first, &again)?;
    if again.message_id == first.message_id {
        return Err(format!(
            "attempts 1 and 2 were answered with one message_id ({}): the engine would drop \
             the second as a duplicate",
            first.message_id
        ));
    }
    session
        .expect_state(&applied, Change::None, "the forward phase's second attempt")
        .await?;
    undo_to(session, saga, &before).await
}

async fn undo_after_forward(session: &Session<'_>) -> Result<(), String> {
    let saga = session.new_saga();
    let before = session.state().await?;
    session
        .ask(&session.forward(saga, Body::Accepted), Expect::Ok)
        .await?;
    let undo = session.undo(saga);
    let first = session.ask(&undo, Expect::Ok).await?;
    session
        .expect_state(&before, Change::None, "the forward phase and its undo")
        .await?;
    let again = session.ask(&undo, Expect::Ok).await?;
    judge::same_answer(&first, &again)?;
    session
        .expect_state(&before, Change::None, "the duplicate undo")
        .await?;
    Ok(())
}

async fn undo_before_forward(session: &Session<'_>) -> Result<(), String> {
    let saga = session.new_saga();
    let before = session.state().await?;
    session
        .ask(&session.undo(saga), Expect::NullCompensation)
        .await?;
    session
        .expect_state(&before, Change::None, "the undo with nothing to undo")
        .await?;
    Ok(())
}

async fn late_forward(session: &Session<'_>) -> Result<(), String> {
    let saga = session.new_saga();
    let before = session.state().await?;
    session
        .ask(&session.undo(saga), Expect::NullCompensation)
        .await?;
    session
        .ask(&session.forward(saga, Body::Accepted), Expect::Rejected)
        .await?;
    session
        .expect_state(&before, Change::None, "the forward phase after its undo")
        .await?;
    Ok(())
}

async fn undo_after_rejected(session: &Session<'_>) -> Result<(), String> {
    let saga = session.new_saga();
    let before = session.state().await?;
    session
        .ask(&session.forward(saga, Body::Rejected), Expect::Rejected)
        .await?;
    session
        .expect_state(&before, Change::None, "the rejected forward phase")
        .await?;
    session
        .ask(&session.undo(saga), Expect::NullCompensation)
        .await?;
    session
        .expect_state(
            &before,
            Change::None,
            "the undo of a rejected forward phase",
        )
        .await?;
    Ok(())
}

fn past() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() - chrono::Duration::minutes(5)
}

async fn deadline_passed(session: &Session<'_>) -> Result<(), String> {
    let saga = session.new_saga();
    let before = session.state().await?;
    let mut forward = session.forward(saga, Body::Accepted);
    forward.deadline = Some(past());
    session
        .ask(&forward, Expect::RejectedBecause("deadline passed"))
        .await?;
    session
        .expect_state(&before, Change::None, "the forward phase past the deadline")
        .await?;
    let mut undo = session.undo(saga);
    undo.deadline = forward.deadline;
    session.ask(&undo, Expect::NullCompensation).await?;
    Ok(())
}

async fn undo_past_deadline(session: &Session<'_>) -> Result<(), String> {
    let saga = session.new_saga();
    let before = session.state().await?;
    session
        .ask(&session.forward(saga, Body::Accepted), Expect::Ok)
        .await?;
    let mut undo = session.undo(saga);
    undo.deadline = Some(past());
    session.ask(&undo, Expect::Ok).await?;
    session
        .expect_state(&before, Change::None, "the undo past the deadline")
        .await?;
    Ok(())
}

async fn confirm(session: &Session<'_>) -> Result<(), String> {
    let saga = session.new_saga();
    session
        .ask(&session.forward(saga, Body::Accepted), Expect::Ok)
        .await?;
    let tried = session.state().await?;
    let confirm = session.command(saga, Phase::Confirm, Body::Accepted);
    let first = session.ask(&confirm, Expect::Ok).await?;
    let settled = session
        .expect_state(&tried, Change::Some, "the confirm")
        .await?;
    let again = session.ask(&confirm, Expect::Ok).await?;
    judge::same_answer(&first, &again)?;
    session
        .expect_state(&settled, Change::None, "the duplicate confirm")
        .await?;
    Ok(())
}

async fn confirm_before_try(session: &Session<'_>) -> Result<(), String> {
    let saga = session.new_saga();
    let before = session.state().await?;
    let confirm = session.command(saga, Phase::Confirm, Body::Accepted);
    session.ask(&confirm, Expect::Failed).await?;
    session
        .expect_state(&before, Change::None, "the confirm before its try")
        .await?;
    session
        .ask(&session.forward(saga, Body::Accepted), Expect::Ok)
        .await?;
    session.ask(&confirm.next_attempt(), Expect::Ok).await?;
    Ok(())
}

async fn confirm_after_rejected(session: &Session<'_>) -> Result<(), String> {
    let saga = session.new_saga();
    let before = session.state().await?;
    session
        .ask(&session.forward(saga, Body::Rejected), Expect::Rejected)
        .await?;
    let confirm = session.command(saga, Phase::Confirm, Body::Rejected);
    session.ask(&confirm, Expect::Rejected).await?;
    session
        .expect_state(&before, Change::None, "the confirm of a rejected try")
        .await?;
    Ok(())
}

/// Sends `bytes` as a command of a new saga and checks it comes back as a dead letter.
async fn expect_dead_letter(
    session: &Session<'_>,
    bytes: &[u8],
) -> Result<super::wire::Sent, String> {
    let saga = session.new_saga();
    let sent = session.send_raw(saga, bytes, &[], None).await?;
    let key = saga.hyphenated().to_string();
    // Found by where the command was stored; else by its key, to say what is wrong with it.
    let letter = match session.wire.dead_letter(sent, session.timeout).await {
        Some(letter) => letter,
        None => session
            .wire
            .dead_letter_keyed(&key)
            .ok_or_else(|| format!("no dead letter within {:?}", session.timeout))?,
    };
    judge::dead_letter(&letter, sent, session.wire.commands_topic(), &key, bytes)?;
    Ok(sent)
}

async fn poison_not_json(session: &Session<'_>) -> Result<(), String> {
    expect_dead_letter(session, NOT_JSON).await.map(drop)
}

async fn poison_no_attempt(session: &Session<'_>) -> Result<(), String> {
    let saga = session.new_saga();
    let mut envelope = session.forward(saga, Body::Accepted).envelope();
    if let Some(fields) = envelope.as_object_mut() {
        fields.remove("attempt");
    }
    expect_dead_letter(
        session,
        &serde_json::to_vec(&envelope).expect("an envelope is JSON"),
    )
    .await
    .map(drop)
}

async fn poison_body(session: &Session<'_>) -> Result<(), String> {
    let saga = session.new_saga();
    let before = session.state().await?;
    let forward = session.forward(saga, Body::Invalid);
    let sent = session.send(&forward).await?;
    let returned = session
        .wire
        .reply_or_dead_letter(saga, sent, session.timeout)
        .await
        .ok_or_else(|| {
            format!(
                "neither a reply nor a dead letter within {:?}",
                session.timeout
            )
        })?;
    match returned {
        Returned::DeadLetter(letter) => {
            let key = saga.hyphenated().to_string();
            let topic = session.wire.commands_topic();
            judge::dead_letter(&letter, sent, topic, &key, &forward.bytes())?;
        }
        Returned::Reply(reply) => {
            let answer = judge::read_answer(&forward.asked, &reply)?;
            judge::expect(&answer, Expect::Rejected)?;
        }
    }
    session
        .expect_state(&before, Change::None, "the command with an invalid body")
        .await?;
    Ok(())
}

async fn serving_after_poison(session: &Session<'_>) -> Result<(), String> {
    let sent = expect_dead_letter(session, NOT_JSON).await?;
    let saga = session.new_saga();
    let before = session.state().await?;
    let forward = session.forward(saga, Body::Accepted);
    session
        .send_raw(
            saga,
            &forward.bytes(),
            &forward.headers(),
            Some(sent.partition),
        )
        .await?;
    let answer = session.reply(&forward).await?;
    judge::expect(&answer, Expect::Ok)?;
    undo_to(session, saga, &before).await
}

async fn one_reply_each(session: &Session<'_>) -> Result<(), String> {
    tokio::time::sleep(GRACE).await;
    for saga in session.sagas() {
        if let Some(extra) = session.wire.untaken_replies(saga).first() {
            return Err(format!(
                "saga {saga} got a reply no command asked for: {}",
                String::from_utf8_lossy(&extra.payload)
            ));
        }
    }
    Ok(())
}
