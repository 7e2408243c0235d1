//! The Cloudlysis Gateway: the HTTP/JSON edge. It authenticates every request (HS256 bearer
//! tokens), authorizes it deny-by-default per route, pins the tenant to the token's, validates
//! every path token, and routes to nodes over gRPC with deadlines. Errors are RFC 9457
//! `application/problem+json`.
//!
//! Layout:
//! - [`admission`] — per-tenant fair admission of API requests (429 / 503 with `Retry-After`).
//! - [`auth`] — tokens, rights, TTL parsing.
//! - [`config`] — settings.
//! - [`problem`] — problem details.
//! - `commands` — `POST /v1/commands/{aggregate_type}/{aggregate_id}`.
//! - `queries` — `GET /v1/query/{view}/{key}` and `GET /v1/query/{view}?prefix=&limit=&cursor=`.
//! - `workflows` — start, read, list and operate workflow instances (`/v1/workflows/...`).
//! - `runner_admin` — runner node drain, undrain, status and reload (`/admin/runner/...`).
//! - `admin` — the operator routes of the Control UI (`/admin/whoami`, nodes, supervision,
//!   views, poison, audit; `docs/control-api.md`).
//! - [`probe`] — the probe fan-out actor (bounded mailbox, concurrency limit, deadline, cache)
//!   behind `/admin/nodes` and `/admin/supervision`.
//! - `ui` — the Control UI's built files at `/ui` (`gateway.ui_dir`).
//!
//! Never depends on `cloudlysis-actors`: nodes are reached only through `cloudlysis-proto`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;

pub mod admission;
pub mod auth;
pub mod config;
pub mod oidc;
pub mod probe;
pub mod problem;
pub mod readiness;
mod request_metrics;
pub mod upstream;

mod admin;
mod commands;
mod extract;
mod queries;
mod runner_admin;
mod ui;
mod workflows;

pub use auth::{Authenticator, Claims};
pub use config::GatewaySettings;

