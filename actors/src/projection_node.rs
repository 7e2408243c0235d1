//! The projection node: runs registered views — one durable consumer per view (PerView mode) —
//! tracks each view's checkpoint, and serves `projection.gateway.v1.QueryService`.
//!
//! Queries take the tenant from gRPC metadata only and read keys under `<view>.<tenant>.`, so no
//! query can reach another tenant's documents. `min_sequence` waits (up to the call's deadline)
//! until the view's checkpoint has reached it: read-your-writes after a command.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::{self, consumer::PullConsumer, kv};
use bytes::Bytes;
use cloudlysis_proto::projection::query_service_server::{QueryService, QueryServiceServer};
use cloudlysis_proto::projection::{Document, GetRequest, GetResponse, ListRequest, ListResponse};
use cloudlysis_proto::projection_admin::projection_admin_server::{
    ProjectionAdmin, ProjectionAdminServer,
};
use cloudlysis_proto::projection_admin::{
    CancelRebuildRequest, CancelRebuildResponse, DescribeViewsRequest, DescribeViewsResponse,
    RebuildViewRequest, RebuildViewResponse, ViewStatus,
};
use cloudlysis_runtime::consumer::{ConsumerPolicy, ConsumerSettings, DurableName};
use cloudlysis_runtime::context::RequestContext;
use cloudlysis_runtime::envelope::Commit;
use cloudlysis_runtime::metrics::names;
use cloudlysis_runtime::subject::{SubjectToken, filter, validate_token};
use cloudlysis_runtime::{kv as buckets, stream};
use cloudlysis_supervision::SupervisorError;
use cloudlysis_supervision::{ChildSpec, SupervisorConfig, SupervisorRef};
use futures::StreamExt;
use std::future::IntoFuture;
use tonic::{Request, Response, Status};

use crate::consumer::{self, CheckpointFn, PartitionFn};
use crate::handler::{Delivery, EventHandler, HandlerError};
use crate::node_admin::NodeAdminService;
use crate::view::{Checkpoint, DocumentRecord, View, ViewHandler, ViewStore};
use crate::view_generation::{self, RebuildError};

/// gRPC listen address of the projection node.
pub const GRPC_ADDR: cloudlysis_runtime::config::Setting = cloudlysis_runtime::config::Setting {
    key: "projection.grpc_addr",
    env: "CLOUDLYSIS_PROJECTION_GRPC_ADDR",
    flag: "--grpc-addr",
    doc: "gRPC listen address of the projection node [default: 127.0.0.1:50052]",
};

/// How often a view's checkpoint is refreshed from its durable consumer.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);
/// Shortest gap between two checkpoint refreshes asked for by waiting queries (bounds the
/// consumer-info requests a view's tracker makes to 1 / `MIN_REFRESH`).
pub const MIN_REFRESH: Duration = Duration::from_millis(5);
/// Least time between two records of a view's checkpoint in KV.
pub const PERSIST_INTERVAL: Duration = Duration::from_secs(1);
/// Default time between a rebuild's switch and the retirement of the old generation: longer
/// than any node's switch ([`SWITCH_WAIT`]) plus its poll ([`IDLE_POLL`]).
pub const RETIRE_GRACE: Duration = Duration::from_secs(30);
/// Deadline of each NATS request the node makes in the background.
pub const NATS_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a view's controller re-reads its generation record when nothing wakes it.
pub const IDLE_POLL: Duration = Duration::from_secs(2);
/// How often a rebuild's progress is checked.
pub const REBUILD_POLL: Duration = Duration::from_millis(200);
/// Longest a node waits, when switching generations, for the new one to reach the old one's
/// checkpoint before it answers queries from it anyway.
pub const SWITCH_WAIT: Duration = Duration::from_secs(10);
/// Most documents one `List` reads for a tenant (it filters and pages in memory).
pub const MAX_LIST_SCAN: u64 = 100_000;
/// Deadline of one `List`'s read of the view.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest page a `List` returns.
pub const MAX_PAGE_SIZE: u32 = 500;
/// Page size when the request names none.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

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
type StartGeneration =
    Arc<dyn Fn(&Ctx, u32, Checkpoint, Arc<AtomicU64>) -> ChildSpec + Send + Sync>;

