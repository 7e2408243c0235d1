//! The role subcommands: `aggregate`, `gateway`, `runner`, `projection` (and its `rebuild`),
//! `token` and `credential`.

use std::process::ExitCode;

use cloudlysis_actors::aggregate::node::GRPC_ADDR;
use cloudlysis_gateway::{Gateway, GatewaySettings};
use cloudlysis_runtime::config::{ConfigSource, settings};
use cloudlysis_runtime::credential::NodeKeys;
use cloudlysis_runtime::service::{self, ServiceEndpoints};

use crate::cli::{AggregateArgs, GatewayArgs};
use crate::{App, nodes};

/// Runs an aggregate node until Ctrl-C or SIGTERM.
pub async fn aggregate(
    src: &ConfigSource,
    args: AggregateArgs,
    app: &App,
) -> anyhow::Result<ExitCode> {
    let grpc_addr: String = src.get_or(
        &GRPC_ADDR,
        args.grpc_addr.as_deref(),
        "127.0.0.1:50051".into(),
    )?;
    let http_addr: String = src.get_or(
        &settings::HTTP_ADDR,
        args.http_addr.as_deref(),
        "127.0.0.1:8081".into(),
    )?;
    let keys = nodes::serving(src)?;
    let grpc = nodes::bind(&grpc_addr, "aggregate.grpc_addr / --grpc-addr").await?;
    let http = nodes::bind(&http_addr, "http.addr / --http-addr").await?;
    let nats = nodes::connect(src, args.nats_url.as_deref(), "cloudlysis-aggregate").await?;
    let node = nodes::aggregate_node(src, &nats.js, app.behaviours()).await?;
    let (ops, readiness) = nodes::ops_router(&nats.client, "aggregate", node.supervisor())?;
    let keys = keys.with_readiness(readiness);
    eprintln!(
        "aggregate node: gRPC on {} (aggregates: {}), HTTP on http://{}",
        grpc.local_addr()?,
        node.aggregate_types().join(", "),
        http.local_addr()?
    );
    let types = node
        .aggregate_types()
        .iter()
        .map(|t| t.to_string())
        .collect();
    let load = keys.clone();
    let registration = nodes::register(
        src,
        &nats.js,
        "aggregate",
        &grpc,
        types,
        move || load.in_flight() as u64,
        || false,
    )
    .await?;
    let grace = nodes::leave_grace(src)?;
    let code = nodes::serve_until_signal_then(
        http,
        nodes::http_limits(src)?,
        ops,
        |stop| node.serve_grpc(grpc, keys, stop),
        nodes::leave_first(&registration, grace),
    )
    .await;
    registration.deregister().await;
    code
}

/// Runs a Gateway until Ctrl-C or SIGTERM.
pub async fn gateway(src: &ConfigSource, args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let http_addr: String = src.get_or(
        &settings::HTTP_ADDR,
        args.http_addr.as_deref(),
        "127.0.0.1:8080".into(),
    )?;
    let settings = GatewaySettings::load(
        src,
        args.aggregate_addr.as_deref(),
        args.projection_addr.as_deref(),
        args.runner_addr.as_deref(),
        None,
        None,
    )?;
    let gateway = Gateway::new(settings)?;
    if nodes::registry_placement(src)? {
        let nats = nodes::connect(src, None, "cloudlysis-gateway").await?;
        gateway.use_registry(nats.js).await?;
    }
    let http = nodes::bind(&http_addr, "http.addr / --http-addr").await?;
    let handle = cloudlysis_runtime::metrics::install()?;
    cloudlysis_runtime::metrics::record_build_info("gateway");
    let app = gateway.router_with(service::router(ServiceEndpoints {
        readiness: gateway.readiness(),
        metrics: handle,
    }));
    eprintln!("gateway: HTTP on http://{}", http.local_addr()?);
    cloudlysis_runtime::service::serve(
        http,
        app,
        nodes::http_limits(src)?,
        nodes::shutdown_signal(),
    )
    .await;
    Ok(ExitCode::SUCCESS)
}

