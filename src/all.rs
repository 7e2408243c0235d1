//! `cloudlysis all`: a deployment of the whole platform in one process — a Gateway and an
//! aggregate, a projection and a runner node — where the Gateway calls its nodes in process
//! (ADR 0013: no HTTP/2 hop, ≈ a quarter less CPU per command, docs/performance.md) and each
//! node still serves gRPC on its configured address for everyone else. Settings are the roles'
//! own (`http.addr` for the Gateway's HTTP, `aggregate.grpc_addr`, `projection.grpc_addr`,
//! `runner.grpc_addr`, `node.secret` and `gateway.jwt_secret` required). With
//! `gateway.placement = static` (the default) the Gateway routes to the nodes of its process.
//! With `registry`, several `all` processes share the work: each registers its three nodes in
//! the node registry (at `aggregate.advertise_addr`, `projection.advertise_addr`,
//! `runner.advertise_addr`, else the bound addresses), and each Gateway places work by the
//! registry as a separate Gateway does — an entity's commands go to the one aggregate node
//! rendezvous hashing picks, whichever process takes the request — calling the nodes of its own
//! process in process and the others' over gRPC. The runner's effects send each command to the
//! entity's node by the same placement (`CommandClient::placed`), so every entity lives on one
//! node.
//!
//! On SIGTERM or Ctrl-C, under registry placement, the nodes leave the registry first (other
//! Gateways stop placing work here at once; the runner's entry says `draining`) and keep serving
//! for `node.leave_grace_ms`. The runner drains (intake stops, `/ready` fails `intake`, work in
//! flight finishes within `runner.drain_grace_ms`, the outbox is flushed) while the Gateway and
//! the nodes still serve — a draining workflow's effects still reach the aggregate node — then
//! the HTTP server and the nodes stop, each within [`nodes::DRAIN`], and the process exits 0.

use std::process::ExitCode;

use cloudlysis_actors::runner::{ReloadSource, RunnerSettings};
use cloudlysis_runtime::config::{ConfigSource, settings};
use cloudlysis_runtime::consumer::{ConsumerRole, ConsumerSettings};

use crate::cli::AllArgs;
use crate::platform::{Hosting, Platform, Registry};
use crate::{App, nodes};

