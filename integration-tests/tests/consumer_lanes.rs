//! The shared consumer loop: a slow partition holds up its own lane only, and a second
//! member joining the group takes partitions over without losing a message.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use integration_tests::{engine_database, eventually, fresh_topic, group_lag, kafka};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureRecord;
use rdkafka::Message;
use saga_plumbing::consume::{self, ConsumerSettings, HandleError, Handled, MessageHandler};
use saga_plumbing::dlq::{DeadLetterQueue, DeadLetters};
use saga_plumbing::health::Health;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Records what it handled; holds partition 0 while `gate` says closed.
struct Recorder {
    pool: PgPool,
    handled: Arc<Mutex<Vec<(i32, i64)>>>,
    gate: watch::Receiver<bool>,
}

impl MessageHandler for Recorder {
    fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn handle_in(
        &self,
        _: &mut PgConnection,
        message: &OwnedMessage,
    ) -> Result<Handled, HandleError> {
        self.handled
            .lock()
            .unwrap()
            .push((message.partition(), message.offset()));
        if message.partition() == 0 {
            let mut gate = self.gate.clone();
            let _ = gate.wait_for(|open| *open).await;
        }
        Ok(Handled::Done)
    }
}

async fn publish(topic: &str, partition: i32, count: usize) {
    let producer = kafka().await.producer().unwrap();
    for n in 0..count {
        let payload = format!("{n}");
        let record = FutureRecord::to(topic)
            .partition(partition)
            .key("k")
            .payload(&payload);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }
}

fn start(
    pool: &PgPool,
    group: &str,
    topic: &str,
    settings: ConsumerSettings,
    recorder: Recorder,
) -> (CancellationToken, Health, JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let health = Health::default();
    let (pool, group, topic) = (pool.clone(), group.to_string(), topic.to_string());
    let (stop, reported) = (shutdown.clone(), health.clone());
    let task = tokio::spawn(async move {
        let kafka = kafka().await;
        let dlq = DeadLetterQueue {
            producer: kafka.producer().unwrap(),
            topic: format!("{topic}.dlq"),
            counter: DeadLetters::default(),
            store: pool,
            publish_attempts: 1,
            publish_timeout: Duration::from_secs(5),
        };
        let input = consume::subscribe(&kafka, "lanes", &group, &[topic.as_str()]).unwrap();
        consume::run(
            "lanes",
            input,
            dlq,
            Arc::new(recorder),
            &settings,
            reported,
            stop,
        )
        .await
    });
    (shutdown, health, task)
}

/// Partitions the consumer of `health` held when it last looked.
fn held(health: &Health) -> usize {
    health
        .parts()
        .iter()
        .find_map(|part| part.partitions)
        .unwrap_or(0)
}

/// The (partition, offset) pairs either of two members handled.
fn handled_by_either(
    first: &Mutex<Vec<(i32, i64)>>,
    second: &Mutex<Vec<(i32, i64)>>,
) -> BTreeSet<(i32, i64)> {
    let first = first.lock().unwrap();
    let second = second.lock().unwrap();
    first.iter().chain(second.iter()).copied().collect()
}

fn count(handled: &Mutex<Vec<(i32, i64)>>, partition: i32) -> usize {
    let handled = handled.lock().unwrap();
    let offsets: BTreeSet<i64> = handled
        .iter()
        .filter(|(p, _)| *p == partition)
        .map(|(_, offset)| *offset)
        .collect();
    offsets.len()
}

