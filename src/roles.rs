//! `cloudlysis aggregate` and `cloudlysis gateway`.

use std::process::ExitCode;

use cloudlysis_actors::aggregate_node::GRPC_ADDR;
use cloudlysis_gateway::{Gateway, GatewaySettings};
use cloudlysis_runtime::config::{ConfigSource, settings};
use cloudlysis_runtime::service::{self, Readiness, ServiceEndpoints};

use crate::cli::{AggregateArgs, GatewayArgs};
use crate::nodes;

/// Runs an aggregate node until Ctrl-C or SIGTERM.
pub async fn aggregate(src: &ConfigSource, args: AggregateArgs) -> anyhow::Result<ExitCode> {
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
    let grpc = nodes::bind(&grpc_addr, "aggregate.grpc_addr / --grpc-addr").await?;
    let http = nodes::bind(&http_addr, "http.addr / --http-addr").await?;
    let nats = nodes::connect(src, args.nats_url.as_deref(), "cloudlysis-aggregate").await?;
    let node = nodes::aggregate_node(src, &nats.js).await?;
    let ops = nodes::ops_router(&nats.client, "aggregate", node.supervisor())?;
    eprintln!(
        "aggregate node: gRPC on {} (aggregates: {}), HTTP on http://{}",
        grpc.local_addr()?,
        node.aggregate_types().join(", "),
        http.local_addr()?
    );
    let (stop, wait) = nodes::shutdown_channel();
    let http_server = tokio::spawn(
        axum::serve(http, ops)
            .with_graceful_shutdown(wait())
            .into_future(),
    );
    let grpc_server = tokio::spawn(node.serve_grpc(grpc, wait()));
    nodes::shutdown_signal().await;
    eprintln!("shutting down");
    let _ = stop.send(true);
    let _ = tokio::time::timeout(nodes::DRAIN, grpc_server).await;
    let _ = tokio::time::timeout(nodes::DRAIN, http_server).await;
    Ok(ExitCode::SUCCESS)
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
        None,
    )?;
    let gateway = Gateway::new(settings)?;
    let http = nodes::bind(&http_addr, "http.addr / --http-addr").await?;
    let handle = cloudlysis_runtime::metrics::install()?;
    cloudlysis_runtime::metrics::record_build_info("gateway");
    let app = gateway.router().merge(service::router(ServiceEndpoints {
        readiness: Readiness::new(),
        metrics: handle,
    }));
    eprintln!("gateway: HTTP on http://{}", http.local_addr()?);
    axum::serve(http, app)
        .with_graceful_shutdown(nodes::shutdown_signal())
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// Runs a projection node until Ctrl-C or SIGTERM.
pub async fn projection(
    src: &ConfigSource,
    args: crate::cli::ProjectionArgs,
) -> anyhow::Result<ExitCode> {
    // Validate the role's settings before anything is bound or connected.
    cloudlysis_runtime::consumer::ConsumerSettings::load(
        cloudlysis_runtime::consumer::ConsumerRole::Projection,
        src,
    )?;
    let grpc_addr: String = src.get_or(
        &cloudlysis_actors::projection_node::GRPC_ADDR,
        args.grpc_addr.as_deref(),
        "127.0.0.1:50052".into(),
    )?;
    let http_addr: String = src.get_or(
        &settings::HTTP_ADDR,
        args.http_addr.as_deref(),
        "127.0.0.1:8082".into(),
    )?;
    let grpc = nodes::bind(&grpc_addr, "projection.grpc_addr / --grpc-addr").await?;
    let http = nodes::bind(&http_addr, "http.addr / --http-addr").await?;
    let nats = nodes::connect(src, args.nats_url.as_deref(), "cloudlysis-projection").await?;
    let node = nodes::projection_node(src, &nats.js).await?;
    let ops = nodes::ops_router(&nats.client, "projection", node.supervisor())?;
    eprintln!(
        "projection node: gRPC on {}, HTTP on http://{}",
        grpc.local_addr()?,
        http.local_addr()?
    );
    let (stop, wait) = nodes::shutdown_channel();
    let http_server = tokio::spawn(
        axum::serve(http, ops)
            .with_graceful_shutdown(wait())
            .into_future(),
    );
    let grpc_server = tokio::spawn(node.serve_grpc(grpc, wait()));
    nodes::shutdown_signal().await;
    eprintln!("shutting down");
    let _ = stop.send(true);
    let _ = tokio::time::timeout(nodes::DRAIN, grpc_server).await;
    let _ = tokio::time::timeout(nodes::DRAIN, http_server).await;
    Ok(ExitCode::SUCCESS)
}

/// `cloudlysis token`: prints a signed token on stdout.
pub fn token(src: &ConfigSource, args: crate::cli::TokenArgs) -> anyhow::Result<ExitCode> {
    let settings = GatewaySettings::load(src, None, None, None)?;
    let auth = cloudlysis_gateway::Authenticator::new(settings.jwt_secret.as_bytes())?;
    let ttl = cloudlysis_gateway::auth::parse_ttl(&args.ttl)
        .map_err(|e| anyhow::anyhow!("invalid --ttl: {e}"))?;
    cloudlysis_runtime::subject::validate_token(&args.tenant)
        .map_err(|e| anyhow::anyhow!("invalid --tenant: {e}"))?;
    let rights: Vec<String> = args
        .rights
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(bad) = rights.iter().find(|r| !r.contains(':')) {
        anyhow::bail!(
            "invalid --rights entry {bad:?}: expected scope:name, e.g. commands:account or commands:*"
        );
    }
    println!("{}", auth.mint(&args.subject, &args.tenant, &rights, ttl)?);
    Ok(ExitCode::SUCCESS)
}
