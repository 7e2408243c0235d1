//! The aggregate node: hosts registered aggregates and serves
//! `aggregate.gateway.v1.CommandService`, gRPC health and reflection, and `NodeAdmin`.
//!
//! ```no_run
//! # async fn demo(js: async_nats::jetstream::Context) -> Result<(), Box<dyn std::error::Error>> {
//! use cloudlysis_actors::aggregate::AggregateSettings;
//! use cloudlysis_actors::aggregate::node::AggregateNode;
//! # use cloudlysis_actors::aggregate::{Aggregate, CommandContext, Rejection};
//! # struct Account;
//! # impl Aggregate for Account { const TYPE: &'static str = "account"; const SCHEMA_VERSION: u32 = 1;
//! #   type State = (); type Command = (); type Event = ();
//! #   fn handle(_: &(), _: (), _: &CommandContext) -> Result<Vec<()>, Rejection> { Ok(vec![]) }
//! #   fn apply(_: &mut (), _: &()) {} }
//! let node = AggregateNode::builder(js, AggregateSettings::default())
//!     .register::<Account>()          // one line per aggregate
//!     .build()
//!     .await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! // Callers need a credential signed with the deployment's node secret (`node.secret`).
//! let keys = cloudlysis_runtime::credential::NodeKeys::new(b"0123456789abcdef0123456789abcdef")?;
//! node.serve_grpc(listener, keys, std::future::pending()).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use cloudlysis_proto::aggregate::command_service_server::{CommandService, CommandServiceServer};
use cloudlysis_proto::aggregate::{ExecuteRequest, ExecuteResponse};
use cloudlysis_runtime::context::RequestContext;
use cloudlysis_runtime::metrics::names;
use cloudlysis_runtime::subject::validate_token;
use cloudlysis_runtime::{SubjectToken, kv as buckets, stream};
use cloudlysis_supervision::{Backoff, SupervisorConfig, SupervisorRef};
use tonic::{Request, Response, Status};

use super::{Aggregate, AggregateHost, AggregateSettings, CommandError, CommandRequest, Host};
use crate::node_admin::NodeAdminService;

/// gRPC listen address of the aggregate node.
pub const GRPC_ADDR: cloudlysis_runtime::config::Setting = cloudlysis_runtime::config::Setting {
    key: "aggregate.grpc_addr",
    env: "CLOUDLYSIS_GRPC_ADDR",
    flag: "--grpc-addr",
    doc: "gRPC listen address of the aggregate node [default: 127.0.0.1:50051]",
};
/// Entity mailbox capacity.
pub const ENTITY_MAILBOX: cloudlysis_runtime::config::Setting =
    cloudlysis_runtime::config::Setting {
        key: "aggregate.entity_mailbox",
        env: "CLOUDLYSIS_ENTITY_MAILBOX",
        flag: "",
        doc: "entity mailbox capacity (commands queued per entity) [default: 64]",
    };
/// Idle time before an entity is passivated.
pub const IDLE_TIMEOUT_MS: cloudlysis_runtime::config::Setting =
    cloudlysis_runtime::config::Setting {
        key: "aggregate.idle_timeout_ms",
        env: "CLOUDLYSIS_IDLE_TIMEOUT_MS",
        flag: "",
        doc: "idle time before an entity is passivated, milliseconds [default: 300000]",
    };
/// Deadline of one command inside the node.
pub const NODE_COMMAND_TIMEOUT_MS: cloudlysis_runtime::config::Setting =
    cloudlysis_runtime::config::Setting {
        key: "aggregate.command_timeout_ms",
        env: "CLOUDLYSIS_NODE_COMMAND_TIMEOUT_MS",
        flag: "",
        doc: "deadline of one command inside the aggregate node, milliseconds [default: 10000]",
    };

/// Most live entities per aggregate type.
pub const MAX_ENTITIES: cloudlysis_runtime::config::Setting = cloudlysis_runtime::config::Setting {
    key: "aggregate.max_entities",
    env: "CLOUDLYSIS_MAX_ENTITIES",
    flag: "",
    doc: "most live entities per aggregate type; beyond it new entities get 429 [default: 100000]",
};

