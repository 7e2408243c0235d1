//! Live entities as virtual actors (ADR 0012): a host keeps one [`EntityCell`] per live
//! `(tenant, aggregate id)` in its [`Entities`] registry. A cell's lock is the entity's turn —
//! tokio's mutex is fair, so commands run one at a time in arrival order — and its counter of
//! accepted commands is its mailbox, bounded by `aggregate.entity_mailbox`. A command runs in a
//! task of its own, so a caller that gives up never cuts a commit in half. A cell costs a few
//! hundred bytes at rest instead of a ractor actor's ≈ 9 KiB (docs/performance.md,
//! `bench entities`); idle cells are passivated by one sweeper per host.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::entity::{ENTITY_KIND, Entity, Loaded};
use super::host::HostShared;
use super::{Aggregate, CommandError, CommandRequest, ExecuteReply};
use cloudlysis_runtime::metrics::names;
use dashmap::DashMap;
use metrics::{Counter, Gauge, Histogram};

pub(crate) use super::entity::Claim;

/// One live entity: who it is, its loaded state, and its queue.
pub(crate) struct EntityCell<A: Aggregate> {
    entity: Entity<A>,
    /// The cached state (`None` until loaded, and after a command whose outcome left it
    /// uncertain or whose code panicked); holding the lock is the entity's turn.
    state: tokio::sync::Mutex<Option<Loaded<A::State>>>,
    /// Commands accepted and not yet finished: the entity's mailbox depth.
    queued: AtomicU32,
    /// When the last command finished, in milliseconds since the registry's epoch.
    last_active: AtomicU64,
}

impl<A: Aggregate> EntityCell<A> {
    /// Runs `req` in the entity's turn. A command whose deadline passed while it waited is not
    /// run (its caller was already answered).
    async fn run(
        &self,
        req: CommandRequest,
        command: A::Command,
        claim: &Claim,
    ) -> Result<ExecuteReply, CommandError> {
        let mut turn = self.state.lock().await;
        if req
            .deadline
            .is_some_and(|d| tokio::time::Instant::now() >= d)
        {
            return Err(CommandError::Timeout(
                self.entity.shared.settings.command_timeout,
            ));
        }
        // Taken out while the command runs: if the aggregate's code panics, the cell is left
        // with no state and the next command reloads it from the stream.
        let mut loaded = turn.take();
        let result = self.entity.execute(req, command, claim, &mut loaded).await;
        *turn = loaded;
        result
    }
}

/// The `kind="entity"` series of the actor metrics, which entities keep although they are not
/// ractor actors, so dashboards of mailbox pressure cover them.
#[derive(Clone)]
struct EntityMetrics {
    depth: Gauge,
    capacity: Gauge,
    ok: Counter,
    panic: Counter,
    rejected: Counter,
    duration: Histogram,
    actors: Gauge,
}

impl EntityMetrics {
    fn new() -> Self {
        let kind = ENTITY_KIND;
        Self {
            depth: metrics::gauge!(names::ACTOR_MAILBOX_DEPTH, "kind" => kind),
            capacity: metrics::gauge!(names::ACTOR_MAILBOX_CAPACITY, "kind" => kind),
            ok: metrics::counter!(names::ACTOR_MESSAGES, "kind" => kind, "outcome" => "ok"),
            panic: metrics::counter!(names::ACTOR_MESSAGES, "kind" => kind, "outcome" => "panic"),
            rejected: metrics::counter!(names::ACTOR_MAILBOX_REJECTED, "kind" => kind),
            duration: metrics::histogram!(names::ACTOR_MESSAGE_DURATION, "kind" => kind),
            actors: metrics::gauge!(names::ACTORS, "kind" => kind),
        }
    }
}

/// A host's live entities by `tenant.id`.
pub(crate) struct Entities<A: Aggregate> {
    cells: DashMap<String, Arc<EntityCell<A>>>,
    shared: Arc<HostShared>,
    epoch: tokio::time::Instant,
    metrics: EntityMetrics,
}

/// Releases a command's place in its entity's queue when the command ends — also when the
/// aggregate's code panics, which it counts.
struct Done<A: Aggregate> {
    cell: Arc<EntityCell<A>>,
    registry: Arc<Entities<A>>,
    started: tokio::time::Instant,
}

impl<A: Aggregate> Drop for Done<A> {
    fn drop(&mut self) {
        let m = &self.registry.metrics;
        if std::thread::panicking() {
            m.panic.increment(1);
        } else {
            m.ok.increment(1);
        }
        m.duration.record(self.started.elapsed().as_secs_f64());
        // Active first: the sweeper passivates only a cell with nothing queued, and must not
        // see an old `last_active` once the queue is empty.
        self.cell
            .last_active
            .store(self.registry.now_ms(), Ordering::Relaxed);
        self.cell.queued.fetch_sub(1, Ordering::Release);
        m.depth.decrement(1.0);
    }
}

impl<A: Aggregate> Entities<A> {
    /// An empty registry, with its passivation sweeper (ends when the registry is dropped).
    pub(crate) fn new(shared: Arc<HostShared>) -> Arc<Self> {
        cloudlysis_runtime::mailbox::register_kind(ENTITY_KIND);
        let registry = Arc::new(Self {
            cells: DashMap::new(),
            shared,
            epoch: tokio::time::Instant::now(),
            metrics: EntityMetrics::new(),
        });
        spawn_sweeper(Arc::downgrade(&registry));
        registry
    }

    /// How many entities are live.
    pub(crate) fn len(&self) -> usize {
        self.cells.len()
    }

