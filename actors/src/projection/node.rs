//! The projection node itself: registration of views, the start of their consumers in either
//! mode, and the state each view keeps on this node (its gRPC serving: `serve.rs`).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use cloudlysis_runtime::consumer::{ConsumerPolicy, ConsumerSettings, DurableName};
use cloudlysis_runtime::envelope::Commit;
use cloudlysis_runtime::metrics::names;
use cloudlysis_runtime::subject::{SubjectToken, filter, validate_token};
use cloudlysis_runtime::{kv as buckets, stream};
use cloudlysis_supervision::{ChildSpec, SupervisorConfig, SupervisorRef};

use super::controller::*;
use super::generation::{self as view_generation};
use super::mode::*;
use super::tracker::*;
use super::view::{Checkpoint, View, ViewHandler, ViewStore};
use crate::consumer::{self, CheckpointFn, PartitionFn};
use crate::task::AbortOnDrop;

/// gRPC listen address of the projection node.
pub const GRPC_ADDR: cloudlysis_runtime::config::Setting = cloudlysis_runtime::config::Setting {
    key: "projection.grpc_addr",
    env: "CLOUDLYSIS_PROJECTION_GRPC_ADDR",
    flag: "--grpc-addr",
    doc: "gRPC listen address of the projection node [default: 127.0.0.1:50052]",
};

/// Deadline of each NATS request the node makes in the background.
pub const NATS_TIMEOUT: Duration = Duration::from_secs(5);

/// The projection node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// A view name is not a subject token or is registered twice.
    #[error("view `{0}`: invalid or duplicate name")]
    InvalidView(&'static str),
    /// NATS failed.
    #[error("{0}")]
    Nats(String),
    /// The configured mode conflicts with how the views ran before.
    #[error("{0}")]
    Mode(String),
    /// The supervision tree could not start.
    #[error(transparent)]
    Supervision(#[from] cloudlysis_supervision::SupervisorError),
}

/// Builds the consumer tree of one generation of a view.
pub(crate) type StartGeneration =
    Arc<dyn Fn(&Ctx, u32, Checkpoint, Arc<AtomicU64>) -> ChildSpec + Send + Sync>;

pub(crate) struct Ctx {
    pub(crate) js: jetstream::Context,
    pub(crate) views: kv::Store,
    pub(crate) generations: kv::Store,
    pub(crate) settings: ConsumerSettings,
    pub(crate) retire_grace: Duration,
    pub(crate) lanes: usize,
}

/// Routes a commit to a handler lane by the (tenant, document key) of its first event the view
/// keys: one document's events are applied one at a time, in delivery order, on one lane. A
/// commit that touches several documents of the view follows its first one (see ADR 0008).
pub(crate) fn document_partition<V: View>() -> PartitionFn<Commit> {
    Arc::new(|commit: &Commit| {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        let first = commit.events.iter().find_map(|e| {
            V::aggregate_types()
                .contains(&e.aggregate_type.as_str())
                .then(|| V::key(e).map(|k| (&e.tenant_id, k)))
                .flatten()
        });
        first.hash(&mut h);
        h.finish()
    })
}

/// Applies one commit (at a stream sequence) to one view's documents.
pub(crate) type ApplyFn = Arc<
    dyn Fn(Commit, u64) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// Builds a view's store for Single mode (generation 0, shared checkpoint).
pub(crate) type MakeStore = Arc<dyn Fn(&Ctx, Checkpoint, Arc<AtomicU64>) -> ApplyFn + Send + Sync>;

/// Builds the redrive of a view generation: applies a quarantined commit again
/// ([`ViewStore::redrive`]).
pub(crate) type MakeRedrive = Arc<dyn Fn(&Ctx, u32) -> ApplyFn + Send + Sync>;

pub(crate) struct Registered {
    pub(crate) name: &'static str,
    pub(crate) aggregate_types: &'static [&'static str],
    pub(crate) start: StartGeneration,
    pub(crate) store: MakeStore,
    pub(crate) redrive: MakeRedrive,
}

/// Handler lanes per view when none are configured.
pub const DEFAULT_LANES: usize = 8;
/// Most handler lanes per view.
pub const MAX_LANES: usize = 64;