/// Every aggregate-node setting.
pub const SETTINGS: &[&cloudlysis_runtime::config::Setting] = &[
    &GRPC_ADDR,
    &ENTITY_MAILBOX,
    &IDLE_TIMEOUT_MS,
    &NODE_COMMAND_TIMEOUT_MS,
    &MAX_ENTITIES,
];

impl AggregateSettings {
    /// Reads the settings (env over file over defaults).
    pub fn load(
        src: &cloudlysis_runtime::config::ConfigSource,
    ) -> Result<Self, cloudlysis_runtime::config::ConfigError> {
        let d = Self::default();
        Ok(Self {
            mailbox: src.get_in_range(&ENTITY_MAILBOX, None, d.mailbox as u64, 1, 100_000)?
                as usize,
            idle_timeout: src.get_millis(
                &IDLE_TIMEOUT_MS,
                None,
                d.idle_timeout,
                Duration::from_millis(10),
                Duration::from_secs(24 * 3600),
            )?,
            command_timeout: src.get_millis(
                &NODE_COMMAND_TIMEOUT_MS,
                None,
                d.command_timeout,
                Duration::from_millis(100),
                Duration::from_secs(300),
            )?,
            io_timeout: d.io_timeout,
            max_entities: src.get_in_range(
                &MAX_ENTITIES,
                None,
                d.max_entities as u64,
                1,
                10_000_000,
            )? as usize,
        })
    }
}

