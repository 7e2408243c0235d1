//! Running node roles: shared wiring for `cloudlysis aggregate`, `projection`, `runner`,
//! `gateway` and `dev`.

use std::time::Duration;

use anyhow::Context as _;
use cloudlysis_actors::aggregate::AggregateSettings;
use cloudlysis_actors::aggregate::node::AggregateNode;
use cloudlysis_runtime::config::{ConfigSource, settings};
use cloudlysis_runtime::metrics;
use cloudlysis_runtime::nats::{self, NatsSettings};
use cloudlysis_runtime::service::{self, Readiness, ServiceEndpoints};
use tokio::sync::watch;

use crate::Behaviours;

/// A NATS connection and its JetStream context.
pub struct Nats {
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
}

/// Connects with the configured deadlines.
pub async fn connect(src: &ConfigSource, url: Option<&str>, name: &str) -> anyhow::Result<Nats> {
    let settings = NatsSettings::load(src, url, name)?;
    let client = nats::connect(&settings).await?;
    let js = nats::jetstream(client.clone(), settings.request_timeout);
    Ok(Nats { client, js })
}

/// Builds the aggregate node with the application's aggregates registered.
pub async fn aggregate_node(
    src: &ConfigSource,
    js: &async_nats::jetstream::Context,
    behaviours: &Behaviours,
) -> anyhow::Result<AggregateNode> {
    let settings = AggregateSettings::load(src)?;
    let node = behaviours
        .register_aggregates(AggregateNode::builder(js.clone(), settings))
        .build()
        .await
        .context("aggregate node could not start")?;
    Ok(node)
}

/// Builds the projection node with the application's views registered, in the configured mode
/// (`mode_flag` over `CLOUDLYSIS_PROJECTION_MODE` over the file's `projection.mode`) with the
/// configured handler lanes per view.
pub async fn projection_node(
    src: &ConfigSource,
    js: &async_nats::jetstream::Context,
    mode_flag: Option<&str>,
    lanes_flag: Option<&str>,
    behaviours: &Behaviours,
) -> anyhow::Result<cloudlysis_actors::projection::ProjectionNode> {
    use cloudlysis_actors::projection::{
        DEFAULT_LANES, LANES, MAX_LANES, MODE, ProjectionMode, ProjectionNode,
    };
    let settings = cloudlysis_runtime::consumer::ConsumerSettings::load(
        cloudlysis_runtime::consumer::ConsumerRole::Projection,
        src,
    )?;
    let mode: ProjectionMode = src.get_or(&MODE, mode_flag, ProjectionMode::default())?;
    let lanes = src.get_in_range(
        &LANES,
        lanes_flag,
        DEFAULT_LANES as u64,
        1,
        MAX_LANES as u64,
    )?;
    let builder = ProjectionNode::builder(js.clone(), settings)
        .mode(mode)
        .lanes(lanes as usize);
    behaviours
        .register_views(builder)
        .build()
        .await
        .context("projection node could not start")
}

/// Where a runner's effects send their commands.
pub enum Aggregate<'a> {
    /// Over gRPC: `runner.aggregate_addr` (this flag value, if given, wins).
    Addr(Option<&'a str>),
    /// To an aggregate node in this process (`cloudlysis dev`).
    Local(cloudlysis_runtime::local::LocalNode),
    /// To each entity's node by placement (`cloudlysis all` under registry placement).
    Placed(cloudlysis_actors::runner::command_client::Placement),
}

/// `runner.aggregate_addr` when it is set nowhere.
pub const AGGREGATE_DEFAULT: &str = "http://127.0.0.1:50051";

