//! Which partitions a consumer holds, kept up to date by the group's rebalances.
//!
//! On a revoke the consumer commits the offsets its lanes stored, then lets go; the
//! partitions are noted as revoked, so that the dispatcher forgets the messages it held
//! back for them and its pauses of them, and lanes drop their queued messages (their next
//! owner reads them from the committed offset; the inbox makes a second delivery harmless).
//! On an assign the partitions are taken into the set and resumed: the client keeps a
//! partition paused across a revoke and a later assign, so a partition paused under an
//! earlier assignment would otherwise never be fetched again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, TopicPartitionList};
use tracing::{debug, info, warn};

/// The partitions held now. Clones share one set.
#[derive(Debug, Clone, Default)]
pub struct Assignment {
    held: Arc<Mutex<HashSet<(String, i32)>>>,
    revoked: Arc<Mutex<Vec<(String, i32)>>>,
    name: Arc<str>,
}

impl Assignment {
    /// An empty assignment for the consumer called `name` (used in logs).
    pub fn new(name: &str) -> Self {
        Assignment {
            held: Arc::default(),
            revoked: Arc::default(),
            name: name.into(),
        }
    }

    /// The partitions revoked since the last call (each `(topic, partition)`).
    pub fn take_revoked(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether partition `partition` of `topic` is held.
    pub fn holds(&self, topic: &str, partition: i32) -> bool {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.contains(&(topic.to_string(), partition))
    }

    /// How many partitions are held.
    pub fn count(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn update(&self, list: &TopicPartitionList, add: bool) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for element in list.elements() {
            let key = (element.topic().to_string(), element.partition());
            if add {
                held.insert(key);
            } else {
                held.remove(&key);
            }
        }
    }
}

impl ClientContext for Assignment {}

impl ConsumerContext for Assignment {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            // Lanes stop taking this partition's queued messages from here on.
            self.update(list, false);
            let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
            revoked.extend(
                list.elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition())),
            );
            drop(revoked);
            // Offsets of finished messages go to the group before the partitions do.
            if let Err(error) = consumer.commit_consumer_state(CommitMode::Sync) {
                debug!(consumer = %self.name, %error, "nothing committed on revoke");
            }
            info!(consumer = %self.name, partitions = list.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            self.update(list, true);
            // A pause from an earlier assignment outlives the revoke at the client.
            if let Err(error) = consumer.resume(list) {
                warn!(consumer = %self.name, %error, "cannot resume assigned partitions");
            }
            info!(consumer = %self.name, partitions = list.count(), "partitions assigned");
        }
    }
}