/// Runs the whole platform until Ctrl-C or SIGTERM, then drains the runner and stops.
pub async fn run(
    src: &ConfigSource,
    args: AllArgs,
    config_path: Option<std::path::PathBuf>,
    app: &App,
) -> anyhow::Result<ExitCode> {
    // Every role's settings are checked before anything is bound or connected: the secrets
    // (`node.secret`, `gateway.jwt_secret`), node TLS and admission, the Gateway's, the
    // aggregate's, the runner's and the projection's (its consumers, mode and lanes).
    nodes::serving(src)?;
    cloudlysis_gateway::GatewaySettings::load(src, None, None, None, None, None)?;
    cloudlysis_actors::aggregate::AggregateSettings::load(src)?;
    let grace = RunnerSettings::load(src)?.drain_grace;
    ConsumerSettings::load(ConsumerRole::Projection, src)?;
    let _: cloudlysis_actors::projection::ProjectionMode = src.get_or(
        &cloudlysis_actors::projection::MODE,
        None,
        Default::default(),
    )?;
    src.get_in_range(
        &cloudlysis_actors::projection::LANES,
        None,
        cloudlysis_actors::projection::DEFAULT_LANES as u64,
        1,
        cloudlysis_actors::projection::MAX_LANES as u64,
    )?;
    let registry = match nodes::registry_placement(src)? {
        false => {
            // Addresses to advertise mean nothing without the registry: said, not ignored.
            use cloudlysis_runtime::registry as r;
            for setting in [
                &r::ADVERTISE_ADDR,
                &r::AGGREGATE_ADVERTISE_ADDR,
                &r::PROJECTION_ADVERTISE_ADDR,
                &r::RUNNER_ADVERTISE_ADDR,
            ] {
                src.refuse(
                    setting,
                    "nodes advertise an address only under gateway.placement = registry; \
                     with static placement nothing reads it",
                )?;
            }
            false
        }
        true => {
            // One `node.advertise_addr` cannot name three nodes' addresses.
            let shared = &cloudlysis_runtime::registry::ADVERTISE_ADDR;
            if src.raw(shared, None).is_some() {
                anyhow::bail!(
                    "cloudlysis all registers three nodes, which cannot share {} ({}): set {}, \
                     {} and {} instead",
                    shared.key,
                    shared.env,
                    cloudlysis_runtime::registry::AGGREGATE_ADVERTISE_ADDR.key,
                    cloudlysis_runtime::registry::PROJECTION_ADVERTISE_ADDR.key,
                    cloudlysis_runtime::registry::RUNNER_ADVERTISE_ADDR.key,
                );
            }
            true
        }
    };
    let leave_grace = nodes::leave_grace(src)?;
    let http_addr: String = src.get_or(
        &settings::HTTP_ADDR,
        args.http_addr.as_deref(),
        "127.0.0.1:8080".into(),
    )?;
    let http = nodes::bind(&http_addr, "http.addr / --http-addr").await?;
    let listeners = [
        bind_grpc(
            src,
            &cloudlysis_actors::aggregate::node::GRPC_ADDR,
            "127.0.0.1:50051",
        )
        .await?,
        bind_grpc(
            src,
            &cloudlysis_actors::projection::GRPC_ADDR,
            "127.0.0.1:50052",
        )
        .await?,
        bind_grpc(
            src,
            &cloudlysis_actors::runner::GRPC_ADDR,
            "127.0.0.1:50053",
        )
        .await?,
    ];
    // With registry placement, each node registers where other processes reach it (checked
    // before connecting: a node bound to 0.0.0.0 needs its role's advertise setting).
    let registry = if registry {
        use cloudlysis_runtime::registry::{
            AGGREGATE_ADVERTISE_ADDR, PROJECTION_ADVERTISE_ADDR, RUNNER_ADVERTISE_ADDR,
        };
        let [a, p, r] = &listeners;
        Some(Box::new(Registry {
            advertised: [
                nodes::advertised(src, &AGGREGATE_ADVERTISE_ADDR, a.local_addr()?)?,
                nodes::advertised(src, &PROJECTION_ADVERTISE_ADDR, p.local_addr()?)?,
                nodes::advertised(src, &RUNNER_ADVERTISE_ADDR, r.local_addr()?)?,
            ],
        }))
    } else {
        None
    };
    let nats = nodes::connect(src, args.nats_url.as_deref(), "cloudlysis-all").await?;
    // Reload re-reads the environment and the same config file.
    let reload: ReloadSource = std::sync::Arc::new(move || {
        crate::cli::config_source(config_path.as_ref()).map_err(|e| format!("{e:#}"))
    });
    let hosting = Hosting::Deployed {
        reload,
        listeners,
        registry,
    };
    let platform = Platform::start(src, &nats, app, hosting).await?;
    eprintln!(
        "all: Gateway HTTP on http://{} (with /health /ready /metrics); aggregate gRPC on {} \
         (aggregates: {}), projection gRPC on {} (views: {}), runner gRPC on {} (workflows: {}; \
         effects: {}); the Gateway calls them in process{}",
        http.local_addr()?,
        platform.grpc_addr,
        platform.aggregate_types,
        platform.query_addr,
        app.behaviours().view_names().join(", "),
        platform.runner_addr,
        platform.workflows,
        app.behaviours().effect_types().join(", "),
        if platform.registered() {
            " and places work by the node registry"
        } else {
            ""
        },
    );

    let (stop, wait) = nodes::shutdown_channel();
    let server = tokio::spawn(cloudlysis_runtime::service::serve(
        http,
        platform.router.clone(),
        nodes::http_limits(src)?,
        wait(),
    ));
    nodes::shutdown_signal().await;
    // Registered nodes leave the registry first: other Gateways stop placing work here at once,
    // and the nodes keep serving for `node.leave_grace_ms` while the runner drains.
    platform.begin_leaving(grace).await;
    eprintln!("draining the runner (grace {grace:?})");
    let (progress, ()) = tokio::join!(platform.runner.drain(grace, true), async {
        if platform.registered() {
            eprintln!(
                "left the node registry; serving {leave_grace:?} more for calls already placed here"
            );
            tokio::time::sleep(leave_grace).await;
        }
    });
    eprintln!("runner {}: {}", progress.state.as_str(), progress.detail);
    platform.finish_leaving().await;
    eprintln!("shutting down");
    let _ = stop.send(true);
    let _ = tokio::time::timeout(nodes::DRAIN, server).await;
    platform.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// Binds a node's gRPC listener at its `setting` (else `default`), naming the setting on failure.
async fn bind_grpc(
    src: &ConfigSource,
    setting: &cloudlysis_runtime::config::Setting,
    default: &str,
) -> anyhow::Result<tokio::net::TcpListener> {
    let addr: String = src.get_or(setting, None, default.into())?;
    nodes::bind(&addr, &format!("{} ({})", setting.key, setting.env)).await
}