/// Builds the runner node with the application's workflows and effects; effects send commands to
/// `aggregate` — the aggregate node at `runner.aggregate_addr` (the flag over env over file), or
/// one in this process — with credentials signed by `keys`.
/// A test-only fault point is read from `CLOUDLYSIS_TEST_FAULT`.
pub async fn runner_node(
    src: &ConfigSource,
    js: &async_nats::jetstream::Context,
    aggregate: Aggregate<'_>,
    reload: Option<cloudlysis_actors::runner::ReloadSource>,
    keys: &cloudlysis_runtime::credential::NodeKeys,
    behaviours: &Behaviours,
) -> anyhow::Result<cloudlysis_actors::runner::RunnerNode> {
    use cloudlysis_actors::runner::{self, CommandClient, RunnerNode, RunnerSettings};
    let settings = RunnerSettings::load(src)?;
    let client = match aggregate {
        Aggregate::Local(node) => CommandClient::local(node, keys.clone()),
        Aggregate::Placed(place) => CommandClient::placed(place, keys.clone()),
        Aggregate::Addr(flag) => {
            let addr = src.node_addr(&runner::AGGREGATE_ADDR, flag, AGGREGATE_DEFAULT)?;
            let tls = cloudlysis_runtime::tls::ClientTls::load(src)?;
            CommandClient::lazy(&addr, keys.clone(), &tls).map_err(|e| {
                anyhow::anyhow!("{e} (setting runner.aggregate_addr / --aggregate-addr)")
            })?
        }
    };
    let fault = runner::outbox::Fault::from_env();
    if let Some(f) = fault {
        tracing::warn!(fault = ?f, "TEST-ONLY fault injection is on ({})", runner::outbox::FAULT_ENV);
    }
    let mut builder = behaviours
        .register_runner(RunnerNode::builder(js.clone(), settings), &client)
        .fault(fault)
        .live_from(src.clone());
    if let Some(reload) = reload {
        builder = builder.reload_from(reload);
    }
    builder.build().await.context("runner node could not start")
}

/// The runtime endpoints (`/health`, `/ready` with a check that `root` runs, `/metrics`). A
/// node's supervision tree is served over gRPC (`NodeAdmin/Describe`) and, to operators with
/// the right, through the Gateway's `/admin/supervision` — never on this unauthenticated port.
/// Returns the router and its readiness checks, which the node's gRPC health follows
/// ([`cloudlysis_runtime::admission::NodeServing::with_readiness`]).
pub fn ops_router(
    client: &async_nats::Client,
    role: &'static str,
    root: &cloudlysis_supervision::SupervisorRef,
) -> anyhow::Result<(axum::Router, Readiness)> {
    ops_router_with(client, role, root, |_| {})
}

/// [`ops_router`] with more readiness checks (`checks` registers them).
pub fn ops_router_with(
    client: &async_nats::Client,
    role: &'static str,
    root: &cloudlysis_supervision::SupervisorRef,
    checks: impl FnOnce(&Readiness),
) -> anyhow::Result<(axum::Router, Readiness)> {
    let handle = metrics::install()?;
    metrics::record_build_info(role);
    cloudlysis_runtime::credential::register_metrics();
    cloudlysis_runtime::abandon::register_metrics();
    cloudlysis_runtime::admission::register_metrics();
    let readiness = node_readiness(client, role);
    // A node whose supervision tree failed (escalated to the root) is not ready.
    supervision_check(&readiness, "supervision", root.clone());
    checks(&readiness);
    let router = service::router(ServiceEndpoints {
        readiness: readiness.clone(),
        metrics: handle,
    });
    Ok((router, readiness))
}

/// The readiness checks every node of `role` has: `nats` (the client is connected) and
/// `jetstream` (JetStream answers for the streams the role uses — connected is not enough).
pub fn node_readiness(client: &async_nats::Client, role: &str) -> Readiness {
    let readiness = Readiness::new();
    readiness.nats(client.clone());
    use cloudlysis_runtime::stream::{AGGREGATE_EVENTS, WORKFLOW_COMMANDS, WORKFLOW_EVENTS};
    let streams: &'static [&'static str] = match role {
        "aggregate" | "projection" => &[AGGREGATE_EVENTS],
        _ => &[AGGREGATE_EVENTS, WORKFLOW_COMMANDS, WORKFLOW_EVENTS],
    };
    readiness.jetstream(async_nats::jetstream::new(client.clone()), streams);
    readiness
}

/// Readiness check `name`: fails once the supervision tree `root` has stopped (a failure
/// escalated to its root).
pub fn supervision_check(
    readiness: &Readiness,
    name: &'static str,
    root: cloudlysis_supervision::SupervisorRef,
) {
    readiness.register(name, move || {
        let running = root.is_running();
        async move {
            if running {
                Ok(())
            } else {
                Err("the root supervisor has stopped".into())
            }
        }
    });
}

/// Readiness check `intake`: fails while the runner drains.
pub fn intake_check(readiness: &Readiness, runner: cloudlysis_actors::runner::RunnerNode) {
    readiness.register("intake", move || {
        let draining = runner.draining();
        async move {
            if draining {
                Err("the runner is draining".into())
            } else {
                Ok(())
            }
        }
    });
}