#[tokio::test]
async fn a_slow_partition_holds_up_its_own_lane_only() {
    let pool = engine_database().await;
    let topic = fresh_topic("lanes", 2).await;
    let group = format!("g-{}", Uuid::new_v4().simple());
    let handled = Arc::new(Mutex::new(Vec::new()));
    let (open, gate) = watch::channel(false);
    let settings = ConsumerSettings {
        lanes: 2,
        lane_capacity: 1,
        ..ConsumerSettings::default()
    };
    let recorder = Recorder {
        pool: pool.clone(),
        handled: handled.clone(),
        gate,
    };
    let (shutdown, _, task) = start(&pool, &group, &topic, settings, recorder);

    // Partition 0's first message blocks its lane; many more queue up behind it.
    publish(&topic, 0, 30).await;
    eventually("partition 0 to be held", || async {
        (count(&handled, 0) == 1).then_some(())
    })
    .await;
    publish(&topic, 1, 5).await;
    eventually("partition 1 to flow past the slow one", || async {
        (count(&handled, 1) == 5).then_some(())
    })
    .await;
    assert_eq!(count(&handled, 0), 1);

    open.send(true).unwrap();
    eventually("partition 0 to catch up", || async {
        (count(&handled, 0) == 30).then_some(())
    })
    .await;
    let offsets: Vec<i64> = handled
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| *p == 0)
        .map(|(_, o)| *o)
        .collect();
    let mut sorted = offsets.clone();
    sorted.sort_unstable();
    assert_eq!(offsets, sorted, "partition 0 in order");
    eventually("every offset to be committed", || async {
        (group_lag(&group, &topic).await == 0).then_some(())
    })
    .await;
    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_member_joining_takes_partitions_over_and_nothing_is_lost() {
    let pool = engine_database().await;
    let topic = fresh_topic("rebalance", 4).await;
    let group = format!("g-{}", Uuid::new_v4().simple());
    let (_open, gate) = watch::channel(true);
    let first_handled = Arc::new(Mutex::new(Vec::new()));
    let second_handled = Arc::new(Mutex::new(Vec::new()));
    let settings = ConsumerSettings::default();
    let first = start(
        &pool,
        &group,
        &topic,
        settings.clone(),
        Recorder {
            pool: pool.clone(),
            handled: first_handled.clone(),
            gate: gate.clone(),
        },
    );
    eventually("the first member to hold every partition", || async {
        (held(&first.1) == 4).then_some(())
    })
    .await;
    for partition in 0..4 {
        publish(&topic, partition, 10).await;
    }
    let second = start(
        &pool,
        &group,
        &topic,
        settings,
        Recorder {
            pool: pool.clone(),
            handled: second_handled.clone(),
            gate,
        },
    );
    eventually("the partitions to be shared", || async {
        let (a, b) = (held(&first.1), held(&second.1));
        (a > 0 && b > 0 && a + b == 4).then_some(())
    })
    .await;
    for partition in 0..4 {
        publish(&topic, partition, 10).await;
    }
    eventually("every message to be handled and committed", || async {
        let all = handled_by_either(&first_handled, &second_handled);
        (all.len() == 80 && group_lag(&group, &topic).await == 0).then_some(())
    })
    .await;
    assert!(
        !second_handled.lock().unwrap().is_empty(),
        "the second member took work"
    );
    for (shutdown, _, task) in [first, second] {
        shutdown.cancel();
        task.await.unwrap();
    }
}

#[tokio::test]
async fn a_partition_paused_when_taken_away_flows_again_when_it_comes_back() {
    let pool = engine_database().await;
    let topic = fresh_topic("repause", 2).await;
    let group = format!("g-{}", Uuid::new_v4().simple());
    let (open, gate) = watch::channel(false);
    let first_handled = Arc::new(Mutex::new(Vec::new()));
    let second_handled = Arc::new(Mutex::new(Vec::new()));
    // One lane with room for one message: partition 0's blocked first message fills it,
    // and the consumer pauses partition 0.
    let settings = ConsumerSettings {
        lanes: 1,
        lane_capacity: 1,
        ..ConsumerSettings::default()
    };
    let first = start(
        &pool,
        &group,
        &topic,
        settings.clone(),
        Recorder {
            pool: pool.clone(),
            handled: first_handled.clone(),
            gate: gate.clone(),
        },
    );
    eventually("the first member to hold both partitions", || async {
        (held(&first.1) == 2).then_some(())
    })
    .await;
    publish(&topic, 0, 30).await;
    eventually("partition 0 to be held up", || async {
        (count(&first_handled, 0) == 1).then_some(())
    })
    .await;

    // A second member takes partitions away (the first member's are all revoked, then
    // shared out), and leaves again: the first member gets partition 0 back.
    let second = start(
        &pool,
        &group,
        &topic,
        settings,
        Recorder {
            pool: pool.clone(),
            handled: second_handled.clone(),
            gate,
        },
    );
    eventually("the partitions to be shared", || async {
        (held(&first.1) == 1 && held(&second.1) == 1).then_some(())
    })
    .await;
    open.send(true).unwrap();
    let (shutdown, _, task) = second;
    shutdown.cancel();
    task.await.unwrap();
    eventually("the first member to hold both partitions again", || async {
        (held(&first.1) == 2).then_some(())
    })
    .await;

    publish(&topic, 0, 10).await;
    publish(&topic, 1, 10).await;
    eventually("every message to be handled and committed", || async {
        let all = handled_by_either(&first_handled, &second_handled);
        (all.len() == 50 && group_lag(&group, &topic).await == 0).then_some(())
    })
    .await;
    let (shutdown, _, task) = first;
    shutdown.cancel();
    task.await.unwrap();
}
