//! The projection node: runs registered views — one durable consumer per view (PerView mode) —
//! tracks each view's checkpoint, and serves `projection.gateway.v1.QueryService`.
//!
//! Queries take the tenant from gRPC metadata only and read keys under `<view>.<tenant>.`, so no
//! query can reach another tenant's documents. `min_sequence` waits (up to the call's deadline)
//! until the view's checkpoint has reached it: read-your-writes after a command.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, kv};
use cloudlysis_proto::projection::query_service_server::{QueryService, QueryServiceServer};
use cloudlysis_proto::projection::{Document, GetRequest, GetResponse, ListRequest, ListResponse};
use cloudlysis_runtime::consumer::{ConsumerPolicy, ConsumerSettings, DurableName};
use cloudlysis_runtime::context::RequestContext;
use cloudlysis_runtime::subject::{SubjectToken, filter, validate_token};
use cloudlysis_runtime::{kv as buckets, stream};
use cloudlysis_supervision::{ChildSpec, SupervisorConfig, SupervisorRef};
use futures::StreamExt;
use tonic::{Request, Response, Status};

use crate::consumer::{self, CheckpointFn};
use crate::node_admin::NodeAdminService;
use crate::view::{Checkpoint, DocumentRecord, View, ViewHandler, ViewStore};

/// gRPC listen address of the projection node.
pub const GRPC_ADDR: cloudlysis_runtime::config::Setting = cloudlysis_runtime::config::Setting {
    key: "projection.grpc_addr",
    env: "CLOUDLYSIS_PROJECTION_GRPC_ADDR",
    flag: "--grpc-addr",
    doc: "gRPC listen address of the projection node [default: 127.0.0.1:50052]",
};

/// How often a view's checkpoint is refreshed from its durable consumer.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);
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
    /// The supervision tree could not start.
    #[error(transparent)]
    Supervision(#[from] cloudlysis_supervision::SupervisorError),
}

type Starter = Box<dyn FnOnce(&Ctx) -> Started + Send>;

struct Started {
    spec: ChildSpec,
    checkpoint: Checkpoint,
    durable: DurableName,
    commits: Arc<std::sync::atomic::AtomicU64>,
}

struct Ctx {
    js: jetstream::Context,
    views: kv::Store,
    settings: ConsumerSettings,
}

/// Builds a [`ProjectionNode`].
pub struct ProjectionNodeBuilder {
    js: jetstream::Context,
    settings: ConsumerSettings,
    views: Vec<(&'static str, Starter)>,
}

impl ProjectionNodeBuilder {
    /// Registers a view.
    pub fn register<V: View>(mut self) -> Self {
        self.views.push((
            V::NAME,
            Box::new(|ctx: &Ctx| {
                let checkpoint = Checkpoint::default();
                let store = ViewStore::<V>::new(
                    ctx.views.clone(),
                    checkpoint.clone(),
                    Duration::from_secs(5),
                );
                let commits = store.commits_applied();
                let name = SubjectToken::new(V::NAME)
                    .unwrap_or_else(|_| unreachable!("validated in build"));
                let durable = DurableName::projection_view(&name);
                let filters = V::aggregate_types()
                    .iter()
                    .filter_map(|t| SubjectToken::new(*t).ok())
                    .map(|t| filter::aggregate_type_events(&t))
                    .collect();
                let policy = ConsumerPolicy {
                    durable: durable.clone(),
                    filter_subjects: filters,
                    settings: ctx.settings,
                };
                let gate = checkpoint.clone();
                let skip: CheckpointFn = Arc::new(move |meta| {
                    let applied = meta.stream_sequence <= gate.get();
                    Box::pin(async move { applied })
                });
                let (tree, _handle) = consumer::supervised(
                    format!("view-{}", V::NAME),
                    ctx.js.clone(),
                    stream::AGGREGATE_EVENTS,
                    policy,
                    Some(skip),
                    move || ViewHandler(store.clone()),
                );
                Started {
                    spec: ChildSpec::supervisor(tree),
                    checkpoint,
                    durable,
                    commits,
                }
            }),
        ));
        self
    }

    /// Ensures the stream and buckets, starts every view's consumer and checkpoint tracker.
    pub async fn build(self) -> Result<ProjectionNode, ProjectionError> {
        let mut seen = std::collections::HashSet::new();
        for (name, _) in &self.views {
            if validate_token(name).is_err() || !seen.insert(*name) {
                return Err(ProjectionError::InvalidView(name));
            }
        }
        let nats = |e: &dyn std::fmt::Display| ProjectionError::Nats(e.to_string());
        stream::ensure_stream(&self.js, &stream::aggregate_events())
            .await
            .map_err(|e| nats(&e))?;
        let views_kv = buckets::ensure_bucket(&self.js, &buckets::views())
            .await
            .map_err(|e| nats(&e))?;
        let ctx = Ctx {
            js: self.js.clone(),
            views: views_kv.clone(),
            settings: self.settings,
        };
        let mut config = SupervisorConfig::new("projection-node");
        let mut views = HashMap::new();
        let mut trackers = Vec::new();
        for (name, start) in self.views {
            let started = start(&ctx);
            config = config.child(started.spec);
            trackers.push(tokio::spawn(track_checkpoint(
                self.js.clone(),
                started.durable,
                started.checkpoint.clone(),
            )));
            views.insert(name, (started.checkpoint, started.commits));
        }
        let root = SupervisorRef::start(config, None).await?;
        Ok(ProjectionNode {
            inner: Arc::new(Inner {
                views,
                kv: views_kv,
                root,
                trackers,
            }),
        })
    }
}

/// Keeps a view's checkpoint at the durable consumer's contiguous ack floor — or at the stream's
/// last sequence when nothing is pending (filtered-out messages count as done).
async fn track_checkpoint(js: jetstream::Context, durable: DurableName, checkpoint: Checkpoint) {
    let mut interval = tokio::time::interval(CHECKPOINT_INTERVAL);
    loop {
        interval.tick().await;
        let Ok(mut events) = js.get_stream(stream::AGGREGATE_EVENTS).await else {
            continue;
        };
        // Stream first: a message published after this read is not claimed below.
        let Ok(last) = events.info().await.map(|i| i.state.last_sequence) else {
            continue;
        };
        let Ok(mut consumer) = events
            .get_consumer::<jetstream::consumer::pull::Config>(durable.as_str())
            .await
        else {
            continue;
        };
        let consumer: &mut PullConsumer = &mut consumer;
        if let Ok(info) = consumer.info().await {
            let mut floor = info.ack_floor.stream_sequence;
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                floor = floor.max(last);
            }
            checkpoint.raise(floor);
        }
    }
}

