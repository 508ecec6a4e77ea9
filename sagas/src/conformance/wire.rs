//! The kit's Kafka side: it sends commands on the participant's topic and reads what comes
//! back on the replies topic and the dead-letter queue, from the moment it started.
//!
//! The two topics are read without a consumer group (every partition assigned at its end
//! offset, read before the first command is sent), so no reply can slip past and nothing
//! the kit reads is committed anywhere.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use saga_plumbing::kafka::KafkaSettings;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

/// How long a metadata or offset request to the broker may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a waiting case looks for a new message.
const POLL: Duration = Duration::from_millis(5);

/// A message the kit read back (a reply or a dead letter).
#[derive(Debug, Clone)]
pub struct Received {
    /// Its Kafka key, as text.
    pub key: Option<String>,
    /// Its body.
    pub payload: Vec<u8>,
    /// Its headers whose values are text.
    pub headers: BTreeMap<String, String>,
}

impl Received {
    /// The header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The saga the message is about: the body's `saga_id`, else the key.
    fn saga(&self) -> Option<String> {
        serde_json::from_slice::<serde_json::Value>(&self.payload)
            .ok()
            .and_then(|body| body.get("saga_id")?.as_str().map(str::to_lowercase))
            .or_else(|| self.key.clone())
    }
}

/// Where the broker stored a message the kit sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Partition of the participant's command topic.
    pub partition: i32,
    /// Offset within it.
    pub offset: i64,
}

/// What a participant made of a command it may refuse either way.
#[derive(Debug, Clone)]
pub enum Returned {
    /// It answered.
    Reply(Received),
    /// It dead-lettered the command.
    DeadLetter(Received),
}

#[derive(Debug, Default)]
struct Mailbox {
    /// Replies in arrival order, each with whether a case has taken it.
    replies: Vec<(Received, bool)>,
    dead_letters: Vec<Received>,
}

/// The kit's connection to the broker.
pub struct Wire {
    producer: FutureProducer,
    commands: String,
    mailbox: Arc<Mutex<Mailbox>>,
    reader: JoinHandle<()>,
}

impl Wire {
    /// Creates the three topics if they are missing, starts reading `replies` and `dlq`
    /// from their current ends, and returns once the reader is in place.
    pub async fn open(
        kafka: &KafkaSettings,
        commands: &str,
        replies: &str,
        dlq: &str,
        partitions: i32,
    ) -> anyhow::Result<Wire> {
        kafka
            .ensure_topics(&[commands, replies, dlq], partitions)
            .await?;
        let consumer: StreamConsumer = kafka
            .consumer_config(&format!("conformance-{}", Uuid::new_v4().simple()))
            .set("enable.auto.commit", "false")
            .create()
            .context("creating the kit's consumer")?;
        let ends = tokio::task::spawn_blocking({
            let kafka = kafka.clone();
            let topics = [replies.to_string(), dlq.to_string()];
            move || end_offsets(&kafka, &topics)
        })
        .await??;
        consumer
            .assign(&ends)
            .context("assigning the replies and dead-letter partitions")?;
        let mailbox = Arc::new(Mutex::new(Mailbox::default()));
        let reader = tokio::spawn(read(consumer, replies.to_string(), mailbox.clone()));
        Ok(Wire {
            producer: kafka.producer()?,
            commands: commands.to_string(),
            mailbox,
            reader,
        })
    }

    /// The participant's command topic.
    pub fn commands_topic(&self) -> &str {
        &self.commands
    }