/// Handler lanes per view (PerView mode).
pub const LANES: cloudlysis_runtime::config::Setting = cloudlysis_runtime::config::Setting {
    key: "projection.lanes",
    env: "CLOUDLYSIS_PROJECTION_LANES",
    flag: "--lanes",
    doc: "handler lanes per view: one document's events stay on one lane, in order; different \
          documents are applied concurrently [default: 8] [1..=64]",
};

/// Builds a [`ProjectionNode`].
pub struct ProjectionNodeBuilder {
    pub(crate) js: jetstream::Context,
    pub(crate) settings: ConsumerSettings,
    pub(crate) mode: ProjectionMode,
    pub(crate) retire_grace: Duration,
    pub(crate) lanes: usize,
    pub(crate) views: Vec<Registered>,
}

/// Name of the supervisor running generation `generation` of `view`.
pub fn view_child_name(view: &str, generation: u32) -> String {
    match generation {
        0 => format!("view-{view}"),
        n => format!("view-{view}=g{n}"),
    }
}

impl ProjectionNodeBuilder {
    /// Registers a view.
    pub fn register<V: View>(mut self) -> Self {
        let start: StartGeneration = Arc::new(
            |ctx: &Ctx, generation: u32, checkpoint: Checkpoint, commits: Arc<AtomicU64>| {
                let store = ViewStore::<V>::new(
                    ctx.views.clone(),
                    checkpoint.clone(),
                    Duration::from_secs(5),
                )
                .generation(generation)
                .count_commits_on(commits);
                let name = SubjectToken::new(V::NAME)
                    .unwrap_or_else(|_| unreachable!("validated in build"));
                let filters = V::aggregate_types()
                    .iter()
                    .filter_map(|t| SubjectToken::new(*t).ok())
                    .map(|t| filter::aggregate_type_events(&t))
                    .collect();
                let policy = ConsumerPolicy {
                    durable: DurableName::projection_view_generation(&name, generation),
                    filter_subjects: filters,
                    settings: ctx.settings,
                };
                let gate = checkpoint;
                let skip: CheckpointFn = Arc::new(move |meta| {
                    let applied = meta.stream_sequence <= gate.get();
                    Box::pin(async move { applied })
                });
                let (tree, _handle) = consumer::supervised_lanes(
                    view_child_name(V::NAME, generation),
                    ctx.js.clone(),
                    stream::AGGREGATE_EVENTS,
                    policy,
                    Some(skip),
                    ctx.lanes,
                    Some(document_partition::<V>()),
                    move || ViewHandler(store.clone()),
                );
                ChildSpec::supervisor(tree)
            },
        );
        let store: MakeStore = Arc::new(
            |ctx: &Ctx, checkpoint: Checkpoint, commits: Arc<AtomicU64>| -> ApplyFn {
                let store =
                    ViewStore::<V>::new(ctx.views.clone(), checkpoint, Duration::from_secs(5))
                        .count_commits_on(commits);
                Arc::new(move |commit: Commit, seq: u64| {
                    let store = store.clone();
                    Box::pin(async move { store.apply(&commit, seq).await.map(|_| ()) })
                })
            },
        );
        let redrive: MakeRedrive = Arc::new(|ctx: &Ctx, generation: u32| -> ApplyFn {
            let store = ViewStore::<V>::new(ctx.views.clone(), Checkpoint::default(), NATS_TIMEOUT)
                .generation(generation);
            Arc::new(move |commit: Commit, seq: u64| {
                let store = store.clone();
                Box::pin(async move { store.redrive(&commit, seq).await.map(|_| ()) })
            })
        });
        self.views.push(Registered {
            name: V::NAME,
            aggregate_types: V::aggregate_types(),
            start,
            store,
            redrive,
        });
        self
    }

    /// How long after a rebuild's switch the old generation's durable and documents are kept
    /// (default [`RETIRE_GRACE`]), so nodes still answering from it while they switch never
    /// see it vanish. Must exceed [`SWITCH_WAIT`] plus [`IDLE_POLL`] with several nodes.
    pub fn retire_grace(mut self, grace: Duration) -> Self {
        self.retire_grace = grace;
        self
    }