/// A running projection node. Cheap to clone.
#[derive(Clone)]
pub struct ProjectionNode {
    inner: Arc<Inner>,
}

struct Inner {
    views: HashMap<&'static str, (Checkpoint, Arc<std::sync::atomic::AtomicU64>)>,
    kv: kv::Store,
    root: SupervisorRef,
    trackers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.trackers {
            t.abort();
        }
    }
}

impl ProjectionNode {
    /// A builder on `js`, with the consumer settings of the projection role.
    pub fn builder(js: jetstream::Context, settings: ConsumerSettings) -> ProjectionNodeBuilder {
        ProjectionNodeBuilder {
            js,
            settings,
            views: Vec::new(),
        }
    }

    /// The root supervisor.
    pub fn supervisor(&self) -> &SupervisorRef {
        &self.inner.root
    }

    /// A view's checkpoint (`None` for an unknown view).
    pub fn checkpoint(&self, view: &str) -> Option<u64> {
        self.inner.views.get(view).map(|(c, _)| c.get())
    }

    /// Commits this node applied to a view (`None` for an unknown view).
    pub fn commits_applied(&self, view: &str) -> Option<u64> {
        self.inner
            .views
            .get(view)
            .map(|(_, n)| n.load(std::sync::atomic::Ordering::Relaxed))
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
        let admin = NodeAdminService::new(
            "projection",
            uuid::Uuid::new_v4().to_string(),
            self.inner.root.clone(),
        );
        let root = self.inner.root.clone();
        let result = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(admin.into_server())
            .add_service(QueryServiceServer::new(self))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener)
                    .with_nodelay(Some(true))
                    .with_keepalive(Some(Duration::from_secs(60))),
                shutdown,
            )
            .await;
        let _ = root.shutdown(Duration::from_secs(30)).await;
        result
    }

    /// Waits until `view`'s checkpoint reaches `min`, or `deadline`.
    async fn caught_up(
        &self,
        view: &str,
        min: Option<u64>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<u64, Status> {
        let (cp, _) = self
            .inner
            .views
            .get(view)
            .ok_or_else(|| Status::not_found(format!("unknown view `{view}`")))?;
        let Some(min) = min else { return Ok(cp.get()) };
        let deadline =
            deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(5));
        loop {
            let now = cp.get();
            if now >= min {
                return Ok(now);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::deadline_exceeded(format!(
                    "view `{view}` is at sequence {now}, not yet {min}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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
        let checkpoint = self
            .caught_up(&req.view, req.min_sequence, deadline)
            .await?;
        let key = buckets::view_document_key(&req.view, ctx.tenant.as_str(), &req.key);
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
        let checkpoint = self
            .caught_up(&req.view, req.min_sequence, deadline)
            .await?;
        let page = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        } as usize;
        let base = format!("{}.{}.", req.view, ctx.tenant);
        let listing = async {
            let mut keys: Vec<String> = Vec::new();
            let mut stream = self
                .inner
                .kv
                .keys()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            while let Some(k) = stream.next().await {
                let k = k.map_err(|e| Status::unavailable(e.to_string()))?;
                if let Some(doc_key) = k.strip_prefix(&base)
                    && doc_key.starts_with(&req.prefix)
                    && (req.cursor.is_empty() || doc_key > req.cursor.as_str())
                {
                    keys.push(doc_key.to_string());
                }
            }
            Ok::<_, Status>(keys)
        };
        let mut keys = tokio::time::timeout(Duration::from_secs(10), listing)
            .await
            .map_err(|_| Status::unavailable("listing the view timed out"))??;
        keys.sort_unstable();
        let more = keys.len() > page;
        keys.truncate(page);
        let mut documents = Vec::with_capacity(keys.len());
        for k in &keys {
            if let Ok(Some(bytes)) = self.inner.kv.get(format!("{base}{k}")).await
                && let Ok(record) = serde_json::from_slice::<DocumentRecord>(&bytes)
            {
                documents.push(Document {
                    key: k.clone(),
                    document_json: serde_json::to_vec(&record.doc).unwrap_or_default(),
                });
            }
        }
        Ok(Response::new(ListResponse {
            next_cursor: if more {
                keys.last().cloned().unwrap_or_default()
            } else {
                String::new()
            },
            documents,
            checkpoint,
        }))
    }
}