/// Runs a runner node until Ctrl-C or SIGTERM; on the signal it drains (intake stops, in-flight
/// work finishes within `runner.drain_grace_ms`, the outbox is flushed), then exits 0.
pub async fn runner(
    src: &ConfigSource,
    args: crate::cli::RunnerArgs,
    config_path: Option<std::path::PathBuf>,
    app: &App,
) -> anyhow::Result<ExitCode> {
    use cloudlysis_actors::runner;
    // Validate the role's settings before anything is bound or connected.
    runner::RunnerSettings::load(src)?;
    src.node_addr(
        &runner::AGGREGATE_ADDR,
        args.aggregate_addr.as_deref(),
        nodes::AGGREGATE_DEFAULT,
    )?;
    let keys = nodes::serving(src)?;
    let grpc_addr: String = src.get_or(
        &runner::GRPC_ADDR,
        args.grpc_addr.as_deref(),
        "127.0.0.1:50053".into(),
    )?;
    let http_addr: String = src.get_or(
        &settings::HTTP_ADDR,
        args.http_addr.as_deref(),
        "127.0.0.1:8083".into(),
    )?;
    let grpc = nodes::bind(&grpc_addr, "runner.grpc_addr / --grpc-addr").await?;
    let http = nodes::bind(&http_addr, "http.addr / --http-addr").await?;
    let nats = nodes::connect(src, args.nats_url.as_deref(), "cloudlysis-runner").await?;
    // Reload re-reads the environment and the same config file.
    let reload: runner::ReloadSource = std::sync::Arc::new(move || {
        crate::cli::config_source(config_path.as_ref()).map_err(|e| format!("{e:#}"))
    });
    let node = nodes::runner_node(
        src,
        &nats.js,
        nodes::Aggregate::Addr(args.aggregate_addr.as_deref()),
        Some(reload),
        &keys.keys,
        app.behaviours(),
    )
    .await?;
    let (ops, readiness) =
        nodes::ops_router_with(&nats.client, "runner", node.supervisor(), |r| {
            nodes::intake_check(r, node.clone());
        })?;
    let keys = keys.with_readiness(readiness);
    eprintln!(
        "runner node: gRPC on {}, HTTP on http://{} (workflows: {}; effects: {})",
        grpc.local_addr()?,
        http.local_addr()?,
        node.workflows().join(", "),
        node.effect_types().join(", ")
    );
    let behaviours = node
        .workflows()
        .into_iter()
        .chain(node.effect_types())
        .map(str::to_string)
        .collect();
    let heartbeat = node.clone();
    let load = keys.clone();
    let registration = nodes::register(
        src,
        &nats.js,
        "runner",
        &grpc,
        behaviours,
        move || load.in_flight() as u64,
        move || heartbeat.draining(),
    )
    .await?;
    let draining = node.clone();
    let grace = runner::RunnerSettings::load(src)?.drain_grace;
    let code = nodes::serve_until_signal_then(
        http,
        nodes::http_limits(src)?,
        ops,
        |stop| node.serve_grpc(grpc, keys, stop),
        async {
            eprintln!("draining the runner (grace {grace:?})");
            // Intake stops at once; the registry says `draining` now, not at the next heartbeat.
            draining.drain(grace, false).await;
            registration.refresh().await;
            let progress = draining.drain(grace, true).await;
            eprintln!("runner {}: {}", progress.state.as_str(), progress.detail);
        },
    )
    .await;
    registration.deregister().await;
    code
}