    /// Handler lanes per view in PerView mode (default [`DEFAULT_LANES`], at most
    /// [`MAX_LANES`]): events of one document always go to the same lane and are applied in
    /// delivery order; different documents are applied concurrently. All lanes of a view share
    /// its `max_in_flight`.
    pub fn lanes(mut self, lanes: usize) -> Self {
        self.lanes = lanes;
        self
    }

    /// Chooses the consumption mode (default [`ProjectionMode::PerView`]).
    pub fn mode(mut self, mode: ProjectionMode) -> Self {
        self.mode = mode;
        self
    }

    /// Ensures the stream and buckets, starts every view's consumers (the generation answering
    /// queries and, during a rebuild, the one being built) and their controllers.
    pub async fn build(self) -> Result<ProjectionNode, ProjectionError> {
        let mut seen = std::collections::HashSet::new();
        for r in &self.views {
            if validate_token(r.name).is_err() || !seen.insert(r.name) {
                return Err(ProjectionError::InvalidView(r.name));
            }
        }
        let nats = |e: &dyn std::fmt::Display| ProjectionError::Nats(e.to_string());
        stream::ensure_stream(&self.js, &stream::aggregate_events())
            .await
            .map_err(|e| nats(&e))?;
        let views_kv = buckets::ensure_bucket(&self.js, &buckets::views())
            .await
            .map_err(|e| nats(&e))?;
        let generations = view_generation::bucket(&self.js)
            .await
            .map_err(|e| nats(&e))?;
        // Operators' rebuilds and cancels are audited (see `admin`).
        let audit = cloudlysis_runtime::audit::open(&self.js)
            .await
            .map_err(|e| nats(&e))?;
        let ctx = Arc::new(Ctx {
            js: self.js.clone(),
            views: views_kv.clone(),
            generations,
            settings: self.settings,
            retire_grace: self.retire_grace,
            lanes: self.lanes.clamp(1, MAX_LANES),
        });
        check_mode(&ctx, self.mode, &self.views).await?;
        let redrivers: HashMap<&'static str, MakeRedrive> = self
            .views
            .iter()
            .map(|r| (r.name, r.redrive.clone()))
            .collect();
        for r in &self.views {
            register_metrics(r.name);
        }
        let root = SupervisorRef::start(SupervisorConfig::new("projection-node"), None).await?;
        let mut views = HashMap::new();
        let mut controllers = Vec::new();
        match self.mode {
            ProjectionMode::PerView => {
                for r in self.views {
                    let entry = Arc::new(ViewEntry::new(r.name));
                    let mut controller = Controller {
                        entry: entry.clone(),
                        start: r.start,
                        ctx: ctx.clone(),
                        root: root.clone(),
                        running: BTreeMap::new(),
                        retiring: BTreeMap::new(),
                        first: true,
                    };
                    // The first pass runs here so the node answers queries once it is built.
                    while controller
                        .reconcile()
                        .await
                        .map_err(ProjectionError::Nats)?
                    {}
                    controllers.push(AbortOnDrop(tokio::spawn(controller.run())));
                    views.insert(r.name, entry);
                }
            }
            ProjectionMode::Single if !self.views.is_empty() => {
                let checkpoint = Checkpoint::default();
                let mut stores = Vec::new();
                let mut types: Vec<&'static str> = Vec::new();
                for r in &self.views {
                    let entry = Arc::new(ViewEntry::new(r.name));
                    *entry.serving.write().unwrap_or_else(|p| p.into_inner()) =
                        Some(GenerationState {
                            generation: 0,
                            checkpoint: checkpoint.clone(),
                        });
                    stores.push((
                        r.name,
                        (r.store)(&ctx, checkpoint.clone(), entry.commits.clone()),
                    ));
                    types.extend(r.aggregate_types.iter().copied());
                    views.insert(r.name, entry);
                }
                types.sort_unstable();
                types.dedup();
                let durable = DurableName::projection_single();
                let policy = ConsumerPolicy {
                    durable: durable.clone(),
                    filter_subjects: types
                        .iter()
                        .filter_map(|t| SubjectToken::new(*t).ok())
                        .map(|t| filter::aggregate_type_events(&t))
                        .collect(),
                    settings: ctx.settings,
                };
                let gate = checkpoint.clone();
                let skip: CheckpointFn = Arc::new(move |meta| {
                    let applied = meta.stream_sequence <= gate.get();
                    Box::pin(async move { applied })
                });
                let stores = Arc::new(stores);
                let poison = buckets::ensure_bucket(&ctx.js, &buckets::poison())
                    .await
                    .map_err(|e| nats(&e))?;
                let (max_deliver, io_timeout, js) =
                    (ctx.settings.max_deliver, NATS_TIMEOUT, ctx.js.clone());
                let (tree, _handle) = consumer::supervised(
                    "views-all",
                    ctx.js.clone(),
                    stream::AGGREGATE_EVENTS,
                    policy,
                    Some(skip),
                    move || AllViews {
                        views: stores.clone(),
                        poison: poison.clone(),
                        js: js.clone(),
                        max_deliver,
                        io_timeout,
                    },
                );
                root.start_child(ChildSpec::supervisor(tree)).await?;
                let names: Vec<&'static str> = views.keys().copied().collect();
                let persist = persist_to(
                    ctx.generations.clone(),
                    names
                        .iter()
                        .map(|v| (buckets::view_space(v, 0), 0))
                        .collect(),
                );
                let on_raise: OnRaise = Arc::new(move |cp| {
                    for view in &names {
                        metrics::gauge!(names::VIEW_CHECKPOINT, "view" => *view).set(cp as f64);
                    }
                });
                controllers.push(AbortOnDrop(tokio::spawn(track_checkpoint(
                    ctx.js.clone(),
                    durable,
                    checkpoint,
                    on_raise,
                    persist,
                ))));
            }
            ProjectionMode::Single => {}
        }
        Ok(ProjectionNode {
            inner: Arc::new(Inner {
                views,
                kv: views_kv,
                js: self.js,
                mode: self.mode,
                root,
                controllers: std::sync::Mutex::new(controllers),
                lists: Arc::new(tokio::sync::Semaphore::new(super::MAX_CONCURRENT_LISTS)),
                redrivers,
                ctx,
                instance: uuid::Uuid::new_v4().to_string(),
                audit,
            }),
        })
    }
}

