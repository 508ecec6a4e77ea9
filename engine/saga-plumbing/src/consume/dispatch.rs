//! Spreading consumed messages over lanes with bounded queues. When a lane's queue is
//! full, its partitions are paused at the broker and the messages already received wait
//! in the lane's overflow; once the lane has room again the overflow drains in order and
//! the partitions resume. A slow partition so holds up its own lane only, never the
//! consumer.

use std::collections::VecDeque;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, TopicPartitionList};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{OwnedPermit, Sender};
use tracing::{debug, warn};

use super::assignment::Assignment;

/// One lane: its queue, the messages waiting for room in it, and the partitions paused
/// because of it.
struct Lane {
    queue: Sender<OwnedMessage>,
    overflow: VecDeque<OwnedMessage>,
    paused: Vec<(String, i32)>,
}

/// The lanes of one consumer.
pub(super) struct Dispatcher {
    lanes: Vec<Lane>,
}

/// Whether the lanes still take messages.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Dispatched {
    /// Queued, or held in an overflow.
    Taken,
    /// The lane is gone (the consumer is stopping).
    Closed,
}

impl Dispatcher {
    /// Lanes fed through `queues`.
    pub(super) fn new(queues: Vec<Sender<OwnedMessage>>) -> Self {
        let lanes = queues
            .into_iter()
            .map(|queue| Lane {
                queue,
                overflow: VecDeque::new(),
                paused: Vec::new(),
            })
            .collect();
        Dispatcher { lanes }
    }

    fn lane_of(&self, partition: i32) -> usize {
        partition.unsigned_abs() as usize % self.lanes.len()
    }

    /// Queues `message` on its partition's lane, or holds it and pauses the partition
    /// when the lane is full (or already holds messages, which must go first).
    pub(super) fn dispatch(
        &mut self,
        message: OwnedMessage,
        consumer: &StreamConsumer<Assignment>,
    ) -> Dispatched {
        let index = self.lane_of(message.partition());
        let lane = &mut self.lanes[index];
        let message = if lane.overflow.is_empty() {
            match lane.queue.try_send(message) {
                Ok(()) => return Dispatched::Taken,
                Err(TrySendError::Closed(_)) => return Dispatched::Closed,
                Err(TrySendError::Full(message)) => message,
            }
        } else {
            message
        };
        let key = (message.topic().to_string(), message.partition());
        if !lane.paused.contains(&key) {
            let mut list = TopicPartitionList::new();
            list.add_partition(&key.0, key.1);
            match consumer.pause(&list) {
                Ok(()) => debug!(topic = %key.0, partition = key.1, "lane full; partition paused"),
                Err(error) => warn!(topic = %key.0, partition = key.1, %error, "pause failed"),
            }
            lane.paused.push(key);
        }
        lane.overflow.push_back(message);
        Dispatched::Taken
    }

    /// The lanes that hold messages waiting for room.
    pub(super) fn waiting(&self) -> Vec<(usize, Sender<OwnedMessage>)> {
        self.lanes
            .iter()
            .enumerate()
            .filter(|(_, lane)| !lane.overflow.is_empty())
            .map(|(index, lane)| (index, lane.queue.clone()))
            .collect()
    }

    /// Moves the oldest held message of lane `index` into the room `permit` reserved; when
    /// the overflow is empty, resumes the lane's partitions that are still assigned.
    pub(super) fn refill(
        &mut self,
        index: usize,
        permit: OwnedPermit<OwnedMessage>,
        consumer: &StreamConsumer<Assignment>,
    ) {
        let lane = &mut self.lanes[index];
        if let Some(message) = lane.overflow.pop_front() {
            permit.send(message);
        }
        if lane.overflow.is_empty() && !lane.paused.is_empty() {
            let held = consumer.context();
            let mut list = TopicPartitionList::new();
            for (topic, partition) in lane.paused.drain(..) {
                if held.holds(&topic, partition) {
                    list.add_partition(&topic, partition);
                }
            }
            if list.count() > 0 {
                if let Err(error) = consumer.resume(&list) {
                    warn!(%error, "resume failed");
                }
            }
        }
    }

    /// Forgets the messages held back for `revoked` partitions and their pauses (their
    /// next owner, perhaps this consumer again, reads them from the committed offset).
    pub(super) fn forget(&mut self, revoked: &[(String, i32)]) {
        let gone = |topic: &str, partition: i32| {
            revoked
                .iter()
                .any(|(t, p)| t.as_str() == topic && *p == partition)
        };
        for lane in &mut self.lanes {
            lane.overflow
                .retain(|message| !gone(message.topic(), message.partition()));
            lane.paused
                .retain(|(topic, partition)| !gone(topic, *partition));
        }
    }
}
