//! The run's publishing side: batches of requests, each seeded and then published on its
//! schedule; a peak-search step with its samples; and everything published so far, for
//! the checks at the end.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::FutureProducer;
use saga_core::SagaDefinition;
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use super::peak::{self, Sample, Step};
use super::rate::Arrivals;
use super::report::Outcomes;
use super::traffic::{self, Tag, Tracker};
use super::workload::{self, Mix};
use super::SAMPLE_EVERY;
use crate::demo::verify;
use crate::demo::{Tally, Workload};
use crate::domains::Domain;

/// The run's publishing side: batches of requests, seeded and published, and everything
/// published so far.
pub(super) struct Batches<'a> {
    pub(super) pools: &'a HashMap<Domain, PgPool>,
    pub(super) producer: FutureProducer,
    pub(super) topic: String,
    pub(super) tracker: Tracker,
    pub(super) definition: SagaDefinition,
    pub(super) mix: Mix,
    pub(super) users: usize,
    /// Every request published so far and every row seeded.
    pub(super) all: Workload,
    pub(super) batches: u32,
    /// Saga ids of the measured phase.
    pub(super) measured: Vec<Uuid>,
}

impl Batches<'_> {
    /// A fresh batch for `arrivals`, seeded.
    pub(super) async fn prepare(&mut self, arrivals: &Arrivals) -> anyhow::Result<Workload> {
        let batch = workload::phase(self.batches, arrivals.count(), self.users, self.mix);
        self.batches += 1;
        crate::demo::seed_workload(self.pools, &batch)
            .await
            .context("seeding")?;
        Ok(batch)
    }

    /// Publishes `batch` as `arrivals` schedules it, tagging each request by when it is
    /// due, and adds what was published to [`Batches::all`].
    pub(super) async fn send(
        &mut self,
        batch: Workload,
        arrivals: Arrivals,
        tag_of: impl Fn(Duration) -> Tag,
    ) -> anyhow::Result<()> {
        let definition = &self.definition;
        let saga_id = |order: Uuid| definition.saga_id(&order.to_string());
        let measured: Vec<Uuid> = batch
            .requests
            .iter()
            .enumerate()
            .filter(|(i, _)| tag_of(arrivals.due_at(*i)) == Tag::Measured)
            .map(|(_, r)| saga_id(r.body.order_id))
            .collect();
        let published = traffic::publish(
            &self.producer,
            &self.topic,
            &batch,
            arrivals,
            tag_of,
            saga_id,
            &self.tracker,
        )
        .await?;
        self.measured.extend(measured);
        workload::merge(&mut self.all, &batch, published);
        Ok(())
    }

    /// One step of the peak search at `rate`, judged by counters read every second.
    pub(super) async fn step(&mut self, rate: f64, span: Duration) -> anyhow::Result<Step> {
        let tracker = self.tracker.clone();
        let sampling = async {
            let start = Instant::now();
            let mut samples = Vec::new();
            loop {
                let (published, ended) = tracker.counters();
                let at = start.elapsed();
                samples.push(Sample {
                    at,
                    published,
                    ended,
                });
                if at >= span {
                    return samples;
                }
                tokio::time::sleep(SAMPLE_EVERY.min(span - at)).await;
            }
        };
        let arrivals = Arrivals::new(rate, span);
        let batch = self.prepare(&arrivals).await?;
        let (published, samples) =
            tokio::join!(self.send(batch, arrivals, |_| Tag::Unmeasured), sampling);
        published?;
        let (first, last) = (samples[0], samples[samples.len() - 1]);
        let seconds = last.at.saturating_sub(first.at).as_secs_f64().max(1e-3);
        Ok(Step {
            rate,
            in_flight: last.in_flight(),
            completed_per_s: last.ended.saturating_sub(first.ended) as f64 / seconds,
            verdict: peak::judge(rate, &samples),
        })
    }

    /// Saga id of each order published.
    pub(super) fn saga_of_order(&self) -> HashMap<Uuid, Uuid> {
        self.all
            .requests
            .iter()
            .map(|r| {
                let order = r.body.order_id;
                (order, self.definition.saga_id(&order.to_string()))
            })
            .collect()
    }

    /// How the measured sagas stand in the table now.
    pub(super) async fn outcomes(&self, engine: &PgPool) -> anyhow::Result<Outcomes> {
        let sagas = verify::sagas(engine).await?;
        let mut tally = Tally::default();
        for id in &self.measured {
            tally.add(sagas.get(id).map(|s| s.status));
        }
        Ok(Outcomes {
            sagas: tally.sagas,
            completed: tally.completed,
            compensated: tally.compensated,
            parked: tally.parked,
            stuck: tally.stuck,
        })
    }
}
