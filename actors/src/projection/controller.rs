//! View controllers: one task per view keeps the view's consumers in line with its generation
//! record — starts the generations the record names, switches queries to the active one,
//! retires the others after a grace period, and completes a rebuild once it has caught up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::{self, consumer::PullConsumer};
use cloudlysis_runtime::metrics::names;
use cloudlysis_runtime::{kv as buckets, stream};
use cloudlysis_supervision::SupervisorError;
use cloudlysis_supervision::SupervisorRef;
use futures::StreamExt;
use std::future::IntoFuture;

use super::generation::{self as view_generation};
use super::node::*;
use super::tracker::*;
use super::view::Checkpoint;
use crate::task::AbortOnDrop;

/// Default time between a rebuild's switch and the retirement of the old generation: longer
/// than any node's switch ([`SWITCH_WAIT`]) plus its poll ([`IDLE_POLL`]).
pub const RETIRE_GRACE: Duration = Duration::from_secs(30);
/// How often a view's controller re-reads its generation record when nothing wakes it.
pub const IDLE_POLL: Duration = Duration::from_secs(2);
/// How often a rebuild's progress is checked.
pub const REBUILD_POLL: Duration = Duration::from_millis(200);
/// Longest a node waits, when switching generations, for the new one to reach the old one's
/// checkpoint before it answers queries from it anyway.
pub const SWITCH_WAIT: Duration = Duration::from_secs(10);

/// A generation whose consumer runs on this node.
pub(crate) struct Running {
    pub(crate) checkpoint: Checkpoint,
    pub(crate) _tracker: AbortOnDrop,
}

/// Keeps one view's consumers in line with its generation record (see
/// [`super::generation`]): starts the generations the record names, switches queries to
/// the active one, retires the others, and completes a rebuild once it has caught up.
pub(crate) struct Controller {
    pub(crate) entry: Arc<ViewEntry>,
    pub(crate) start: StartGeneration,
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) root: SupervisorRef,
    pub(crate) running: BTreeMap<u32, Running>,
    /// Generations to retire (durable deleted, documents purged) once their grace has passed.
    pub(crate) retiring: BTreeMap<u32, tokio::time::Instant>,
    pub(crate) first: bool,
}