struct Ctx {
    js: jetstream::Context,
    views: kv::Store,
    generations: kv::Store,
    settings: ConsumerSettings,
    retire_grace: Duration,
    lanes: usize,
}

/// Routes a commit to a handler lane by the (tenant, document key) of its first event the view
/// keys: one document's events are applied one at a time, in delivery order, on one lane. A
/// commit that touches several documents of the view follows its first one (see ADR 0008).
fn document_partition<V: View>() -> PartitionFn<Commit> {
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
type ApplyFn = Arc<
    dyn Fn(Commit, u64) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// Builds a view's store for Single mode (generation 0, shared checkpoint).
type MakeStore = Arc<dyn Fn(&Ctx, Checkpoint, Arc<AtomicU64>) -> ApplyFn + Send + Sync>;

struct Registered {
    name: &'static str,
    aggregate_types: &'static [&'static str],
    start: StartGeneration,
    store: MakeStore,
}

/// How a projection node consumes the event stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProjectionMode {
    /// One durable consumer per view: views fail, lag and rebuild independently.
    #[default]
    PerView,
    /// One durable consumer (`cloudlysis-projection-all`) feeds every view: one fetch loop and
    /// one server-side consumer, but a failing view holds back all of them, and views cannot
    /// be rebuilt.
    Single,
}

impl std::str::FromStr for ProjectionMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "per-view" => Ok(Self::PerView),
            "single" => Ok(Self::Single),
            other => Err(format!(
                "`{other}` is not a mode: expected `per-view` or `single`"
            )),
        }
    }
}

impl std::fmt::Display for ProjectionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::PerView => "per-view",
            Self::Single => "single",
        })
    }
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

/// Consumption mode of the projection node.
pub const MODE: cloudlysis_runtime::config::Setting = cloudlysis_runtime::config::Setting {
    key: "projection.mode",
    env: "CLOUDLYSIS_PROJECTION_MODE",
    flag: "--mode",
    doc: "per-view: one durable consumer per view (isolated, rebuildable); single: one consumer \
          feeds every view [default: per-view]",
};

/// Builds a [`ProjectionNode`].
pub struct ProjectionNodeBuilder {
    js: jetstream::Context,
    settings: ConsumerSettings,
    mode: ProjectionMode,
    retire_grace: Duration,
    lanes: usize,
    views: Vec<Registered>,
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
        self.views.push(Registered {
            name: V::NAME,
            aggregate_types: V::aggregate_types(),
            start,
            store,
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
        let ctx = Arc::new(Ctx {
            js: self.js.clone(),
            views: views_kv.clone(),
            generations,
            settings: self.settings,
            retire_grace: self.retire_grace,
            lanes: self.lanes.clamp(1, MAX_LANES),
        });
        check_mode(&ctx, self.mode, &self.views).await?;
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
                let (tree, _handle) = consumer::supervised(
                    "views-all",
                    ctx.js.clone(),
                    stream::AGGREGATE_EVENTS,
                    policy,
                    Some(skip),
                    move || AllViews(stores.clone()),
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
            }),
        })
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One generation of a view, as seen by a node.
#[derive(Clone)]
struct GenerationState {
    generation: u32,
    checkpoint: Checkpoint,
}

/// A registered view on this node.
struct ViewEntry {
    name: &'static str,
    /// The generation answering queries (`None` only before the first reconcile).
    serving: RwLock<Option<GenerationState>>,
    /// The generation a rebuild is building.
    building: RwLock<Option<GenerationState>>,
    /// Commits applied by this node, over all generations.
    commits: Arc<AtomicU64>,
}