/// Runs a projection node until Ctrl-C or SIGTERM.
pub async fn projection(
    src: &ConfigSource,
    args: crate::cli::ProjectionArgs,
    app: &App,
) -> anyhow::Result<ExitCode> {
    // Validate the role's settings before anything is bound or connected.
    cloudlysis_runtime::consumer::ConsumerSettings::load(
        cloudlysis_runtime::consumer::ConsumerRole::Projection,
        src,
    )?;
    let _: cloudlysis_actors::projection::ProjectionMode = src.get_or(
        &cloudlysis_actors::projection::MODE,
        args.mode.as_deref(),
        Default::default(),
    )?;
    src.get_in_range(
        &cloudlysis_actors::projection::LANES,
        args.lanes.as_deref(),
        cloudlysis_actors::projection::DEFAULT_LANES as u64,
        1,
        cloudlysis_actors::projection::MAX_LANES as u64,
    )?;
    let grpc_addr: String = src.get_or(
        &cloudlysis_actors::projection::GRPC_ADDR,
        args.grpc_addr.as_deref(),
        "127.0.0.1:50052".into(),
    )?;
    let http_addr: String = src.get_or(
        &settings::HTTP_ADDR,
        args.http_addr.as_deref(),
        "127.0.0.1:8082".into(),
    )?;
    let keys = nodes::serving(src)?;
    let grpc = nodes::bind(&grpc_addr, "projection.grpc_addr / --grpc-addr").await?;
    let http = nodes::bind(&http_addr, "http.addr / --http-addr").await?;
    let nats = nodes::connect(src, args.nats_url.as_deref(), "cloudlysis-projection").await?;
    let node = nodes::projection_node(
        src,
        &nats.js,
        args.mode.as_deref(),
        args.lanes.as_deref(),
        app.behaviours(),
    )
    .await?;
    let (ops, readiness) = nodes::ops_router(&nats.client, "projection", node.supervisor())?;
    let keys = keys.with_readiness(readiness);
    eprintln!(
        "projection node: gRPC on {}, HTTP on http://{} (views: {})",
        grpc.local_addr()?,
        http.local_addr()?,
        node.view_names().join(", ")
    );
    let views = node.view_names().iter().map(|v| v.to_string()).collect();
    let load = keys.clone();
    let registration = nodes::register(
        src,
        &nats.js,
        "projection",
        &grpc,
        views,
        move || load.in_flight() as u64,
        || false,
    )
    .await?;
    let grace = nodes::leave_grace(src)?;
    let code = nodes::serve_until_signal_then(
        http,
        nodes::http_limits(src)?,
        ops,
        |stop| node.serve_grpc(grpc, keys, stop),
        nodes::leave_first(&registration, grace),
    )
    .await;
    registration.deregister().await;
    code
}