    /// The keys (`tenant.id`) of the live entities.
    pub(crate) fn keys(&self) -> Vec<String> {
        self.cells.iter().map(|c| c.key().clone()).collect()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Runs `req` (decoded: `command`) on its entity — loaded on demand, bounded by `aggregate.max_entities` and the
    /// entity's mailbox — and answers by `timeout`, truthfully about what may have been
    /// committed.
    pub(crate) async fn execute(
        self: &Arc<Self>,
        key: String,
        req: CommandRequest,
        command: A::Command,
        timeout: Duration,
    ) -> Result<ExecuteReply, CommandError> {
        let cell = self.admit(key, &req)?;
        let claim = Arc::new(Claim::default());
        let done = Done {
            cell: cell.clone(),
            registry: self.clone(),
            started: tokio::time::Instant::now(),
        };
        // Boxed: the turn's state machine is several KiB (it holds the rehydration's), and a
        // task's future is moved into its cell at the spawn and its stage rewritten as it runs
        // and completes — with a box, each of those moves a pointer, not the state machine.
        let task = tokio::spawn(Box::pin({
            let claim = claim.clone();
            async move {
                let done = done;
                done.cell.run(req, command, &claim).await
            }
        }));
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result,
            // The aggregate's code panicked mid-command: if it had started publishing, the
            // commit may have landed.
            Ok(Err(e)) => {
                let why = if e.is_panic() {
                    cloudlysis_runtime::mailbox::panic_message(&e.into_panic())
                } else {
                    "cancelled".to_string()
                };
                tracing::error!(aggregate_type = A::TYPE, id = %cell.entity.id, "an entity's command failed: {why}");
                if claim.abandon() {
                    Err(CommandError::Unavailable(format!(
                        "the entity failed before answering ({why}); nothing was committed"
                    )))
                } else {
                    Err(CommandError::OutcomeUnknown(format!(
                        "the entity failed while publishing the commit ({why})"
                    )))
                }
            }
            // The deadline passed. Nothing was committed only if no publish had started — and,
            // once abandoned, none will.
            Err(_) if claim.abandon() => Err(CommandError::Timeout(timeout)),
            Err(_) => Err(CommandError::OutcomeUnknown(format!(
                "the deadline ({timeout:?}) passed while the commit was being published"
            ))),
        }
    }

    /// The entity's cell with a place reserved in its queue. The place is taken under the
    /// registry shard's lock, so the sweeper never passivates a cell a command is entering.
    fn admit(&self, key: String, req: &CommandRequest) -> Result<Arc<EntityCell<A>>, CommandError> {
        if let Some(cell) = self.cells.get(&key) {
            self.reserve(cell.value(), req)?;
            return Ok(cell.value().clone());
        }
        let max = self.shared.settings.max_entities;
        if self.len() >= max {
            return Err(CommandError::Busy(format!(
                "this node holds {max} live `{}` entities, its limit (aggregate.max_entities)",
                A::TYPE
            )));
        }
        let mut created = false;
        let entry = self.cells.entry(key).or_insert_with(|| {
            created = true;
            Arc::new(EntityCell {
                entity: Entity {
                    tenant: req.ctx.tenant.clone(),
                    id: req.aggregate_id.clone(),
                    shared: self.shared.clone(),
                    _aggregate: std::marker::PhantomData,
                },
                state: tokio::sync::Mutex::new(None),
                queued: AtomicU32::new(0),
                last_active: AtomicU64::new(self.now_ms()),
            })
        });
        self.reserve(entry.value(), req)?;
        let cell = entry.value().clone();
        drop(entry);
        if created {
            self.metrics.actors.increment(1.0);
            self.metrics
                .capacity
                .increment(self.shared.settings.mailbox as f64);
            self.shared.live.set(self.len() as f64);
        }
        Ok(cell)
    }

    fn reserve(&self, cell: &EntityCell<A>, req: &CommandRequest) -> Result<(), CommandError> {
        let capacity = self.shared.settings.mailbox as u32;
        if cell.queued.fetch_add(1, Ordering::AcqRel) >= capacity {
            cell.queued.fetch_sub(1, Ordering::AcqRel);
            self.metrics.rejected.increment(1);
            return Err(CommandError::Busy(format!(
                "aggregate {}/{} is busy",
                A::TYPE,
                req.aggregate_id
            )));
        }
        self.metrics.depth.increment(1.0);
        Ok(())
    }

    /// Passivates every cell with nothing queued that has been idle for `idle_timeout`.
    fn sweep(&self) {
        let idle_ms = self.shared.settings.idle_timeout.as_millis() as u64;
        let now = self.now_ms();
        let mut removed = 0usize;
        self.cells.retain(|_, cell| {
            let idle = cell.queued.load(Ordering::Acquire) == 0
                && now.saturating_sub(cell.last_active.load(Ordering::Relaxed)) >= idle_ms;
            removed += usize::from(idle);
            !idle
        });
        if removed > 0 {
            self.metrics.actors.decrement(removed as f64);
            self.metrics
                .capacity
                .decrement((removed * self.shared.settings.mailbox) as f64);
            self.shared.live.set(self.len() as f64);
        }
    }
}

impl<A: Aggregate> Drop for Entities<A> {
    fn drop(&mut self) {
        let n = self.len();
        self.metrics.actors.decrement(n as f64);
        self.metrics
            .capacity
            .decrement((n * self.shared.settings.mailbox) as f64);
    }
}

/// One task per host: every `idle_timeout / 2` (at least 10 ms) it passivates the idle cells.
/// Ends once the registry is dropped; holds it only while sweeping.
fn spawn_sweeper<A: Aggregate>(registry: Weak<Entities<A>>) {
    let Some(period) = registry
        .upgrade()
        .map(|r| (r.shared.settings.idle_timeout / 2).max(Duration::from_millis(10)))
    else {
        return;
    };
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            let Some(registry) = registry.upgrade() else {
                return;
            };
            registry.sweep();
        }
    });
}