impl Controller {
    /// One pass; `Ok(true)` when it changed the record and another pass should follow at once.
    pub(crate) async fn reconcile(&mut self) -> Result<bool, String> {
        let view = self.entry.name;
        let (gens, revision) = view_generation::read(&self.ctx.generations, view)
            .await
            .map_err(|e| e.to_string())?;
        // 1. Run the generations the record names.
        for g in std::iter::once(gens.active).chain(gens.building) {
            if self.running.contains_key(&g) {
                continue;
            }
            let checkpoint = Checkpoint::default();
            let spec = (self.start)(&self.ctx, g, checkpoint.clone(), self.entry.commits.clone());
            match self.root.start_child(spec).await {
                Ok(()) => {}
                // An earlier start that timed out went through after all: that child is wired
                // to a checkpoint nobody tracks, so replace it.
                Err(SupervisorError::DuplicateChild { .. }) => {
                    let name = view_child_name(view, g);
                    self.root
                        .stop_child(&name)
                        .await
                        .map_err(|e| format!("view `{view}` generation {g}: {e}"))?;
                    let spec =
                        (self.start)(&self.ctx, g, checkpoint.clone(), self.entry.commits.clone());
                    self.root
                        .start_child(spec)
                        .await
                        .map_err(|e| format!("view `{view}` generation {g}: {e}"))?;
                }
                Err(e) => return Err(format!("view `{view}` generation {g}: {e}")),
            }
            let durable = view_generation::durable(view, g)
                .ok_or_else(|| format!("view `{view}`: invalid name"))?;
            let entry = self.entry.clone();
            let on_raise: OnRaise = Arc::new(move |cp| {
                if entry.serving().is_some_and(|s| s.generation == g) {
                    metrics::gauge!(names::VIEW_CHECKPOINT, "view" => entry.name).set(cp as f64);
                } else if entry.building().is_some_and(|b| b.generation == g) {
                    metrics::gauge!(names::VIEW_REBUILD_CHECKPOINT, "view" => entry.name)
                        .set(cp as f64);
                }
            });
            let persist = persist_to(
                self.ctx.generations.clone(),
                vec![(buckets::view_space(view, g), g)],
            );
            let tracker = tokio::spawn(track_checkpoint(
                self.ctx.js.clone(),
                durable,
                checkpoint.clone(),
                on_raise,
                persist,
            ));
            self.running.insert(
                g,
                Running {
                    checkpoint,
                    _tracker: AbortOnDrop(tracker),
                },
            );
            if g != gens.active {
                tracing::info!(view, generation = g, "building view generation");
            }
        }
        // 2. Answer queries from the active generation — once it has caught up with the one
        //    answering so far, so a query's checkpoint never goes backwards.
        let active = self.running[&gens.active].checkpoint.clone();
        let serving = self.entry.serving();
        if serving.as_ref().map(|s| s.generation) != Some(gens.active) {
            if let Some(old) = &serving {
                let deadline = tokio::time::Instant::now() + SWITCH_WAIT;
                active.wait_for(old.checkpoint.get(), deadline).await;
                tracing::info!(
                    view,
                    from = old.generation,
                    to = gens.active,
                    "view answers queries from a new generation"
                );
            }
            *self
                .entry
                .serving
                .write()
                .unwrap_or_else(|p| p.into_inner()) = Some(GenerationState {
                generation: gens.active,
                checkpoint: active,
            });
            metrics::gauge!(names::VIEW_GENERATION, "view" => view).set(gens.active as f64);
        }
        *self
            .entry
            .building
            .write()
            .unwrap_or_else(|p| p.into_inner()) = gens.building.map(|b| GenerationState {
            generation: b,
            checkpoint: self.running[&b].checkpoint.clone(),
        });
        metrics::gauge!(names::VIEW_REBUILDING, "view" => view).set(if gens.building.is_some() {
            1.0
        } else {
            0.0
        });
        // 3. Stop what the record no longer names; retire it (delete its durable, purge its
        //    documents) after a grace period, so nodes still answering from it while they
        //    switch never see it vanish.
        let wanted = |g: u32| g == gens.active || Some(g) == gens.building;
        let unwanted: Vec<u32> = self
            .running
            .keys()
            .copied()
            .filter(|g| !wanted(*g))
            .collect();
        let purge_after = tokio::time::Instant::now() + self.ctx.retire_grace;
        for g in unwanted {
            match self.root.stop_child(&view_child_name(view, g)).await {
                Ok(()) | Err(SupervisorError::NoSuchChild { .. }) => {
                    self.running.remove(&g);
                    self.retiring.entry(g).or_insert(purge_after);
                    tracing::info!(view, generation = g, "stopped a retired view generation");
                }
                // Still running: try again on the next pass, never retire under a live consumer.
                Err(e) => {
                    tracing::warn!(view, generation = g, error = %e, "stopping a retired view generation")
                }
            }
        }
        if std::mem::take(&mut self.first) {
            // Generations a node (maybe this one, before a crash) left behind.
            for g in leftover_generations(&self.ctx, view).await {
                if !wanted(g) {
                    self.retiring.entry(g).or_insert(purge_after);
                }
            }
            if gens.active > 0 {
                self.retiring.entry(gens.active - 1).or_insert(purge_after);
            }
        }
        let due: Vec<u32> = self
            .retiring
            .iter()
            .filter(|(_, at)| **at <= tokio::time::Instant::now())
            .map(|(g, _)| *g)
            .collect();
        for g in due {
            if wanted(g) || self.running.contains_key(&g) {
                self.retiring.remove(&g);
                continue;
            }
            match retire(&self.ctx, view, g).await {
                Ok(purged) => {
                    self.retiring.remove(&g);
                    tracing::info!(view, generation = g, purged, "retired view generation");
                }
                Err(e) => {
                    tracing::warn!(view, generation = g, error = %e, "retiring a view generation; will retry")
                }
            }
        }
        // 4. Complete a rebuild that has caught up with the stream.
        if let Some(b) = gens.building
            && self.caught_up(b).await
        {
            let next = view_generation::Generations {
                active: b,
                building: None,
                latest: gens.latest.max(b),
            };
            if view_generation::compare_and_set(&self.ctx.generations, view, revision, next)
                .await
                .map_err(|e| e.to_string())?
            {
                metrics::counter!(names::VIEW_REBUILDS, "view" => view).increment(1);
                tracing::info!(
                    view,
                    generation = b,
                    "view rebuilt: switching to the new generation"
                );
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// True when generation `g`'s consumer has nothing pending and nothing unacked.
    pub(crate) async fn caught_up(&self, g: u32) -> bool {
        let Some(durable) = view_generation::durable(self.entry.name, g) else {
            return false;
        };
        let js = self.ctx.js.clone();
        let info = async move {
            let events = js.get_stream(stream::AGGREGATE_EVENTS).await.ok()?;
            let mut consumer: PullConsumer = events
                .get_consumer::<jetstream::consumer::pull::Config>(durable.as_str())
                .await
                .ok()?;
            consumer.info().await.ok().cloned()
        };
        matches!(
            tokio::time::timeout(NATS_TIMEOUT, info).await,
            Ok(Some(i)) if i.num_pending == 0 && i.num_ack_pending == 0
        )
    }

    /// Reconciles on every change of the generation record, and at least every
    /// [`IDLE_POLL`] ([`REBUILD_POLL`] while a rebuild is in progress).
    pub(crate) async fn run(mut self) {
        let key = buckets::view_generation_key(self.entry.name);
        let mut watch = None;
        loop {
            if watch.is_none() {
                watch = tokio::time::timeout(NATS_TIMEOUT, self.ctx.generations.watch(&key))
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
            match self.reconcile().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::warn!(view = self.entry.name, error = %e, "view controller"),
            }
            let poll = if self.entry.building().is_some() {
                REBUILD_POLL
            } else {
                IDLE_POLL
            };
            let changed = async {
                match watch.as_mut() {
                    Some(w) => w.next().await.is_some_and(|e| e.is_ok()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                alive = changed => if !alive { watch = None },
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }
}

/// Stops using generation `g` of `view` for good: deletes its durable consumer and purges its
/// documents. Idempotent; every node calls it after stopping its own consumer of `g`.
pub(crate) async fn retire(ctx: &Ctx, view: &str, g: u32) -> Result<u64, String> {
    let durable = view_generation::durable(view, g).ok_or("invalid view name")?;
    let events = tokio::time::timeout(NATS_TIMEOUT, ctx.js.get_stream(stream::AGGREGATE_EVENTS))
        .await
        .map_err(|_| "reading the stream timed out".to_string())?
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(NATS_TIMEOUT, events.delete_consumer(durable.as_str())).await {
        Ok(Ok(_)) => {}
        Ok(Err(e))
            if matches!(e.kind(), ConsumerErrorKind::JetStream(ref js)
                if js.error_code() == ErrorCode::CONSUMER_NOT_FOUND) => {}
        Ok(Err(e)) => return Err(format!("deleting {durable}: {e}")),
        Err(_) => return Err(format!("deleting {durable} timed out")),
    }
    let space = buckets::view_space(view, g);
    let docs = tokio::time::timeout(NATS_TIMEOUT, ctx.js.get_stream(buckets::views_stream()))
        .await
        .map_err(|_| "reading the views bucket timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let purged = tokio::time::timeout(
        Duration::from_secs(30),
        docs.purge()
            .filter(buckets::view_space_filter(&space))
            .into_future(),
    )
    .await
    .map_err(|_| format!("purging {space} timed out"))?
    .map_err(|e| format!("purging {space}: {e}"))?
    .purged;
    tokio::time::timeout(
        NATS_TIMEOUT,
        ctx.generations.purge(buckets::view_checkpoint_key(&space)),
    )
    .await
    .map_err(|_| "purging the checkpoint record timed out".to_string())?
    .map_err(|e| e.to_string())?;
    Ok(purged)
}

/// Generations of `view` whose durable consumer exists on the server.
pub(crate) async fn leftover_generations(ctx: &Ctx, view: &str) -> Vec<u32> {
    let Some(base) = view_generation::durable(view, 0) else {
        return Vec::new();
    };
    let base = base.to_string();
    let list = async {
        let events = ctx.js.get_stream(stream::AGGREGATE_EVENTS).await.ok()?;
        let names: Vec<String> = events
            .consumer_names()
            .filter_map(|n| async move { n.ok() })
            .collect()
            .await;
        Some(names)
    };
    let names = tokio::time::timeout(NATS_TIMEOUT, list)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    names
        .iter()
        .filter_map(|n| {
            if *n == base {
                Some(0)
            } else {
                n.strip_prefix(&base)?.strip_prefix("=g")?.parse().ok()
            }
        })
        .collect()
}