    /// Sends `payload` keyed by `key` on the command topic (on `partition` when given) and
    /// waits for the broker to take it.
    pub async fn send(
        &self,
        key: &str,
        payload: &[u8],
        headers: &[(&str, String)],
        partition: Option<i32>,
    ) -> anyhow::Result<Sent> {
        let mut owned = OwnedHeaders::new();
        for (name, value) in headers {
            owned = owned.insert(Header {
                key: name,
                value: Some(value.as_str()),
            });
        }
        let mut record = FutureRecord::to(&self.commands)
            .key(key)
            .payload(payload)
            .headers(owned);
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        let delivery = self
            .producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(error, _)| error)
            .with_context(|| format!("sending a command on {}", self.commands))?;
        Ok(Sent {
            partition: delivery.partition,
            offset: delivery.offset,
        })
    }

    /// The next reply about `saga_id` no case has taken yet, waiting up to `timeout`.
    pub async fn next_reply(&self, saga_id: Uuid, timeout: Duration) -> Option<Received> {
        let saga = saga_id.hyphenated().to_string();
        self.wait(timeout, |mailbox| {
            let (reply, taken) = mailbox
                .replies
                .iter_mut()
                .find(|(reply, taken)| !taken && reply.saga().as_deref() == Some(&saga))?;
            *taken = true;
            Some(reply.clone())
        })
        .await
    }

    /// The dead letter of the command stored at `sent` on the command topic, waiting up to
    /// `timeout`.
    pub async fn dead_letter(&self, sent: Sent, timeout: Duration) -> Option<Received> {
        let (partition, offset) = (sent.partition.to_string(), sent.offset.to_string());
        self.wait(timeout, |mailbox| {
            mailbox
                .dead_letters
                .iter()
                .find(|letter| {
                    letter.header(schemas::headers::DLQ_SOURCE_TOPIC) == Some(&self.commands)
                        && letter.header(schemas::headers::DLQ_SOURCE_PARTITION) == Some(&partition)
                        && letter.header(schemas::headers::DLQ_SOURCE_OFFSET) == Some(&offset)
                })
                .cloned()
        })
        .await
    }

    /// A dead letter keyed `key`, whatever its headers say (read so far).
    pub fn dead_letter_keyed(&self, key: &str) -> Option<Received> {
        let mailbox = self.mailbox.lock().expect("mailbox lock");
        mailbox
            .dead_letters
            .iter()
            .find(|letter| letter.key.as_deref() == Some(key))
            .cloned()
    }

    /// Whichever comes first: the next untaken reply about `saga_id`, or the dead letter of
    /// the command stored at `sent`; waits up to `timeout`.
    pub async fn reply_or_dead_letter(
        &self,
        saga_id: Uuid,
        sent: Sent,
        timeout: Duration,
    ) -> Option<Returned> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(letter) = self.dead_letter(sent, Duration::ZERO).await {
                return Some(Returned::DeadLetter(letter));
            }
            if let Some(reply) = self.next_reply(saga_id, Duration::ZERO).await {
                return Some(Returned::Reply(reply));
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// How many replies (about any saga) the kit has read so far.
    pub fn replies_read(&self) -> usize {
        self.mailbox.lock().expect("mailbox lock").replies.len()
    }

    /// Replies about `saga_id` that no case has taken.
    pub fn untaken_replies(&self, saga_id: Uuid) -> Vec<Received> {
        let saga = saga_id.hyphenated().to_string();
        let mailbox = self.mailbox.lock().expect("mailbox lock");
        mailbox
            .replies
            .iter()
            .filter(|(reply, taken)| !taken && reply.saga().as_deref() == Some(&saga))
            .map(|(reply, _)| reply.clone())
            .collect()
    }

    async fn wait<T>(
        &self,
        timeout: Duration,
        mut find: impl FnMut(&mut Mailbox) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = find(&mut self.mailbox.lock().expect("mailbox lock")) {
                return Some(found);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Every partition of `topics` at its current end offset. Blocking.
fn end_offsets(kafka: &KafkaSettings, topics: &[String]) -> anyhow::Result<TopicPartitionList> {
    let probe: rdkafka::consumer::BaseConsumer = kafka
        .consumer_config("conformance-probe")
        .create()
        .context("creating a consumer to read end offsets")?;
    let mut list = TopicPartitionList::new();
    for topic in topics {
        let metadata = probe
            .fetch_metadata(Some(topic), BROKER_TIMEOUT)
            .with_context(|| format!("reading the partitions of {topic}"))?;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        anyhow::ensure!(partitions > 0, "topic {topic} has no partitions");
        for partition in 0..partitions as i32 {
            let (_, end) = probe
                .fetch_watermarks(topic, partition, BROKER_TIMEOUT)
                .with_context(|| format!("reading the end of {topic}/{partition}"))?;
            list.add_partition_offset(topic, partition, Offset::Offset(end))?;
        }
    }
    Ok(list)
}

/// Files every message of the assigned partitions in `mailbox`, until aborted.
async fn read(consumer: StreamConsumer, replies: String, mailbox: Arc<Mutex<Mailbox>>) {
    loop {
        let message = match consumer.recv().await {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "conformance kit: reading replies failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .filter_map(|h| {
                        let value = std::str::from_utf8(h.value?).ok()?;
                        Some((h.key.to_string(), value.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let received = Received {
            key: message
                .key()
                .map(|key| String::from_utf8_lossy(key).into_owned()),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
        };
        let mut mailbox = mailbox.lock().expect("mailbox lock");
        if message.topic() == replies {
            mailbox.replies.push((received, false));
        } else {
            mailbox.dead_letters.push(received);
        }
    }
}