/// Registers a node in the node registry (`cloudlysis_nodes`) at the address Gateways reach
/// its gRPC listener (`node.advertise_addr`, else the bound address), refreshed every heartbeat
/// with `load()` (calls in flight) and `draining()`; deregister it when the node stops.
pub async fn register(
    src: &ConfigSource,
    js: &async_nats::jetstream::Context,
    role: &'static str,
    grpc: &tokio::net::TcpListener,
    behaviours: Vec<String>,
    load: impl Fn() -> u64 + Send + Sync + 'static,
    draining: impl Fn() -> bool + Send + Sync + 'static,
) -> anyhow::Result<cloudlysis_runtime::registry::Registration> {
    let addr = advertised(
        src,
        &cloudlysis_runtime::registry::ADVERTISE_ADDR,
        grpc.local_addr()?,
    )?;
    register_at(js, role, addr, behaviours, load, draining).await
}

/// The URI a node listening at `local` registers: `setting` if set (a bare `host:port` gets
/// `https://` when the node serves TLS, else `http://`), else the bound address — refused,
/// naming `setting`, when that is `0.0.0.0` or `[::]`, which other processes cannot dial.
pub fn advertised(
    src: &ConfigSource,
    setting: &cloudlysis_runtime::config::Setting,
    local: std::net::SocketAddr,
) -> anyhow::Result<String> {
    // A node serving TLS is dialled at https://.
    let scheme = if src.raw(&cloudlysis_runtime::tls::CERT_FILE, None).is_some() {
        "https"
    } else {
        "http"
    };
    Ok(match src.raw(setting, None) {
        Some((v, _)) if v.contains("://") => v,
        Some((v, _)) => format!("{scheme}://{v}"),
        None if local.ip().is_unspecified() => anyhow::bail!(
            "gRPC listens on {local}, which other processes cannot dial: set {} ({}) to the \
             address Gateways reach this node at",
            setting.key,
            setting.env
        ),
        None => format!("{scheme}://{local}"),
    })
}

/// [`register`] at `addr` (a URI from [`advertised`]).
pub async fn register_at(
    js: &async_nats::jetstream::Context,
    role: &'static str,
    addr: String,
    behaviours: Vec<String>,
    load: impl Fn() -> u64 + Send + Sync + 'static,
    draining: impl Fn() -> bool + Send + Sync + 'static,
) -> anyhow::Result<cloudlysis_runtime::registry::Registration> {
    use cloudlysis_runtime::registry::{self, NodeEntry};
    let id = format!("{role}-{}", uuid::Uuid::new_v4().simple());
    registry::register(js, move || {
        let mut e = NodeEntry::new(role, &id, &addr);
        e.behaviours = behaviours.clone();
        e.draining = draining();
        e.load = load();
        e
    })
    .await
    .context("the node could not register in the node registry")
}

/// The node's credential keys (`node.secret`, required), `node.max_in_flight` and its TLS
/// (`node.tls_cert_file`, `node.tls_key_file`).
pub fn serving(src: &ConfigSource) -> anyhow::Result<cloudlysis_runtime::admission::NodeServing> {
    use cloudlysis_runtime::admission::{DEFAULT_MAX_IN_FLIGHT, MAX_IN_FLIGHT, NodeServing};
    Ok(NodeServing::new(
        cloudlysis_runtime::credential::NodeKeys::load(src, None)?,
        src.get_in_range(
            &MAX_IN_FLIGHT,
            None,
            DEFAULT_MAX_IN_FLIGHT as u64,
            1,
            1_000_000,
        )? as usize,
    )
    .with_tls(cloudlysis_runtime::tls::server(src)?))
}

/// The HTTP server's limits from `http.header_read_timeout_ms` and `http.max_connections`.
pub fn http_limits(src: &ConfigSource) -> anyhow::Result<cloudlysis_runtime::service::HttpLimits> {
    use cloudlysis_runtime::service::{DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONNECTIONS};
    let timeout_ms: u64 = src.get_or(
        &settings::HTTP_HEADER_READ_TIMEOUT_MS,
        None,
        DEFAULT_HEADER_READ_TIMEOUT.as_millis() as u64,
    )?;
    let max_connections: usize = src.get_or(
        &settings::HTTP_MAX_CONNECTIONS,
        None,
        DEFAULT_MAX_CONNECTIONS,
    )?;
    anyhow::ensure!(
        (100..=3_600_000).contains(&timeout_ms),
        "invalid http.header_read_timeout_ms {timeout_ms} (CLOUDLYSIS_HTTP_HEADER_READ_TIMEOUT_MS): use 100 to 3600000"
    );
    anyhow::ensure!(
        (1..=1_000_000).contains(&max_connections),
        "invalid http.max_connections {max_connections} (CLOUDLYSIS_HTTP_MAX_CONNECTIONS): use 1 to 1000000"
    );
    Ok(cloudlysis_runtime::service::HttpLimits {
        header_read_timeout: Duration::from_millis(timeout_ms),
        max_connections,
    })
}