/// The aggregate node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// An aggregate type is not a valid subject token.
    #[error("aggregate type `{0}` is not a valid subject token ([A-Za-z0-9_-], at most 128 bytes)")]
    InvalidAggregateType(&'static str),
    /// Two aggregates share a type name.
    #[error("aggregate type `{0}` is registered twice")]
    DuplicateAggregateType(&'static str),
    /// A stream or bucket could not be ensured.
    #[error("{0}")]
    Nats(String),
    /// The supervision tree could not start.
    #[error(transparent)]
    Supervision(#[from] cloudlysis_supervision::SupervisorError),
}

/// The stores a host works with.
struct Stores {
    js: jetstream::Context,
    events: jetstream::stream::Stream,
    idempotency: jetstream::kv::Store,
    snapshots: Option<jetstream::kv::Store>,
}

type Registration =
    Box<dyn FnOnce(Stores, AggregateSettings) -> (&'static str, Arc<dyn Host>) + Send>;

/// Builds an [`AggregateNode`].
pub struct AggregateNodeBuilder {
    js: jetstream::Context,
    settings: AggregateSettings,
    /// Type, whether it takes snapshots, how to build its host.
    registrations: Vec<(&'static str, bool, Registration)>,
}

impl AggregateNodeBuilder {
    /// Registers an aggregate type.
    pub fn register<A: Aggregate>(mut self) -> Self {
        self.registrations.push((
            A::TYPE,
            A::snapshots().is_some(),
            Box::new(|stores: Stores, settings| {
                let host = AggregateHost::<A>::with_snapshots(
                    stores.js,
                    stores.events,
                    stores.idempotency,
                    stores.snapshots,
                    settings,
                );
                (A::TYPE, Arc::new(host) as Arc<dyn Host>)
            }),
        ));
        self
    }

    /// Ensures the event stream and the idempotency bucket (and the snapshot bucket when an
    /// aggregate takes snapshots), starts the supervision tree.
    pub async fn build(self) -> Result<AggregateNode, NodeError> {
        let mut seen = std::collections::HashSet::new();
        for (ty, _, _) in &self.registrations {
            validate_token(ty).map_err(|_| NodeError::InvalidAggregateType(ty))?;
            if !seen.insert(*ty) {
                return Err(NodeError::DuplicateAggregateType(ty));
            }
        }
        stream::ensure_stream(&self.js, &stream::aggregate_events())
            .await
            .map_err(|e| NodeError::Nats(e.to_string()))?;
        let events = self
            .js
            .get_stream(stream::AGGREGATE_EVENTS)
            .await
            .map_err(|e| NodeError::Nats(e.to_string()))?;
        let idem = buckets::ensure_bucket(&self.js, &buckets::idempotency())
            .await
            .map_err(|e| NodeError::Nats(e.to_string()))?;
        let snapshots = if self.registrations.iter().any(|(_, snaps, _)| *snaps) {
            Some(
                buckets::ensure_bucket(&self.js, &buckets::snapshots())
                    .await
                    .map_err(|e| NodeError::Nats(e.to_string()))?,
            )
        } else {
            None
        };
        // The node's root supervisor (its tree is what operators see of the node). Entities
        // are not its children but virtual actors in their hosts (ADR 0012): a panicking
        // command drops only its entity's cached state.
        let root = SupervisorRef::start(
            SupervisorConfig::new("aggregate-node")
                .intensity(100, Duration::from_secs(10))
                .backoff(Backoff::default()),
            None,
        )
        .await?;
        let mut hosts = HashMap::new();
        let mut command_metrics: HashMap<&'static str, CommandMetrics> = HashMap::new();
        for (ty, _, _) in &self.registrations {
            command_metrics.insert(ty, CommandMetrics::new(ty));
            metrics::gauge!(names::ENTITIES, "aggregate_type" => *ty).set(0.0);
        }
        command_metrics.insert("unknown", CommandMetrics::new("unknown"));
        for (_, _, register) in self.registrations {
            let stores = Stores {
                js: self.js.clone(),
                events: events.clone(),
                idempotency: idem.clone(),
                snapshots: snapshots.clone(),
            };
            let (ty, host) = register(stores, self.settings);
            hosts.insert(ty, host);
        }
        Ok(AggregateNode {
            inner: Arc::new(Inner {
                instance: uuid::Uuid::new_v4().to_string(),
                hosts,
                metrics: command_metrics,
                root,
            }),
        })
    }
}

/// The `outcome` labels of `cloudlysis_commands_total`.
pub const COMMAND_OUTCOMES: &[&str] = &[
    "ok",
    "replayed",
    "invalid",
    "unknown_type",
    "rejected",
    "conflict",
    "busy",
    "unavailable",
    "timeout",
    "outcome_unknown",
    "idempotency_key_reused",
];

/// The command series of one aggregate type, made (at 0) when the node starts so it exports
/// them from its start, and kept: a command records into them without a registry look-up or a
/// label allocation.
struct CommandMetrics {
    /// `cloudlysis_commands_total` by outcome, in the order of [`COMMAND_OUTCOMES`].
    outcomes: Vec<metrics::Counter>,
    duration: metrics::Histogram,
}

impl CommandMetrics {
    fn new(ty: &'static str) -> Self {
        let outcomes = COMMAND_OUTCOMES
            .iter()
            .map(|outcome| {
                let c = metrics::counter!(names::COMMANDS, "aggregate_type" => ty, "outcome" => *outcome);
                c.increment(0);
                c
            })
            .collect();
        Self {
            outcomes,
            duration: metrics::histogram!(names::COMMAND_DURATION, "aggregate_type" => ty),
        }
    }

    fn record(&self, outcome: &str, took: Duration) {
        if let Some(i) = COMMAND_OUTCOMES.iter().position(|o| *o == outcome) {
            self.outcomes[i].increment(1);
        }
        self.duration.record(took.as_secs_f64());
    }
}

/// A running aggregate node. Cheap to clone.
#[derive(Clone)]
pub struct AggregateNode {
    inner: Arc<Inner>,
}

struct Inner {
    /// This node's id in `NodeAdmin` answers (the same over gRPC and in process).
    instance: String,
    hosts: HashMap<&'static str, Arc<dyn Host>>,
    /// By aggregate type, and `unknown` for a type the node does not host.
    metrics: HashMap<&'static str, CommandMetrics>,
    root: SupervisorRef,
}

impl AggregateNode {
    /// A builder on `js` (whose timeout bounds JetStream API calls).
    pub fn builder(js: jetstream::Context, settings: AggregateSettings) -> AggregateNodeBuilder {
        AggregateNodeBuilder {
            js,
            settings,
            registrations: Vec::new(),
        }
    }

    /// The root supervisor. Entities are not its children: they are virtual actors in their
    /// hosts (ADR 0012; see [`AggregateNode::live_entities`]).
    pub fn supervisor(&self) -> &SupervisorRef {
        &self.inner.root
    }

    /// The live entities of aggregate type `ty` (`tenant.id` keys, unordered); empty for an
    /// unknown type.
    pub fn live_entities(&self, ty: &str) -> Vec<String> {
        self.inner
            .hosts
            .get(ty)
            .map(|h| h.live())
            .unwrap_or_default()
    }

    /// Registered aggregate types.
    pub fn aggregate_types(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.inner.hosts.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Runs one command (what `CommandService/Execute` does after decoding).
    pub async fn execute(
        &self,
        aggregate_type: &str,
        req: CommandRequest,
    ) -> Result<super::ExecuteReply, CommandError> {
        let host = self
            .inner
            .hosts
            .get(aggregate_type)
            .ok_or_else(|| CommandError::UnknownAggregate(aggregate_type.to_string()))?;
        host.execute(req).await
    }

    /// The node's `NodeAdmin` service.
    fn admin(&self) -> NodeAdminService {
        NodeAdminService::new(
            "aggregate",
            self.inner.instance.clone(),
            self.inner.root.clone(),
        )
        .behaviours(self.aggregate_types())
    }

    /// The node's services for callers in this process — `CommandService`, `NodeAdmin`, gRPC
    /// health — behind the layers [`AggregateNode::serve_grpc`] puts in front of them, with
    /// `serving`'s keys and count of calls in flight (pass the `NodeServing` the server gets,
    /// so both count against one `node.max_in_flight`). See [`cloudlysis_runtime::local`].
    pub async fn local(
        &self,
        serving: &cloudlysis_runtime::admission::NodeServing,
    ) -> cloudlysis_runtime::local::LocalNode {
        let command: Arc<dyn CommandService> = Arc::new(self.clone());
        cloudlysis_runtime::local::LocalNode::new(self.routes(serving).await, serving)
            .with_typed(command)
    }

    /// The node's services: `CommandService`, `NodeAdmin`, gRPC health (following `serving`'s
    /// readiness, see [`crate::health`]).
    async fn routes(
        &self,
        serving: &cloudlysis_runtime::admission::NodeServing,
    ) -> tonic::service::Routes {
        let (health, _) = tonic_health::server::health_reporter();
        health
            .set_serving::<CommandServiceServer<AggregateNode>>()
            .await;
        let health_service = crate::health::NodeHealth::server(&health, serving.readiness());
        tonic::service::Routes::new(health_service)
            .add_service(self.admin().into_server())
            .add_service(CommandServiceServer::new(self.clone()))
    }

    /// Serves `CommandService`, `NodeAdmin`, gRPC health and reflection on `listener` until
    /// `shutdown` resolves ([`crate::grpc::serve`]); then stops the supervision tree. Calls need
    /// a node credential verified by `serving.keys` (see [`cloudlysis_runtime::credential`]) and
    /// a place within `serving.max_in_flight` ([`cloudlysis_runtime::admission`]).
    pub async fn serve_grpc(
        self,
        listener: tokio::net::TcpListener,
        serving: impl Into<cloudlysis_runtime::admission::NodeServing>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let serving = serving.into();
        let result =
            crate::grpc::serve(self.routes(&serving).await, &serving, listener, shutdown).await;
        // Idempotency records still being written land before the node leaves.
        self.flush_records(Duration::from_secs(10)).await;
        let _ = self.inner.root.shutdown(Duration::from_secs(30)).await;
        result
    }

    /// Waits for the idempotency records still being written after their commands' answers
    /// (each write is bounded by the node's I/O timeout), at most `timeout`; false, with a
    /// warning, when some were not finished. [`AggregateNode::serve_grpc`] calls it when it
    /// stops; a node embedded otherwise calls it before it exits.
    pub async fn flush_records(&self, timeout: Duration) -> bool {
        let mut all = true;
        for (ty, host) in &self.inner.hosts {
            if !host.flush(timeout).await {
                tracing::warn!(
                    aggregate_type = ty,
                    "idempotency records still being written after {timeout:?}"
                );
                all = false;
            }
        }
        all
    }
}

#[tonic::async_trait]
impl CommandService for AggregateNode {
    async fn execute(
        &self,
        request: Request<ExecuteRequest>,
    ) -> Result<Response<ExecuteResponse>, Status> {
        let started = std::time::Instant::now();
        let started_at = std::time::SystemTime::now();
        // Decide within the caller's deadline (minus a margin to answer in time).
        let deadline = crate::grpc::deadline(request.metadata());
        cloudlysis_runtime::credential::Caller::of(&request)?
            .require("commands", &request.get_ref().aggregate_type)?;
        let ctx = RequestContext::extract(request.metadata())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let req = request.into_inner();
        let ty = SubjectToken::new(req.aggregate_type.clone())
            .map_err(|e| Status::invalid_argument(format!("aggregate_type: {e}")))?;
        let id = SubjectToken::new(req.aggregate_id)
            .map_err(|e| Status::invalid_argument(format!("aggregate_id: {e}")))?;
        if let Some(key) = &ctx.idempotency_key {
            validate_token(key)
                .map_err(|e| Status::invalid_argument(format!("idempotency key: {e}")))?;
        }
        // The label is bounded: only registered types are named, others count as unknown.
        let label = self
            .inner
            .hosts
            .get_key_value(ty.as_str())
            .map_or("unknown", |(k, _)| *k);
        let traceparent = ctx.traceparent;
        let result = AggregateNode::execute(
            self,
            ty.as_str(),
            CommandRequest {
                ctx,
                aggregate_id: id,
                command_type: req.command_type,
                payload: req.payload_json.into(),
                expected_version: req.expected_version,
                deadline,
            },
        )
        .await;
        let outcome = match &result {
            Ok(r) if r.replayed => "replayed",
            Ok(_) => "ok",
            Err(CommandError::InvalidArgument(_)) => "invalid",
            Err(CommandError::UnknownAggregate(_)) => "unknown_type",
            Err(CommandError::Rejected(_)) => "rejected",
            Err(CommandError::Conflict(_)) => "conflict",
            Err(CommandError::Busy(_)) => "busy",
            Err(CommandError::Unavailable(_)) => "unavailable",
            Err(CommandError::Timeout(_)) => "timeout",
            Err(CommandError::OutcomeUnknown(_)) => "outcome_unknown",
            Err(CommandError::IdempotencyKeyReused(_)) => "idempotency_key_reused",
        };
        if let Some(m) = self.inner.metrics.get(label) {
            m.record(outcome, started.elapsed());
        }
        cloudlysis_runtime::telemetry::record(
            cloudlysis_runtime::telemetry::Kind::Server,
            &traceparent,
            started_at,
            || {
                (
                    format!("CommandService/Execute {label}"),
                    vec![
                        opentelemetry::KeyValue::new("cloudlysis.role", "aggregate"),
                        opentelemetry::KeyValue::new("cloudlysis.outcome", outcome),
                    ],
                )
            },
        );
        let reply = result.map_err(|e| e.to_status())?;
        Ok(Response::new(ExecuteResponse {
            version: reply.version,
            event_ids: reply.event_ids,
            stream_sequence: reply.stream_sequence,
            replayed: reply.replayed,
        }))
    }
}