/// One generation of a view, as seen by a node.
#[derive(Clone)]
pub(crate) struct GenerationState {
    pub(crate) generation: u32,
    pub(crate) checkpoint: Checkpoint,
}

/// A registered view on this node.
pub(crate) struct ViewEntry {
    pub(crate) name: &'static str,
    /// The generation answering queries (`None` only before the first reconcile).
    pub(crate) serving: RwLock<Option<GenerationState>>,
    /// The generation a rebuild is building.
    pub(crate) building: RwLock<Option<GenerationState>>,
    /// Commits applied by this node, over all generations.
    pub(crate) commits: Arc<AtomicU64>,
}

impl ViewEntry {
    pub(crate) fn new(name: &'static str) -> Self {
        Self {
            name,
            serving: RwLock::new(None),
            building: RwLock::new(None),
            commits: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn serving(&self) -> Option<GenerationState> {
        self.serving
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn building(&self) -> Option<GenerationState> {
        self.building
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Registers the series of view `view` (at their start values), so the node exports them from
/// its start.
fn register_metrics(view: &'static str) {
    metrics::gauge!(names::STREAM_LAST_SEQUENCE, "stream" => stream::AGGREGATE_EVENTS).set(0.0);
    for gauge in [
        names::VIEW_CHECKPOINT,
        names::VIEW_REBUILD_CHECKPOINT,
        names::VIEW_GENERATION,
        names::VIEW_REBUILDING,
        names::VIEW_STORE_OLDEST_HELD,
    ] {
        metrics::gauge!(gauge, "view" => view).set(0.0);
    }
    metrics::counter!(names::VIEW_REBUILDS, "view" => view).increment(0);
    metrics::counter!(names::VIEW_STORE_RETRIES, "view" => view).increment(0);
    for outcome in super::query::LIST_OUTCOMES {
        metrics::counter!(names::VIEW_LISTS, "view" => view, "outcome" => *outcome).increment(0);
    }
    for outcome in ["hit", "miss"] {
        metrics::counter!(names::VIEW_CACHE, "view" => view, "outcome" => outcome).increment(0);
    }
    for outcome in super::query::GET_OUTCOMES {
        metrics::counter!(names::VIEW_GETS, "view" => view, "outcome" => *outcome).increment(0);
    }
}

/// A running projection node. Cheap to clone.
#[derive(Clone)]
pub struct ProjectionNode {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) mode: ProjectionMode,
    pub(crate) views: HashMap<&'static str, Arc<ViewEntry>>,
    pub(crate) kv: kv::Store,
    pub(crate) js: jetstream::Context,
    pub(crate) root: SupervisorRef,
    pub(crate) controllers: std::sync::Mutex<Vec<AbortOnDrop>>,
    /// Admission of `List`s: at most [`super::MAX_CONCURRENT_LISTS`] at once on this node.
    pub(crate) lists: Arc<tokio::sync::Semaphore>,
    /// Each view's redrive (poison records applied again).
    pub(crate) redrivers: HashMap<&'static str, MakeRedrive>,
    pub(crate) ctx: Arc<Ctx>,
    /// This node's id in `NodeAdmin` answers, the same whether called over gRPC or in process.
    pub(crate) instance: String,
    /// The audit trail (operators' rebuilds and cancels).
    pub(crate) audit: kv::Store,
}

impl ProjectionNode {
    /// A builder on `js`, with the consumer settings of the projection role.
    pub fn builder(js: jetstream::Context, settings: ConsumerSettings) -> ProjectionNodeBuilder {
        ProjectionNodeBuilder {
            js,
            settings,
            mode: ProjectionMode::default(),
            retire_grace: RETIRE_GRACE,
            lanes: DEFAULT_LANES,
            views: Vec::new(),
        }
    }

    /// The root supervisor.
    pub fn supervisor(&self) -> &SupervisorRef {
        &self.inner.root
    }

    /// Applies a quarantined commit (stream sequence `seq`) again to generation `generation` of
    /// `view` — the redrive of a poison record. Refused for a view or generation this node does
    /// not run (a retired generation's documents are gone).
    pub async fn redrive(
        &self,
        view: &str,
        generation: u32,
        commit: Commit,
        seq: u64,
    ) -> Result<(), String> {
        let entry = self
            .inner
            .views
            .get(view)
            .ok_or_else(|| format!("view `{view}` does not run on this node"))?;
        let running = [entry.serving(), entry.building()]
            .into_iter()
            .flatten()
            .any(|g| g.generation == generation);
        if !running {
            return Err(format!(
                "generation {generation} of view `{view}` does not run on this node (a \
                 rebuild replaced it; the new generation read the event itself)"
            ));
        }
        let redrive = self
            .inner
            .redrivers
            .get(view)
            .ok_or_else(|| format!("view `{view}` cannot be redriven"))?;
        redrive(&self.inner.ctx, generation)(commit, seq).await
    }

    /// `List` queries running on this node now (at most [`super::MAX_CONCURRENT_LISTS`]).
    pub fn lists_in_flight(&self) -> usize {
        super::MAX_CONCURRENT_LISTS - self.inner.lists.available_permits()
    }

    /// The checkpoint of the view generation answering queries (`None` for an unknown view).
    pub fn checkpoint(&self, view: &str) -> Option<u64> {
        self.inner
            .views
            .get(view)
            .and_then(|e| e.serving())
            .map(|s| s.checkpoint.get())
    }

    /// The generation of a view answering queries on this node (`None` for an unknown view).
    pub fn generation(&self, view: &str) -> Option<u32> {
        self.inner
            .views
            .get(view)
            .and_then(|e| e.serving())
            .map(|s| s.generation)
    }

    /// Commits this node applied to a view, over all its generations (`None` for an unknown
    /// view).
    pub fn commits_applied(&self, view: &str) -> Option<u64> {
        self.inner
            .views
            .get(view)
            .map(|e| e.commits.load(Ordering::Relaxed))
    }

    /// Names of the views this node runs, sorted.
    pub fn view_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.inner.views.keys().copied().collect();
        names.sort_unstable();
        names
    }
}