/// `gateway.placement`: true for `registry`, false for `static` (the default); anything else
/// is refused, naming the setting.
pub fn registry_placement(src: &ConfigSource) -> anyhow::Result<bool> {
    let setting = &cloudlysis_gateway::config::PLACEMENT;
    let placement: String = src.get_or(setting, None, "static".into())?;
    match placement.as_str() {
        "static" => Ok(false),
        "registry" => Ok(true),
        other => anyhow::bail!(
            "invalid {} {other:?} ({}): use static or registry",
            setting.key,
            setting.env
        ),
    }
}

/// Binds a TCP listener, naming the setting on failure.
pub async fn bind(addr: &str, setting: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (setting {setting})"))
}

/// A shutdown signal shared by every server of the process.
pub fn shutdown_channel() -> (
    watch::Sender<bool>,
    impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Clone,
) {
    let (tx, rx) = watch::channel(false);
    let wait = move || {
        let mut rx = rx.clone();
        Box::pin(async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    };
    (tx, wait)
}

/// A future that resolves when the node is asked to stop.
pub type Stop = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Runs a node until Ctrl-C or SIGTERM: `ops` on `http`, and the gRPC server `grpc` builds
/// from its stop future; after the signal runs `before_stop` while both still serve (a node
/// leaves the registry there, a runner drains), then stops both, each drained within [`DRAIN`].
pub async fn serve_until_signal_then<F, Fut, E>(
    http: tokio::net::TcpListener,
    limits: cloudlysis_runtime::service::HttpLimits,
    ops: axum::Router,
    grpc: F,
    before_stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<std::process::ExitCode>
where
    F: FnOnce(Stop) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    let (stop, wait) = shutdown_channel();
    let http_server = tokio::spawn(cloudlysis_runtime::service::serve(
        http,
        ops,
        limits,
        wait(),
    ));
    let mut grpc_server = tokio::spawn(grpc(wait()));
    // A gRPC server that stops by itself (its TLS identity unusable, its listener failed) is
    // a node that serves nothing: the process says why and exits 1 rather than run on.
    let failed = tokio::select! {
        () = shutdown_signal() => None,
        ended = &mut grpc_server => Some(match ended {
            Ok(Ok(())) => "it stopped without being asked".to_string(),
            Ok(Err(e)) => error_chain(&e),
            Err(e) => format!("it panicked: {e}"),
        }),
    };
    if let Some(why) = &failed {
        eprintln!("error: the node's gRPC server stopped: {why}");
    } else {
        before_stop.await;
        eprintln!("shutting down");
    }
    let _ = stop.send(true);
    if failed.is_none() {
        let _ = tokio::time::timeout(DRAIN, grpc_server).await;
    }
    let _ = tokio::time::timeout(DRAIN, http_server).await;
    Ok(if failed.is_some() {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    })
}

/// An error and its sources, `: `-separated (tonic's transport error says only "transport
/// error" by itself).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `node.leave_grace_ms`.
pub fn leave_grace(src: &ConfigSource) -> anyhow::Result<Duration> {
    use cloudlysis_runtime::registry::{DEFAULT_LEAVE_GRACE, LEAVE_GRACE};
    Ok(src.get_millis(
        &LEAVE_GRACE,
        None,
        DEFAULT_LEAVE_GRACE,
        Duration::ZERO,
        Duration::from_secs(60),
    )?)
}

/// What a stopping node does first: leave the registry (Gateways stop placing work on it at
/// once), then keep serving for `grace` so calls already placed here are answered.
pub async fn leave_first(
    registration: &cloudlysis_runtime::registry::Registration,
    grace: Duration,
) {
    registration.leave().await;
    eprintln!("left the node registry; serving {grace:?} more for calls already placed here");
    tokio::time::sleep(grace).await;
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// How long servers get to finish after the shutdown signal.
pub const DRAIN: Duration = Duration::from_secs(30);