impl ViewEntry {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            serving: RwLock::new(None),
            building: RwLock::new(None),
            commits: Arc::new(AtomicU64::new(0)),
        }
    }

    fn serving(&self) -> Option<GenerationState> {
        self.serving
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn building(&self) -> Option<GenerationState> {
        self.building
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A generation whose consumer runs on this node.
struct Running {
    checkpoint: Checkpoint,
    _tracker: AbortOnDrop,
}

/// Keeps one view's consumers in line with its generation record (see
/// [`crate::view_generation`]): starts the generations the record names, switches queries to
/// the active one, retires the others, and completes a rebuild once it has caught up.
struct Controller {
    entry: Arc<ViewEntry>,
    start: StartGeneration,
    ctx: Arc<Ctx>,
    root: SupervisorRef,
    running: BTreeMap<u32, Running>,
    /// Generations to retire (durable deleted, documents purged) once their grace has passed.
    retiring: BTreeMap<u32, tokio::time::Instant>,
    first: bool,
}

impl Controller {
    /// One pass; `Ok(true)` when it changed the record and another pass should follow at once.
    async fn reconcile(&mut self) -> Result<bool, String> {
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
    async fn caught_up(&self, g: u32) -> bool {
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
    async fn run(mut self) {
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
async fn retire(ctx: &Ctx, view: &str, g: u32) -> Result<u64, String> {
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
async fn leftover_generations(ctx: &Ctx, view: &str) -> Vec<u32> {
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

/// Called with a checkpoint's value after each refresh (sets the gauge).
type OnRaise = Arc<dyn Fn(u64) + Send + Sync>;

/// Refuses a mode that would apply events a second time: Single mode over views that already
/// ran PerView (their own consumers or a rebuild exist), or PerView over a Single-mode consumer.
async fn check_mode(
    ctx: &Ctx,
    mode: ProjectionMode,
    views: &[Registered],
) -> Result<(), ProjectionError> {
    let events = ctx
        .js
        .get_stream(stream::AGGREGATE_EVENTS)
        .await
        .map_err(|e| ProjectionError::Nats(e.to_string()))?;
    let exists = |name: String| {
        let events = events.clone();
        async move {
            match tokio::time::timeout(NATS_TIMEOUT, events.consumer_info(&name)).await {
                Ok(Ok(_)) => Ok(true),
                Ok(Err(e)) if e.kind() == ConsumerInfoErrorKind::NotFound => Ok(false),
                Ok(Err(e)) => Err(ProjectionError::Nats(format!("consumer {name}: {e}"))),
                Err(_) => Err(ProjectionError::Nats(format!("consumer {name}: timed out"))),
            }
        }
    };
    match mode {
        ProjectionMode::PerView => {
            let single = DurableName::projection_single().to_string();
            if exists(single.clone()).await? {
                return Err(ProjectionError::Mode(format!(
                    "consumer {single} exists: these views run in Single mode; set {}=single \
                     (starting PerView would apply every event again)",
                    MODE.env
                )));
            }
        }
        ProjectionMode::Single => {
            for r in views {
                let (gens, _) = view_generation::read(&ctx.generations, r.name)
                    .await
                    .map_err(|e| ProjectionError::Nats(e.to_string()))?;
                let own = view_generation::durable(r.name, gens.active)
                    .map(|d| d.to_string())
                    .unwrap_or_default();
                if gens != view_generation::Generations::default() || exists(own.clone()).await? {
                    return Err(ProjectionError::Mode(format!(
                        "view `{}` runs in PerView mode (consumer {own}, generation {}); \
                         Single mode would apply its events again — keep {}=per-view",
                        r.name, gens.active, MODE.env
                    )));
                }
            }
            // The shared consumer is past every event it delivered: a view it never fed would
            // miss them, and Single mode cannot rebuild. Remember which views it feeds.
            let key = buckets::SINGLE_MODE_VIEWS_KEY;
            let names: std::collections::BTreeSet<String> =
                views.iter().map(|r| r.name.to_string()).collect();
            let nats = |e: &dyn std::fmt::Display| ProjectionError::Nats(format!("{key}: {e}"));
            let recorded = tokio::time::timeout(NATS_TIMEOUT, ctx.generations.get(key))
                .await
                .map_err(|_| nats(&"timed out"))?
                .map_err(|e| nats(&e))?
                .and_then(|b| {
                    serde_json::from_slice::<std::collections::BTreeSet<String>>(&b).ok()
                });
            let single = DurableName::projection_single().to_string();
            let known = match (exists(single.clone()).await?, recorded) {
                (true, Some(recorded)) => {
                    let new: Vec<&str> = names
                        .iter()
                        .filter(|n| !recorded.contains(*n))
                        .map(String::as_str)
                        .collect();
                    if !new.is_empty() {
                        return Err(ProjectionError::Mode(format!(
                            "view `{}` is new to Single mode: consumer {single} is past events \
                             it never applied, and Single mode cannot rebuild; run it on a \
                             PerView node, or start Single mode over (delete {single} and the \
                             views' documents)",
                            new.join("`, `")
                        )));
                    }
                    recorded
                }
                (true, None) | (false, _) => names,
            };
            let value = bytes::Bytes::from(serde_json::to_vec(&known).unwrap_or_default());
            tokio::time::timeout(NATS_TIMEOUT, ctx.generations.put(key, value))
                .await
                .map_err(|_| nats(&"timed out"))?
                .map_err(|e| nats(&e))?;
        }
    }
    Ok(())
}

/// Single mode's handler: applies each commit to every view. A view that fails fails the
/// message; on redelivery the views that already applied it skip it (per-document guard).
struct AllViews(Arc<Vec<(&'static str, ApplyFn)>>);

impl EventHandler for AllViews {
    type Event = Commit;
    type State = ();
    const KIND: &'static str = "views";

    async fn init(&self) -> Result<(), cloudlysis_runtime::mailbox::ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, d: &Delivery<Commit>, _: &mut ()) -> Result<(), HandlerError> {
        for (view, apply) in self.0.iter() {
            apply(d.event.clone(), d.meta.stream_sequence)
                .await
                .map_err(|e| HandlerError::new(format!("view `{view}`: {e}")))?;
        }
        Ok(())
    }
}

/// Keeps a view generation's checkpoint at its durable consumer's contiguous ack floor — or at
/// the stream's last sequence when nothing is pending (filtered-out messages count as done).
async fn track_checkpoint(
    js: jetstream::Context,
    durable: DurableName,
    checkpoint: Checkpoint,
    on_raise: OnRaise,
    persist: Persist,
) {
    let mut interval = tokio::time::interval(CHECKPOINT_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_read = tokio::time::Instant::now();
    let mut persisted: Option<(u64, tokio::time::Instant)> = None;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = checkpoint.refresh_requested() => {
                // Queries are waiting: refresh now, but at most once per MIN_REFRESH.
                tokio::time::sleep_until(last_read + MIN_REFRESH).await;
            }
        }
        last_read = tokio::time::Instant::now();
        let read = async {
            // Stream first: a message published after this read is not claimed below.
            let events = js.get_stream(stream::AGGREGATE_EVENTS).await.ok()?;
            let last = events.cached_info().state.last_sequence;
            let info = events.consumer_info(durable.as_str()).await.ok()?;
            let mut floor = info.ack_floor.stream_sequence;
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                floor = floor.max(last);
            }
            Some(floor)
        };
        if let Ok(Some(floor)) = tokio::time::timeout(NATS_TIMEOUT, read).await {
            checkpoint.raise(floor);
            let now = checkpoint.get();
            on_raise(now);
            let due = persisted
                .is_none_or(|(value, at)| value != now && at.elapsed() >= PERSIST_INTERVAL);
            if due {
                persist(now).await;
                persisted = Some((now, tokio::time::Instant::now()));
            }
        }
    }
}

/// Writes a checkpoint value to KV for operators (best effort, bounded).
type Persist = Arc<dyn Fn(u64) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Records `<space>.checkpoint` in the checkpoints bucket for each of `spaces`.
fn persist_to(kv: kv::Store, spaces: Vec<(String, u32)>) -> Persist {
    Arc::new(move |sequence| {
        let (kv, spaces) = (kv.clone(), spaces.clone());
        Box::pin(async move {
            let at = cloudlysis_runtime::time::rfc3339(std::time::SystemTime::now());
            for (space, generation) in spaces {
                let record = serde_json::json!({
                    "sequence": sequence,
                    "generation": generation,
                    "updated_at": at,
                });
                let key = buckets::view_checkpoint_key(&space);
                let value = bytes::Bytes::from(record.to_string());
                if let Ok(Err(e)) = tokio::time::timeout(NATS_TIMEOUT, kv.put(&key, value)).await {
                    tracing::debug!(key, error = %e, "recording a view checkpoint");
                }
            }
        })
    })
}

/// A running projection node. Cheap to clone.
#[derive(Clone)]
pub struct ProjectionNode {
    inner: Arc<Inner>,
}

struct Inner {
    mode: ProjectionMode,
    views: HashMap<&'static str, Arc<ViewEntry>>,
    kv: kv::Store,
    js: jetstream::Context,
    root: SupervisorRef,
    controllers: std::sync::Mutex<Vec<AbortOnDrop>>,
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

    /// Starts a rebuild of `view` (see [`crate::view_generation`]).
    pub async fn rebuild(&self, view: &str) -> Result<view_generation::Generations, Status> {
        if self.inner.mode == ProjectionMode::Single {
            return Err(Status::failed_precondition(format!(
                "rebuilding view `{view}` needs PerView mode; this node runs Single mode \
                 ({}=single)",
                MODE.env
            )));
        }
        if !self.inner.views.contains_key(view) {
            validate_token(view).map_err(|e| Status::invalid_argument(format!("view: {e}")))?;
            return Err(Status::not_found(format!(
                "this node runs no view `{view}` (it runs: {})",
                self.view_names().join(", ")
            )));
        }
        view_generation::request_rebuild(&self.inner.js, view)
            .await
            .map_err(rebuild_status)
    }

    /// Cancels the rebuild of `view` in progress (see [`view_generation::cancel_rebuild`]);
    /// returns the record as written and the generation abandoned.
    pub async fn cancel_rebuild(
        &self,
        view: &str,
    ) -> Result<(view_generation::Generations, u32), Status> {
        if !self.inner.views.contains_key(view) {
            validate_token(view).map_err(|e| Status::invalid_argument(format!("view: {e}")))?;
            return Err(Status::not_found(format!(
                "this node runs no view `{view}` (it runs: {})",
                self.view_names().join(", ")
            )));
        }
        view_generation::cancel_rebuild(&self.inner.js, view)
            .await
            .map_err(rebuild_status)
    }

    /// Names of the views this node runs, sorted.
    pub fn view_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.inner.views.keys().copied().collect();
        names.sort_unstable();
        names
    }

    /// The status of every view on this node, sorted by name.
    pub fn describe_views(&self) -> Vec<ViewStatus> {
        self.view_names()
            .into_iter()
            .map(|name| {
                let e = &self.inner.views[name];
                let serving = e.serving();
                let building = e.building();
                ViewStatus {
                    view: name.to_string(),
                    generation: serving.as_ref().map_or(0, |s| s.generation),
                    checkpoint: serving.as_ref().map_or(0, |s| s.checkpoint.get()),
                    rebuilding: building.as_ref().map(|b| b.generation),
                    rebuild_checkpoint: building.as_ref().map(|b| b.checkpoint.get()),
                }
            })
            .collect()
    }

    /// Serves `QueryService`, `NodeAdmin` and gRPC health on `listener` until `shutdown`.
    pub async fn serve_grpc(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<QueryServiceServer<ProjectionNode>>()
            .await;
        let views_admin = ProjectionAdminServer::new(self.clone());
        let admin = NodeAdminService::new(
            "projection",
            uuid::Uuid::new_v4().to_string(),
            self.inner.root.clone(),
        );
        let root = self.inner.root.clone();
        let result = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(admin.into_server())
            .add_service(views_admin)
            .add_service(QueryServiceServer::new(self.clone()))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener)
                    .with_nodelay(Some(true))
                    .with_keepalive(Some(Duration::from_secs(60))),
                shutdown,
            )
            .await;
        self.inner
            .controllers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let _ = root.shutdown(Duration::from_secs(30)).await;
        result
    }

    /// Waits until `view`'s checkpoint reaches `min`, or `deadline`; returns the generation
    /// answering queries and its checkpoint.
    async fn caught_up(
        &self,
        view: &str,
        min: Option<u64>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(u32, u64), Status> {
        let entry = self
            .inner
            .views
            .get(view)
            .ok_or_else(|| Status::not_found(format!("unknown view `{view}`")))?;
        let deadline =
            deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(5));
        loop {
            let serving = entry
                .serving()
                .ok_or_else(|| Status::unavailable(format!("view `{view}` is starting")))?;
            let Some(min) = min else {
                return Ok((serving.generation, serving.checkpoint.get()));
            };
            // Bounded slices, so a switch of generations during the wait is noticed.
            let slice = (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
            let now = serving.checkpoint.wait_for(min, slice).await;
            let still = entry.serving().map(|s| s.generation) == Some(serving.generation);
            if now >= min && still {
                return Ok((serving.generation, now));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::deadline_exceeded(format!(
                    "view `{view}` is at sequence {now}, not yet {min}"
                )));
            }
        }
    }
}

/// Reads the current documents of one tenant in one view generation: an ephemeral pull consumer
/// on the views bucket's stream, filtered to `<space>.<tenant>.>`, last value per key, reading
/// exactly as many messages as it had pending when created. Refuses more than
/// [`MAX_LIST_SCAN`] documents.
async fn scan_documents(
    js: &jetstream::Context,
    space: &str,
    tenant: &str,
) -> Result<Vec<(String, Bytes)>, Status> {
    use jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    let unavailable = |e: &dyn std::fmt::Display| Status::unavailable(e.to_string());
    let docs = js
        .get_stream(buckets::views_stream())
        .await
        .map_err(|e| unavailable(&e))?;
    let subject_prefix = format!("$KV.{}.{space}.{tenant}.", buckets::VIEWS_BUCKET);
    let consumer: PullConsumer = docs
        .create_consumer(pull::Config {
            filter_subject: format!("{subject_prefix}>"),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(&e))?;
    let name = consumer.cached_info().name.clone();
    let mut pending = consumer.cached_info().num_pending;
    let result = async {
        if pending > MAX_LIST_SCAN {
            return Err(Status::failed_precondition(format!(
                "the view holds {pending} documents for this tenant; List reads at most \
                 {MAX_LIST_SCAN}"
            )));
        }
        let mut out = Vec::with_capacity(pending as usize);
        while pending > 0 {
            let mut batch = consumer
                .fetch()
                .max_messages(pending.min(1000) as usize)
                .expires(Duration::from_secs(2))
                .messages()
                .await
                .map_err(|e| unavailable(&e))?;
            let mut got = 0;
            while let Some(m) = batch.next().await {
                let m = m.map_err(|e| unavailable(&e))?;
                got += 1;
                pending -= 1;
                let removed = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("KV-Operation"))
                    .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
                if let Some(key) = m.subject.strip_prefix(subject_prefix.as_str())
                    && !removed
                {
                    out.push((key.to_string(), m.payload.clone()));
                }
                if pending == 0 {
                    break;
                }
            }
            if got == 0 {
                return Err(Status::unavailable("the views bucket stopped delivering"));
            }
        }
        Ok(out)
    }
    .await;
    let _ = tokio::time::timeout(NATS_TIMEOUT, docs.delete_consumer(&name)).await;
    result
}

fn rebuild_status(e: RebuildError) -> Status {
    match e {
        RebuildError::InvalidView { .. } => Status::invalid_argument(e.to_string()),
        RebuildError::InProgress { .. }
        | RebuildError::NotRebuilding { .. }
        | RebuildError::SingleMode(_) => Status::failed_precondition(e.to_string()),
        RebuildError::Contended(_) => Status::aborted(e.to_string()),
        RebuildError::Nats { .. } => Status::unavailable(e.to_string()),
    }
}

fn query_context<T>(
    request: &Request<T>,
) -> Result<(RequestContext, Option<tokio::time::Instant>), Status> {
    let ctx = RequestContext::extract(request.metadata())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let deadline = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::aggregate_node::parse_grpc_timeout)
        .map(|t| tokio::time::Instant::now() + t.saturating_sub(Duration::from_millis(50)));
    Ok((ctx, deadline))
}

fn token(what: &str, v: &str) -> Result<(), Status> {
    validate_token(v).map_err(|e| Status::invalid_argument(format!("{what}: {e}")))
}

#[tonic::async_trait]
impl QueryService for ProjectionNode {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let (ctx, deadline) = query_context(&request)?;
        let req = request.into_inner();
        token("view", &req.view)?;
        token("key", &req.key)?;
        let (generation, checkpoint) = self
            .caught_up(&req.view, req.min_sequence, deadline)
            .await?;
        let key = buckets::view_document_key(
            &buckets::view_space(&req.view, generation),
            ctx.tenant.as_str(),
            &req.key,
        );
        let entry = tokio::time::timeout(Duration::from_secs(5), self.inner.kv.get(&key))
            .await
            .map_err(|_| Status::unavailable("reading the view timed out"))?
            .map_err(|e| Status::unavailable(e.to_string()))?
            .ok_or_else(|| {
                Status::not_found(format!("no document `{}` in view `{}`", req.key, req.view))
            })?;
        let record: DocumentRecord = serde_json::from_slice(&entry)
            .map_err(|e| Status::internal(format!("document does not decode: {e}")))?;
        Ok(Response::new(GetResponse {
            document_json: serde_json::to_vec(&record.doc).unwrap_or_default(),
            checkpoint,
        }))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let (ctx, deadline) = query_context(&request)?;
        let req = request.into_inner();
        token("view", &req.view)?;
        if !req.prefix.is_empty() {
            token("prefix", &req.prefix)?;
        }
        if !req.cursor.is_empty() {
            token("cursor", &req.cursor)?;
        }
        let (generation, checkpoint) = self
            .caught_up(&req.view, req.min_sequence, deadline)
            .await?;
        let page = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        } as usize;
        let space = buckets::view_space(&req.view, generation);
        let scan = tokio::time::timeout(
            LIST_TIMEOUT,
            scan_documents(&self.inner.js, &space, ctx.tenant.as_str()),
        )
        .await
        .map_err(|_| Status::unavailable("listing the view timed out"))??;
        let mut found: Vec<(String, Bytes)> = scan
            .into_iter()
            .filter(|(k, _)| {
                k.starts_with(&req.prefix) && (req.cursor.is_empty() || *k > req.cursor)
            })
            .collect();
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let more = found.len() > page;
        found.truncate(page);
        let next = if more {
            found.last().map(|(k, _)| k.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        let mut documents = Vec::with_capacity(found.len());
        for (key, bytes) in found {
            let record: DocumentRecord = serde_json::from_slice(&bytes)
                .map_err(|e| Status::internal(format!("document {key} does not decode: {e}")))?;
            documents.push(Document {
                key,
                document_json: serde_json::to_vec(&record.doc).unwrap_or_default(),
            });
        }
        Ok(Response::new(ListResponse {
            next_cursor: next,
            documents,
            checkpoint,
        }))
    }
}

#[tonic::async_trait]
impl ProjectionAdmin for ProjectionNode {
    async fn rebuild_view(
        &self,
        request: Request<RebuildViewRequest>,
    ) -> Result<Response<RebuildViewResponse>, Status> {
        let view = request.into_inner().view;
        let gens = self.rebuild(&view).await?;
        Ok(Response::new(RebuildViewResponse {
            generation: gens.building.unwrap_or(gens.active),
            active_generation: gens.active,
        }))
    }

    async fn cancel_rebuild(
        &self,
        request: Request<CancelRebuildRequest>,
    ) -> Result<Response<CancelRebuildResponse>, Status> {
        let view = request.into_inner().view;
        let (gens, cancelled) = self.cancel_rebuild(&view).await?;
        Ok(Response::new(CancelRebuildResponse {
            cancelled_generation: cancelled,
            active_generation: gens.active,
        }))
    }

    async fn describe_views(
        &self,
        _: Request<DescribeViewsRequest>,
    ) -> Result<Response<DescribeViewsResponse>, Status> {
        Ok(Response::new(DescribeViewsResponse {
            views: self.describe_views(),
        }))
    }
}