/// The Gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The token secret is unusable.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// The node secret is unusable.
    #[error(transparent)]
    Credential(#[from] cloudlysis_runtime::credential::CredentialError),
    /// The node registry could not be watched.
    #[error("node registry: {0}")]
    Registry(String),
    /// A node address is not a valid endpoint.
    #[error("invalid node address {addr}: {reason}")]
    Endpoint {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// The `route` labels of the Gateway's request durations (requests are also counted as
/// `unreadable`, with no duration: see `extract`).
pub const ROUTES: &[&str] = &[
    "commands",
    "query_get",
    "query_list",
    "workflows_start",
    "workflows_get",
    "workflows_list",
    "workflows_operate",
    "admin_runner",
    "admin",
    problem::UNROUTED,
];

/// Registers the Gateway's series whose labels are known before any request (request counts
/// carry the response status, so they appear with the first response of each status).
fn register_metrics() {
    use cloudlysis_runtime::metrics::names;
    for route in ROUTES {
        let _ = metrics::histogram!(names::GATEWAY_REQUEST_DURATION, "route" => *route);
    }
    metrics::gauge!(names::GATEWAY_IN_FLIGHT).set(0.0);
    upstream::retry::register_metrics();
    upstream::pool::register_metrics();
    for result in ["fanout", "cached", "rejected"] {
        metrics::counter!(names::GATEWAY_PROBES, "result" => result).increment(0);
    }
    for role in ["aggregate", "projection", "runner"] {
        for why in cloudlysis_runtime::outcome::NotTaken::ALL {
            metrics::counter!(names::GATEWAY_NODE_UNREACHABLE, "role" => role, "reason" => why.label())
                .increment(0);
        }
    }
    for outcome in ["hit", "miss"] {
        metrics::counter!(names::GATEWAY_TOKEN_CACHE, "outcome" => outcome).increment(0);
    }
    metrics::counter!(names::GATEWAY_HANDLER_PANICS).increment(0);
    cloudlysis_runtime::credential::register_cache_metrics(&["signed"]);
}

/// The subject of the Gateway's own node credentials (probes).
pub const SERVICE_SUBJECT: &str = "cloudlysis-gateway";

/// What a call to a node carries: the request context and the caller's node credential.
#[derive(Clone, Debug)]
pub struct NodeCall {
    /// Tenant, correlation, trace, idempotency key.
    pub ctx: cloudlysis_runtime::context::RequestContext,
    /// The signed node credential.
    pub credential: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl NodeCall {
    /// Puts the context and the credential into a request's metadata.
    pub fn inject(&self, metadata: &mut tonic::metadata::MetadataMap) {
        self.ctx.inject(metadata);
        metadata.insert(
            cloudlysis_runtime::context::headers::NODE_CREDENTIAL,
            self.credential.clone(),
        );
    }
}

/// A Gateway: settings, token verifier and node channels. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    settings: GatewaySettings,
    auth: Authenticator,
    /// Signs the node credential of every call to a node.
    keys: cloudlysis_runtime::credential::NodeKeys,
    /// The retry throttle of every call to a node.
    throttle: upstream::retry::RetryThrottle,
    /// Placement from the node registry, once [`Gateway::use_registry`] ran (else the static
    /// addresses of the settings).
    placement: std::sync::OnceLock<Arc<upstream::placement::Placement>>,
    aggregate: cloudlysis_runtime::local::NodeChannel,
    projection: cloudlysis_runtime::local::NodeChannel,
    /// Every runner node: its address and channel (`gateway.runner_addr`, comma separated).
    runners: Vec<(String, cloudlysis_runtime::local::NodeChannel)>,
    /// Admission: at most `max_in_flight` API requests at once, shared fairly by tenants.
    admission: Arc<admission::Admission>,
    in_flight: metrics::Gauge,
    /// Every node the Gateway routes to, for the probe fan-out.
    targets: Vec<probe::Target>,
    /// Nodes in this process by address (see [`Gateway::with_local_nodes`]).
    locals: Arc<std::collections::HashMap<String, cloudlysis_runtime::local::LocalNode>>,
    /// Fan-outs the probe actor made.
    fanouts: Arc<std::sync::atomic::AtomicU64>,
    /// The Gateway's supervisor (the probe fan-out; with registry placement the channel pool
    /// and the placement watcher too), started on first use.
    tree: tokio::sync::OnceCell<cloudlysis_supervision::SupervisorRef>,
    /// The probe fan-out actor's mailbox, once started.
    probe: tokio::sync::OnceCell<cloudlysis_runtime::mailbox::BoundedRef<probe::ProbeMsg>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The actors go with the last handle of the Gateway.
        if let Some(tree) = self.tree.get() {
            tree.cell().stop(Some("the Gateway was dropped".into()));
        }
    }
}

impl Gateway {
    /// Builds a Gateway. Node channels connect lazily and reconnect by themselves.
    pub fn new(settings: GatewaySettings) -> Result<Self, GatewayError> {
        Self::with_local_nodes(settings, std::collections::HashMap::new())
    }

    /// [`Gateway::new`] in a process that also hosts nodes: a call to one of `locals`'
    /// addresses (as the settings or the node registry name them, e.g. `http://127.0.0.1:50051`)
    /// goes to that node in this process, without the network
    /// ([`cloudlysis_runtime::local`]); any other address is called over gRPC as usual.
    pub fn with_local_nodes(
        settings: GatewaySettings,
        locals: std::collections::HashMap<String, cloudlysis_runtime::local::LocalNode>,
    ) -> Result<Self, GatewayError> {
        let locals = Arc::new(locals);
        let auth =
            Authenticator::new(settings.jwt_secret.as_bytes())?.with_oidc(settings.oidc.clone())?;
        let keys = cloudlysis_runtime::credential::NodeKeys::new(settings.node_secret.as_bytes())?;
        let channel = |addr: &str| -> Result<cloudlysis_runtime::local::NodeChannel, GatewayError> {
            if let Some(local) = locals.get(addr) {
                return Ok(cloudlysis_runtime::local::NodeChannel::Local(local.clone()));
            }
            Ok(settings
                .node_tls
                .endpoint(addr)
                .map_err(|e| GatewayError::Endpoint {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })?
                .connect_timeout(Duration::from_secs(2))
                // No channel-wide timeout: every call carries its own deadline (a List's 10 s
                // must not be cut to the command timeout).
                .tcp_nodelay(true)
                .connect_lazy()
                .into())
        };
        register_metrics();
        let aggregate = channel(&settings.aggregate_addr)?;
        let projection = channel(&settings.projection_addr)?;
        let runners = settings
            .runner_addrs()
            .into_iter()
            .map(|a| channel(&a).map(|c| (a, c)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut targets = vec![
            probe::Target {
                role: "aggregate",
                address: settings.aggregate_addr.clone(),
                channel: aggregate.clone(),
            },
            probe::Target {
                role: "projection",
                address: settings.projection_addr.clone(),
                channel: projection.clone(),
            },
        ];
        targets.extend(runners.iter().map(|(address, channel)| probe::Target {
            role: "runner",
            address: address.clone(),
            channel: channel.clone(),
        }));
        // Which static addresses this Gateway calls in its own process.
        for role in ["aggregate", "projection", "runner"] {
            let local = targets
                .iter()
                .filter(|t| t.role == role && t.channel.is_local())
                .count();
            metrics::gauge!(cloudlysis_runtime::metrics::names::GATEWAY_LOCAL_NODES, "role" => role).set(local as f64);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                auth,
                keys,
                throttle: upstream::retry::RetryThrottle::default(),
                placement: std::sync::OnceLock::new(),
                aggregate,
                projection,
                runners,
                targets,
                locals,
                fanouts: Arc::default(),
                tree: tokio::sync::OnceCell::new(),
                probe: tokio::sync::OnceCell::new(),
                admission: admission::Admission::new(
                    settings.max_in_flight,
                    settings
                        .tenant_max_in_flight
                        .unwrap_or(settings.max_in_flight),
                    settings
                        .tenant_weights
                        .iter()
                        .map(|(k, v)| (k.clone(), *v))
                        .collect(),
                ),
                in_flight: metrics::gauge!(cloudlysis_runtime::metrics::names::GATEWAY_IN_FLIGHT),
                settings,
            }),
        })
    }

    /// A node credential for the caller of `claims` (its subject and tenant) carrying only
    /// `right` — the one the call needs, which the caller's rights were checked to grant — signed
    /// for [`cloudlysis_runtime::credential::DEFAULT_TTL`]: a credential sent for a query cannot
    /// run a command or an admin verb.
    pub(crate) fn credential(
        &self,
        claims: &auth::Claims,
        right: &str,
    ) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, problem::Problem> {
        self.sign(&claims.sub, &claims.tenant, &[right.to_string()])
    }

    /// The Gateway's own credential for calls made for no tenant (probes), with `rights`.
    pub(crate) fn service_credential(
        &self,
        rights: &[String],
    ) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, problem::Problem> {
        self.sign(
            SERVICE_SUBJECT,
            cloudlysis_runtime::credential::SYSTEM_TENANT,
            rights,
        )
    }

    fn sign(
        &self,
        subject: &str,
        tenant: &str,
        rights: &[String],
    ) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, problem::Problem> {
        self.inner
            .keys
            .sign(subject, tenant, rights)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| {
                problem::Problem::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the node credential could not be signed",
                )
            })
    }

    /// Routes by the node registry of `js` from now on (`gateway.placement = registry`):
    /// commands by entity to the aggregate node rendezvous picks, reads to the least loaded
    /// projection node, runner calls in rendezvous order (see [`upstream::placement`]). Starts
    /// the channel-pool and placement-watcher actors in the Gateway's tree.
    pub async fn use_registry(
        &self,
        js: async_nats::jetstream::Context,
    ) -> Result<Arc<upstream::placement::Placement>, GatewayError> {
        use cloudlysis_supervision::ChildSpec;
        use upstream::placement::{Placement, WATCH_KIND, WATCH_MAILBOX, Watcher};
        let registry = |e: String| GatewayError::Registry(e);
        let kv = cloudlysis_runtime::kv::ensure_bucket(&js, &cloudlysis_runtime::registry::nodes())
            .await
            .map_err(|e| registry(e.to_string()))?;
        let pool = upstream::pool::ChannelPool::new(
            self.inner.settings.node_tls.clone(),
            Duration::from_secs(2),
        )
        .with_locals(self.inner.locals.clone());
        let placement = Arc::new(Placement::new(pool.clone()));
        let tree = self.tree().await.map_err(registry)?;
        let actor_pool = pool.clone();
        tree.start_child(ChildSpec::bounded(
            "channel-pool",
            pool.mailbox(),
            move || (actor_pool.actor(), ()),
        ))
        .await
        .map_err(|e| registry(e.to_string()))?;
        let watched = placement.clone();
        tree.start_child(ChildSpec::bounded(
            "placement-watcher",
            cloudlysis_runtime::mailbox::BoundedRef::new(WATCH_KIND, WATCH_MAILBOX),
            move || {
                (
                    Watcher {
                        placement: watched.clone(),
                        kv: kv.clone(),
                    },
                    (),
                )
            },
        ))
        .await
        .map_err(|e| registry(e.to_string()))?;
        let _ = self.inner.placement.set(placement.clone());
        Ok(placement)
    }

    /// The Gateway's supervisor, started the first time.
    async fn tree(&self) -> Result<cloudlysis_supervision::SupervisorRef, String> {
        use cloudlysis_supervision::{SupervisorConfig, SupervisorRef};
        self.inner
            .tree
            .get_or_try_init(|| async {
                SupervisorRef::start(SupervisorConfig::new("gateway"), None)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
            .cloned()
    }

    /// The registry placement, when the Gateway routes by it.
    pub fn placement(&self) -> Option<&Arc<upstream::placement::Placement>> {
        self.inner.placement.get()
    }

    fn no_node(role: &str, what: &str) -> problem::Problem {
        problem::Problem::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("no live {role} node {what}; nothing was sent"),
        )
        .retry_after(1)
    }

    fn pooled(
        p: &upstream::placement::Placement,
        node: &cloudlysis_runtime::registry::NodeEntry,
    ) -> Result<cloudlysis_runtime::local::NodeChannel, problem::Problem> {
        p.pool.get(&node.grpc_addr).map_err(|e| {
            problem::Problem::new(axum::http::StatusCode::BAD_GATEWAY, "node-error", e)
        })
    }

    /// With registry placement, the channel to the aggregate node that owns one entity — in
    /// this process or not — as this Gateway's commands for it use, or why there is none (static
    /// placement, no live node serves `ty`, the channel pool refused). For a runner in the
    /// Gateway's process (`CommandClient::placed`).
    pub fn placed_aggregate_channel(
        &self,
        tenant: &str,
        ty: &str,
        id: &str,
    ) -> Result<cloudlysis_runtime::local::NodeChannel, String> {
        if self.placement().is_none() {
            return Err("the Gateway does not place by the node registry".into());
        }
        self.aggregate_channel(tenant, ty, id).map_err(|p| p.detail)
    }

    /// The channel to the aggregate node of one entity.
    pub(crate) fn aggregate_channel(
        &self,
        tenant: &str,
        ty: &str,
        id: &str,
    ) -> Result<cloudlysis_runtime::local::NodeChannel, problem::Problem> {
        let Some(p) = self.placement() else {
            return Ok(self.inner.aggregate.clone());
        };
        let node = p
            .aggregate_for(tenant, ty, id)
            .ok_or_else(|| Self::no_node("aggregate", &format!("serves `{ty}`")))?;
        Self::pooled(p, &node)
    }

    /// The channel to a projection node serving `view`.
    pub(crate) fn projection_channel(
        &self,
        view: &str,
    ) -> Result<cloudlysis_runtime::local::NodeChannel, problem::Problem> {
        let Some(p) = self.placement() else {
            return Ok(self.inner.projection.clone());
        };
        let node = p
            .projection_for(view)
            .ok_or_else(|| Self::no_node("projection", &format!("serves view `{view}`")))?;
        Self::pooled(p, &node)
    }

    /// The channel for operator calls to a projection node (views, rebuilds, poison, audit:
    /// every node answers them from shared KV): the least loaded live one under registry
    /// placement, else `gateway.projection_addr`.
    pub(crate) fn admin_projection_channel(
        &self,
    ) -> Result<cloudlysis_runtime::local::NodeChannel, problem::Problem> {
        let Some(p) = self.placement() else {
            return Ok(self.inner.projection.clone());
        };
        let node = p
            .any_projection()
            .ok_or_else(|| Self::no_node("projection", "is registered"))?;
        Self::pooled(p, &node)
    }

    /// The runners to try for `key`, first choice first.
    pub(crate) fn runner_channels(
        &self,
        key: &str,
    ) -> Vec<(String, cloudlysis_runtime::local::NodeChannel)> {
        let Some(p) = self.placement() else {
            return self.inner.runners.clone();
        };
        p.runners_for(key)
            .into_iter()
            .filter_map(|n| {
                p.pool
                    .get(&n.grpc_addr)
                    .ok()
                    .map(|c| (n.grpc_addr.clone(), c))
            })
            .collect()
    }

    /// Every runner node to operate: the registry's live runners (draining ones too: they are
    /// what an operator watches) under registry placement, else `gateway.runner_addr`.
    pub(crate) fn runner_nodes(&self) -> Vec<(String, cloudlysis_runtime::local::NodeChannel)> {
        let Some(p) = self.placement() else {
            return self.inner.runners.clone();
        };
        p.all("runner")
            .into_iter()
            .filter_map(|n| p.pool.get(&n.grpc_addr).ok().map(|c| (n.grpc_addr, c)))
            .collect()
    }

    /// API requests being handled now.
    pub fn in_flight(&self) -> usize {
        self.inner.admission.in_flight()
    }

    /// The probe fan-out's mailbox, starting the Gateway's supervisor and the actor the first
    /// time.
    pub(crate) async fn probe(
        &self,
    ) -> Result<cloudlysis_runtime::mailbox::BoundedRef<probe::ProbeMsg>, problem::Problem> {
        use cloudlysis_supervision::ChildSpec;
        self.inner
            .probe
            .get_or_try_init(|| async {
                let mailbox = cloudlysis_runtime::mailbox::BoundedRef::new(
                    probe::PROBE_KIND,
                    probe::PROBE_MAILBOX,
                );
                let fixed = self.inner.targets.clone();
                let placement = self.placement().cloned();
                // The registry's live nodes when the Gateway routes by it, else the settings'.
                let targets: probe::Targets = std::sync::Arc::new(move || match &placement {
                    None => fixed.clone(),
                    Some(p) => ["aggregate", "projection", "runner"]
                        .into_iter()
                        .flat_map(|role| {
                            p.live(role).into_iter().filter_map(move |n| {
                                p.pool.get(&n.grpc_addr).ok().map(|channel| probe::Target {
                                    role,
                                    address: n.grpc_addr.clone(),
                                    channel,
                                })
                            })
                        })
                        .collect(),
                });
                let fanouts = self.inner.fanouts.clone();
                let tree = self.tree().await?;
                tree.start_child(ChildSpec::bounded(
                    "probe-fanout",
                    mailbox.clone(),
                    move || {
                        (
                            probe::ProbeActor {
                                targets: targets.clone(),
                                fanouts: fanouts.clone(),
                            },
                            (),
                        )
                    },
                ))
                .await
                .map_err(|e| e.to_string())?;
                Ok::<_, String>(mailbox)
            })
            .await
            .cloned()
            .map_err(|e| {
                problem::Problem::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!("the probe fan-out could not start: {e}"),
                )
                .retry_after(1)
            })
    }

    /// Node-probe fan-outs made so far (each asked every node once).
    pub fn probe_fanouts(&self) -> u64 {
        self.inner
            .fanouts
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The Gateway's supervision tree (probe fan-out, channel pool, placement watcher), once it
    /// has started.
    pub fn supervisor(&self) -> Option<cloudlysis_supervision::SupervisorRef> {
        self.inner.tree.get().cloned()
    }

    /// The token authenticator (for minting dev tokens).
    pub fn authenticator(&self) -> &Authenticator {
        &self.inner.auth
    }

    /// The Gateway's routes alone (see [`Gateway::router_with`]).
    pub fn router(&self) -> Router {
        self.router_with(Router::new())
    }

    /// The Gateway's routes with `extra` (the runtime's service endpoints: `/health`, `/ready`,
    /// `/metrics`) beside them; any other path answers 404 and a method no route serves 405,
    /// both problem+json.
    pub fn router_with(&self, extra: Router) -> Router {
        // The API routes, behind the per-tenant admission.
        let api = Router::new()
            .route(
                "/v1/commands/{aggregate_type}/{aggregate_id}",
                post(commands::post),
            )
            .route("/v1/query/{view}", axum::routing::get(queries::list))
            .route("/v1/query/{view}/{key}", axum::routing::get(queries::get))
            .route("/v1/workflows/{name}", axum::routing::get(workflows::list))
            .route(
                "/v1/workflows/{name}/{id}",
                post(workflows::start).get(workflows::get),
            )
            .route("/v1/workflows/{name}/{id}/{verb}", post(workflows::operate))
            .route_layer(axum::middleware::from_fn_with_state(
                self.clone(),
                admission::admit,
            ));
        Router::new()
            .merge(api)
            .route(
                "/admin/runner/nodes",
                axum::routing::get(runner_admin::list),
            )
            .route(
                "/admin/runner/nodes/{node}",
                axum::routing::get(runner_admin::status),
            )
            .route(
                "/admin/runner/nodes/{node}/{verb}",
                post(runner_admin::node_verb),
            )
            .route("/admin/runner/{verb}", post(runner_admin::all_verb))
            .route("/admin/whoami", axum::routing::get(admin::whoami))
            .route("/admin/nodes", axum::routing::get(admin::nodes))
            .route("/admin/supervision", axum::routing::get(admin::supervision))
            .route("/admin/views", axum::routing::get(admin::views))
            .route("/admin/views/{view}/rebuild", post(admin::rebuild))
            .route(
                "/admin/views/{view}/rebuild/cancel",
                post(admin::cancel_rebuild),
            )
            .route("/admin/poison", axum::routing::get(admin::poison_list))
            .route(
                "/admin/poison/{id}",
                axum::routing::get(admin::poison_get).delete(admin::poison_purge),
            )
            .route("/admin/poison/{id}/redrive", post(admin::poison_redrive))
            .route("/admin/audit", axum::routing::get(admin::audit))
            .merge(ui::router(&self.inner.settings.ui_dir))
            .with_state(self.clone())
            .merge(extra)
            // Unknown paths and methods answer problem+json too (after every route: the 405
            // answer applies to the routes present when it is set).
            .fallback(problem::no_route)
            .method_not_allowed_fallback(problem::wrong_method)
            // A handler that panics (a bug) answers 500 problem+json instead of dropping the
            // connection.
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                problem::panicked,
            ))
    }
}