/// `cloudlysis projection rebuild <view>`: requests a rebuild and (unless `--no-wait`) waits
/// until the rebuilt generation answers queries, printing progress.
pub async fn rebuild(
    src: &ConfigSource,
    args: crate::cli::RebuildArgs,
    app: &App,
) -> anyhow::Result<ExitCode> {
    use cloudlysis_actors::projection::generation as view_generation;
    let views = app.behaviours().view_names();
    if !views.contains(&args.view.as_str()) {
        anyhow::bail!(
            "unknown view `{}`: the projection node of this binary runs {}",
            args.view,
            views.join(", ")
        );
    }
    let timeout = cloudlysis_gateway::auth::parse_ttl(&args.timeout)
        .map_err(|e| anyhow::anyhow!("invalid --timeout: {e}"))?;
    let nats = nodes::connect(src, args.nats_url.as_deref(), "cloudlysis-rebuild").await?;
    if args.cancel {
        let (gens, cancelled) = view_generation::cancel_rebuild(&nats.js, &args.view).await?;
        println!(
            "cancelled the rebuild of view `{}` into generation {cancelled}; generation {} keeps \
             answering queries",
            args.view, gens.active
        );
        return Ok(ExitCode::SUCCESS);
    }
    let gens = view_generation::request_rebuild(&nats.js, &args.view).await?;
    let target = gens.building.unwrap_or(gens.active);
    println!(
        "rebuilding view `{}` into generation {target}; generation {} answers queries until it has caught up",
        args.view, gens.active
    );
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let kv = view_generation::bucket(&nats.js).await?;
    let durable = view_generation::durable(&args.view, target)
        .ok_or_else(|| anyhow::anyhow!("invalid view name `{}`", args.view))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_report = tokio::time::Instant::now();
    loop {
        let (now, _) = view_generation::read(&kv, &args.view).await?;
        if now.active >= target {
            println!(
                "view `{}` rebuilt: generation {target} answers queries",
                args.view
            );
            return Ok(ExitCode::SUCCESS);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "view `{}` is not rebuilt after {}: the rebuild goes on, but is a projection \
                 node running it? (`cloudlysis projection`)",
                args.view,
                args.timeout
            );
        }
        if last_report.elapsed() >= std::time::Duration::from_secs(2) {
            last_report = tokio::time::Instant::now();
            let pending = async {
                let mut s = nats
                    .js
                    .get_stream(cloudlysis_runtime::stream::AGGREGATE_EVENTS)
                    .await
                    .ok()?;
                let mut c: async_nats::jetstream::consumer::PullConsumer =
                    s.get_consumer(durable.as_str()).await.ok()?;
                let _ = &mut s;
                c.info()
                    .await
                    .ok()
                    .map(|i| (i.ack_floor.stream_sequence, i.num_pending))
            };
            match tokio::time::timeout(std::time::Duration::from_secs(5), pending).await {
                Ok(Some((floor, pending))) => {
                    eprintln!(
                        "  generation {target}: applied up to sequence {floor}, {pending} pending"
                    )
                }
                _ => eprintln!("  generation {target}: waiting for a projection node to start it"),
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `cloudlysis token` needs only the token secret: a placeholder stands in for the node secret.
const UNUSED_NODE_SECRET: &str = "cloudlysis-token-needs-no-node-secret!";

/// `cloudlysis credential`: prints a node credential (for grpcurl and other gRPC tools) on
/// stdout, signed with `node.secret`.
pub fn credential(
    src: &ConfigSource,
    args: crate::cli::CredentialArgs,
) -> anyhow::Result<ExitCode> {
    let keys = NodeKeys::load(src, None)?;
    let rights = parse_rights(&args.rights, "admin:read")?;
    cloudlysis_runtime::subject::validate_token(&args.tenant)
        .map_err(|e| anyhow::anyhow!("invalid --tenant: {e}"))?;
    println!("{}", keys.sign(&args.subject, &args.tenant, &rights)?);
    Ok(ExitCode::SUCCESS)
}

/// The comma-separated `--rights` of `token` and `credential`: each `scope:name` (or
/// `scope:name:qualifier`), every part non-empty and of `A-Z a-z 0-9 _ -` or `*` alone.
fn parse_rights(text: &str, example: &str) -> anyhow::Result<Vec<String>> {
    let part_ok = |p: &str| {
        p == "*"
            || (!p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    };
    let rights: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    for right in &rights {
        let parts: Vec<&str> = right.split(':').collect();
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| part_ok(p)) {
            anyhow::bail!(
                "invalid --rights entry {right:?}: expected scope:name, e.g. {example} (each part \
                 non-empty, of A-Z a-z 0-9 _ - or `*`)"
            );
        }
    }
    Ok(rights)
}

/// `cloudlysis token`: prints a signed token on stdout.
pub fn token(src: &ConfigSource, args: crate::cli::TokenArgs) -> anyhow::Result<ExitCode> {
    let settings = GatewaySettings::load(src, None, None, None, None, Some(UNUSED_NODE_SECRET))?;
    let auth = cloudlysis_gateway::Authenticator::new(settings.jwt_secret.as_bytes())?;
    let ttl = cloudlysis_gateway::auth::parse_ttl(&args.ttl)
        .map_err(|e| anyhow::anyhow!("invalid --ttl: {e}"))?;
    let longest = cloudlysis_gateway::auth::MAX_TOKEN_TTL;
    if ttl > longest {
        anyhow::bail!(
            "invalid --ttl {}: a token may live at most {}d",
            args.ttl,
            longest.as_secs() / 86_400
        );
    }
    cloudlysis_runtime::subject::validate_token(&args.tenant)
        .map_err(|e| anyhow::anyhow!("invalid --tenant: {e}"))?;
    let rights = parse_rights(&args.rights, "commands:account or commands:*")?;
    println!("{}", auth.mint(&args.subject, &args.tenant, &rights, ttl)?);
    Ok(ExitCode::SUCCESS)
}
