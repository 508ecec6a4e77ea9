//! The traffic: triggers published open loop on their schedule, and the engine's lifecycle
//! topic followed to see each saga end.
//!
//! A saga's latency runs from the moment its trigger was *due* (the open-loop schedule, so
//! a publisher that falls behind does not hide queueing) to the moment this process reads
//! its `finished` lifecycle event, on the same monotonic clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use saga_plumbing::kafka::{KafkaSettings, PRODUCE_LIMIT_BYTES};
use schemas::{Envelope, LifecycleEvent, MessageKind};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::latency::{Latencies, Quantiles};
use super::rate::Arrivals;
use crate::demo::Workload;

/// Whether a saga's latency counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// Warm-up and peak-search traffic: counted as published and ended, latency not kept.
    Unmeasured,
    /// The measured phase.
    Measured,
}

#[derive(Debug, Default)]
struct State {
    pending: HashMap<Uuid, (Instant, Tag)>,
    published: u64,
    ended: u64,
    latencies: Latencies,
}

/// What has been published and what has ended, shared by the publisher, the lifecycle
/// follower and the run.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    state: Arc<Mutex<State>>,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("tracker lock")
    }

    /// Triggers published and sagas seen ending, so far.
    pub fn counters(&self) -> (u64, u64) {
        let state = self.lock();
        (state.published, state.ended)
    }

    /// Latency quantiles over the whole measured phase.
    pub fn total(&self) -> Quantiles {
        self.lock().latencies.total()
    }

    /// Latency quantiles since the last call.
    pub fn take_window(&self) -> Quantiles {
        self.lock().latencies.take_window()
    }

    /// Measured sagas whose end was not seen (yet).
    pub fn unseen_measured(&self) -> usize {
        self.lock()
            .pending
            .values()
            .filter(|(_, tag)| *tag == Tag::Measured)
            .count()
    }

    fn published(&self, saga_id: Uuid, due: Instant, tag: Tag) {
        let mut state = self.lock();
        state.pending.insert(saga_id, (due, tag));
        state.published += 1;
    }

    /// A saga ended (finished, or parked when `finished` is false) at `at`; a repeated
    /// event for the same saga is ignored.
    fn ended(&self, saga_id: Uuid, at: Instant, finished: bool) {
        let mut state = self.lock();
        let Some((due, tag)) = state.pending.remove(&saga_id) else {
            return;
        };
        state.ended += 1;
        if finished && tag == Tag::Measured {
            state.latencies.record(at.saturating_duration_since(due));
        }
    }
}

/// Follows `topic` (the lifecycle topic) in consumer group `group` from its beginning
/// until `stop`, telling `tracker` of every saga that ends.
pub fn follow(
    kafka: &KafkaSettings,
    topic: &str,
    group: &str,
    tracker: Tracker,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let consumer: StreamConsumer = kafka.consumer(group, &[topic])?;
    Ok(tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => return,
                message = consumer.recv() => message,
            };
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "reading the lifecycle topic");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let at = Instant::now();
            if let Some((saga_id, finished)) = ending(message.payload()) {
                tracker.ended(saga_id, at, finished);
            }
        }
    }))
}

/// The saga a lifecycle message says has ended, and whether it finished (`true`) or was
/// parked (`false`); `None` for any other message. Read through [`Envelope::parse`], the
/// one place that checks envelopes and their lifecycle payloads.
fn ending(payload: Option<&[u8]>) -> Option<(Uuid, bool)> {
    let envelope = Envelope::parse(payload, MessageKind::Lifecycle, PRODUCE_LIMIT_BYTES).ok()?;
    let saga_id = envelope.saga_id?;
    match LifecycleEvent::deserialize(&envelope.payload).ok()? {
        LifecycleEvent::Finished { .. } => Some((saga_id, true)),
        LifecycleEvent::Parked { .. } => Some((saga_id, false)),
        _ => None,
    }
}

