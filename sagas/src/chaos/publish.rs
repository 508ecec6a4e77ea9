//! Publishing the run's triggers and poison messages at their scheduled moments, through
//! broker restarts: a message is sent again until the broker acknowledges it (a trigger
//! sent twice is exactly what the run checks anyway).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientContext;
use saga_plumbing::kafka::KafkaSettings;
use schemas::checkout::CheckoutRequested;
use schemas::{headers, Envelope, MessageKind};
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

use super::schedule::{Poison, Publish, Timed};
use crate::demo::Workload;

/// The key of poison message `number`; dead letters are recognised by it.
pub fn poison_key(number: usize) -> String {
    format!("poison-{number}")
}

/// The definition named by the unknown-definition poison messages.
pub const UNKNOWN_DEFINITION: &str = "chaos-no-such-definition";

/// One message as it goes to the trigger topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Kafka key.
    pub key: String,
    /// Bytes of the value.
    pub payload: Vec<u8>,
    /// Kafka headers.
    pub headers: Vec<(&'static str, String)>,
}

/// The message `publish` stands for.
pub fn message(publish: &Publish, workload: &Workload) -> anyhow::Result<Outgoing> {
    Ok(match *publish {
        Publish::Trigger { request } => {
            let body = &workload.requests[request].body;
            Outgoing {
                key: body.order_id.to_string(),
                payload: serde_json::to_vec(&Envelope::new(MessageKind::Trigger, body))?,
                headers: vec![],
            }
        }
        Publish::Poison { kind, number } => {
            // A body that would start a saga if the engine accepted it (one saga too many
            // fails the run's invariants).
            let body = CheckoutRequested {
                order_id: Uuid::from_u128(
                    0x9015_0000_0000_0000_0000_0000_0000_0000 + number as u128,
                ),
                user_id: 1,
                amount_cents: 100,
                points: 0,
                coupon_code: format!("POISON-{number}"),
            };
            let key = poison_key(number);
            match kind {
                Poison::BadJson => Outgoing {
                    key,
                    payload: br#"{"kind": "trigger", "payload": {"order_id": "#.to_vec(),
                    headers: vec![],
                },
                Poison::WrongKind => Outgoing {
                    key,
                    payload: serde_json::to_vec(&Envelope::new(MessageKind::Reply, &body))?,
                    headers: vec![],
                },
                Poison::UnknownDefinition => Outgoing {
                    key,
                    payload: serde_json::to_vec(&Envelope::new(MessageKind::Trigger, &body))?,
                    headers: vec![(headers::DEFINITION, UNKNOWN_DEFINITION.to_string())],
                },
            }
        }
    })
}

/// The harness's producer context: the broker goes away on purpose, so the client's
/// connection errors are expected and not logged (a send that fails is sent again).
#[derive(Clone, Copy)]
struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, _: RDKafkaLogLevel, _: &str, _: &str) {}
    fn error(&self, _: KafkaError, _: &str) {}
}

fn producer(kafka: &KafkaSettings) -> anyhow::Result<FutureProducer<Quiet>> {
    Ok(kafka.producer_config().create_with_context(Quiet)?)
}

/// A producer that is replaced when it reached a fatal state (an idempotent producer can,
/// when a restarted broker forgot its producer id).
struct Sender {
    kafka: KafkaSettings,
    producer: RwLock<(u64, FutureProducer<Quiet>)>,
}

impl Sender {
    fn current(&self) -> (u64, FutureProducer<Quiet>) {
        self.producer.read().expect("producer lock").clone()
    }

    /// Replaces generation `seen` if it is still the current one and has failed fatally.
    fn renew_if_fatal(&self, seen: u64) {
        let mut slot = self.producer.write().expect("producer lock");
        if slot.0 == seen && slot.1.client().fatal_error().is_some() {
            if let Ok(fresh) = producer(&self.kafka) {
                *slot = (seen + 1, fresh);
            }
        }
    }

    /// Sends `message` until the broker acknowledges it or `give_up_at` passes.
    async fn deliver(
        &self,
        topic: &str,
        message: &Outgoing,
        give_up_at: Instant,
    ) -> Result<(), String> {
        loop {
            let (generation, producer) = self.current();
            let mut kafka_headers = OwnedHeaders::new();
            for (key, value) in &message.headers {
                kafka_headers = kafka_headers.insert(Header {
                    key,
                    value: Some(value.as_str()),
                });
            }
            let record = FutureRecord::to(topic)
                .key(&message.key)
                .payload(&message.payload)
                .headers(kafka_headers);
            let error = match producer.send(record, Duration::from_secs(5)).await {
                Ok(_) => return Ok(()),
                Err((error, _)) => error,
            };
            if Instant::now() >= give_up_at {
                return Err(format!(
                    "message {} never acknowledged: {error}",
                    message.key
                ));
            }
            self.renew_if_fatal(generation);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// How the publishing went.
#[derive(Debug, Default)]
pub struct Published {
    /// Messages the broker acknowledged.
    pub acknowledged: usize,
    /// Messages given up on, with why.
    pub failures: Vec<String>,
}

/// Publishes each of `publishes` to `topic` at `start + at`; returns once every message
/// is acknowledged or given up on (`give_up_after` past its moment).
pub async fn run(
    kafka: &KafkaSettings,
    topic: &str,
    workload: &Workload,
    publishes: &[Timed<Publish>],
    start: Instant,
    give_up_after: Duration,
) -> anyhow::Result<Published> {
    let sender = Arc::new(Sender {
        kafka: kafka.clone(),
        producer: RwLock::new((0, producer(kafka)?)),
    });
    let topic: Arc<str> = topic.into();
    let mut sends = JoinSet::new();
    for publish in publishes {
        let message = message(&publish.what, workload)?;
        tokio::time::sleep_until(start + publish.at).await;
        let (sender, topic) = (sender.clone(), topic.clone());
        let give_up_at = Instant::now() + give_up_after;
        sends.spawn(async move { sender.deliver(&topic, &message, give_up_at).await });
    }
    let mut published = Published::default();
    while let Some(result) = sends.join_next().await {
        match result? {
            Ok(()) => published.acknowledged += 1,
            Err(error) => published.failures.push(error),
        }
    }
    Ok(published)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::generate;

    #[test]
    fn poison_messages_are_what_their_kind_says_and_triggers_are_envelopes() {
        let workload = generate(3, 1);
        let trigger = message(&Publish::Trigger { request: 2 }, &workload).unwrap();
        assert_eq!(trigger.key, workload.requests[2].body.order_id.to_string());
        let parsed = Envelope::parse(Some(&trigger.payload), MessageKind::Trigger, 1 << 20);
        assert!(parsed.is_ok(), "{parsed:?}");

        let poison = |kind| message(&Publish::Poison { kind, number: 4 }, &workload).unwrap();
        let bad = poison(Poison::BadJson);
        assert_eq!(bad.key, "poison-4");
        assert!(serde_json::from_slice::<serde_json::Value>(&bad.payload).is_err());
        let wrong = poison(Poison::WrongKind);
        assert!(Envelope::parse(Some(&wrong.payload), MessageKind::Trigger, 1 << 20).is_err());
        let unknown = poison(Poison::UnknownDefinition);
        assert!(Envelope::parse(Some(&unknown.payload), MessageKind::Trigger, 1 << 20).is_ok());
        assert_eq!(
            unknown.headers,
            vec![(headers::DEFINITION, UNKNOWN_DEFINITION.to_string())]
        );
    }
}