/// Publishes `batch`'s requests to `topic` as `arrivals` schedules them (request `i` due at
/// `arrivals.due_at(i)` after now), each tagged by `tag_of(due_at)`; `saga_id` maps a
/// request's order to its saga. Returns how many were published once every send is
/// acknowledged.
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    batch: &Workload,
    arrivals: Arrivals,
    tag_of: impl Fn(Duration) -> Tag,
    saga_id: impl Fn(Uuid) -> Uuid,
    tracker: &Tracker,
) -> anyhow::Result<usize> {
    let count = arrivals.count().min(batch.requests.len());
    let start = Instant::now();
    let mut deliveries = Vec::with_capacity(count);
    let mut sent = 0;
    while sent < count {
        let due = arrivals.due_by(start.elapsed()).min(count);
        while sent < due {
            let body = &batch.requests[sent].body;
            let offset = arrivals.due_at(sent);
            tracker.published(saga_id(body.order_id), start + offset, tag_of(offset));
            let key = body.order_id.to_string();
            let payload = serde_json::to_vec(&Envelope::new(MessageKind::Trigger, body))?;
            let record = FutureRecord::to(topic).key(&key).payload(&payload);
            let delivery = producer
                .send_result(record)
                .map_err(|(error, _)| anyhow::anyhow!("enqueue trigger: {error}"))?;
            deliveries.push(delivery);
            sent += 1;
        }
        if sent < count {
            tokio::time::sleep_until(start + arrivals.due_at(sent)).await;
        }
    }
    for delivery in deliveries {
        delivery
            .await
            .context("producer dropped")?
            .map_err(|(error, _)| anyhow::anyhow!("publish trigger: {error}"))?;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_lifecycle_envelopes_of_ended_sagas_count() {
        let saga = Uuid::new_v4();
        let bytes = |kind: MessageKind, event: serde_json::Value| {
            serde_json::to_vec(&Envelope::new(kind, event).for_saga(saga)).unwrap()
        };
        let finished = serde_json::json!({
            "event": "finished", "definition": "checkout", "outcome": "completed"
        });
        let parked = serde_json::json!({
            "event": "parked", "definition": "checkout", "reason": "stuck"
        });
        let started = serde_json::json!({
            "event": "started", "definition": "checkout", "version": 1
        });
        let read = |payload: Vec<u8>| ending(Some(&payload));
        assert_eq!(
            read(bytes(MessageKind::Lifecycle, finished.clone())),
            Some((saga, true))
        );
        assert_eq!(
            read(bytes(MessageKind::Lifecycle, parked)),
            Some((saga, false))
        );
        assert_eq!(read(bytes(MessageKind::Lifecycle, started)), None);
        assert_eq!(read(bytes(MessageKind::Reply, finished)), None);
        // Parses as JSON, but breaks the contract's bounds: `Envelope::parse` refuses it.
        let out_of_bounds = serde_json::json!({
            "event": "finished", "definition": "Not A Name!", "outcome": "completed"
        });
        assert_eq!(read(bytes(MessageKind::Lifecycle, out_of_bounds)), None);
        assert_eq!(ending(None), None);
    }

    #[test]
    fn only_measured_finished_sagas_give_latencies_and_repeats_count_once() {
        let tracker = Tracker::default();
        let t0 = Instant::now();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        tracker.published(a, t0, Tag::Unmeasured);
        tracker.published(b, t0, Tag::Measured);
        tracker.published(c, t0, Tag::Measured);
        tracker.ended(a, t0 + Duration::from_millis(10), true);
        tracker.ended(b, t0 + Duration::from_millis(40), true);
        tracker.ended(b, t0 + Duration::from_millis(90), true);
        assert_eq!(tracker.counters(), (3, 2));
        let total = tracker.total();
        assert_eq!(total.count, 1);
        assert!(total.max >= Duration::from_millis(39) && total.max <= Duration::from_millis(41));
        assert_eq!(tracker.unseen_measured(), 1);
        tracker.ended(c, t0 + Duration::from_millis(5), false);
        assert_eq!(tracker.counters(), (3, 3));
        assert_eq!(tracker.total().count, 1, "a parked saga has no latency");
    }
}
