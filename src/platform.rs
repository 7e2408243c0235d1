//! The whole platform in one process — an aggregate, a projection and a runner node on
//! ephemeral loopback gRPC ports, and a Gateway routing to them — in process, without the
//! network (`runtime::local`), as the runner's effects reach the aggregate node — over an
//! application's behaviours. `cloudlysis dev` serves it on its HTTP port; [`crate::harness`]
//! starts it for a user's integration tests.

use std::net::SocketAddr;
use std::time::Duration;

use cloudlysis_gateway::{Gateway, GatewaySettings};
use cloudlysis_runtime::config::ConfigSource;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::App;
use crate::dev::{DEV_JWT_SECRET, DEV_NODE_SECRET, DEV_OPERATOR_RIGHTS, DEV_TENANT};
use crate::nodes::{self, Nats};

/// A running platform. [`Platform::stop`] drains its nodes.
pub(crate) struct Platform {
    /// The Gateway's routes plus `/health`, `/ready`, `/metrics`.
    pub router: axum::Router,
    /// The aggregate node's gRPC address.
    pub grpc_addr: SocketAddr,
    /// The projection node's gRPC address.
    pub query_addr: SocketAddr,
    /// The runner node's gRPC address.
    pub runner_addr: SocketAddr,
    /// The aggregate types served, comma-separated.
    pub aggregate_types: String,
    /// The workflows run, comma-separated.
    pub workflows: String,
    /// A user token of [`DEV_TENANT`] (`commands:*`, `queries:*`, `workflows:*`, 24 h).
    pub token: String,
    /// An operator token of [`DEV_TENANT`] with [`DEV_OPERATOR_RIGHTS`] (24 h).
    pub operator: String,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Platform {
    /// Starts the nodes and the Gateway on `nats` (whose streams exist). Nodes take calls with
    /// credentials signed by the configured node secret, else the dev one; the Gateway verifies
    /// tokens with the configured secret, else the dev one.
    pub(crate) async fn start(src: &ConfigSource, nats: &Nats, app: &App) -> anyhow::Result<Self> {
        let keys = cloudlysis_runtime::credential::NodeKeys::load(src, Some(DEV_NODE_SECRET))?;
        let (stop, wait) = nodes::shutdown_channel();
        let mut servers = Vec::new();

        // The aggregate node, on an ephemeral gRPC port of this machine.
        let node = nodes::aggregate_node(src, &nats.js, app.behaviours()).await?;
        let grpc = nodes::bind("127.0.0.1:0", "the dev aggregate node").await?;
        let grpc_addr = grpc.local_addr()?;
        let aggregate_types = node.aggregate_types().join(", ");
        let ops = nodes::ops_router(&nats.client, "dev", node.supervisor())?;
        // The Gateway and the runner's effects call it in this process (no network, the same
        // layers and credential); its gRPC port serves everyone else (grpcurl, other processes).
        let serving: cloudlysis_runtime::admission::NodeServing = keys.clone().into();
        let local_aggregate = node.local(&serving).await;
        servers.push(tokio::spawn(node.serve_grpc(grpc, serving, wait())));

        // The projection node with the application's views, on another ephemeral port.
        let projection =
            nodes::projection_node(src, &nats.js, None, None, app.behaviours()).await?;
        let query_grpc = nodes::bind("127.0.0.1:0", "the dev projection node").await?;
        let query_addr = query_grpc.local_addr()?;
        // The Gateway's queries and view admin go to it in this process too.
        let serving: cloudlysis_runtime::admission::NodeServing = keys.clone().into();
        let local_projection = projection.local(&serving).await;
        servers.push(tokio::spawn(projection.serve_grpc(
            query_grpc,
            serving,
            wait(),
        )));

        // The runner node; its effects send commands to the aggregate node in this process.
        let aggregate_uri = format!("http://{grpc_addr}");
        let runner = nodes::runner_node(
            src,
            &nats.js,
            nodes::Aggregate::Local(local_aggregate.clone()),
            None,
            &keys,
            app.behaviours(),
        )
        .await?;
        let runner_grpc = nodes::bind("127.0.0.1:0", "the dev runner node").await?;
        let runner_addr = runner_grpc.local_addr()?;
        let workflows = runner.workflows().join(", ");
        // The Gateway's workflow calls go to it in this process; its health (NOT_SERVING while
        // draining) is its server's.
        let serving: cloudlysis_runtime::admission::NodeServing = keys.clone().into();
        let local_runner = runner.local(&serving).await;
        servers.push(tokio::spawn(runner.serve_grpc(
            runner_grpc,
            serving,
            wait(),
        )));

        // The Gateway, routing to all three.
        let projection_uri = format!("http://{query_addr}");
        let runner_uri = format!("http://{runner_addr}");
        let settings = GatewaySettings::load(
            src,
            Some(&aggregate_uri),
            Some(&projection_uri),
            Some(&runner_uri),
            Some(DEV_JWT_SECRET),
            Some(DEV_NODE_SECRET),
        )?;
        let gateway = Gateway::with_local_nodes(
            settings,
            std::collections::HashMap::from([
                (aggregate_uri.clone(), local_aggregate),
                (projection_uri.clone(), local_projection),
                (runner_uri.clone(), local_runner),
            ]),
        )?;
        let day = Duration::from_secs(24 * 3600);
        let token = gateway.authenticator().mint(
            "dev",
            DEV_TENANT,
            &[
                "commands:*".to_string(),
                "queries:*".to_string(),
                "workflows:*".to_string(),
            ],
            day,
        )?;
        // The dev operator signs in to the Control UI with every right, admin included.
        let operator = gateway.authenticator().mint(
            "dev-operator",
            DEV_TENANT,
            &DEV_OPERATOR_RIGHTS
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>(),
            day,
        )?;
        Ok(Self {
            router: gateway.router().merge(ops),
            grpc_addr,
            query_addr,
            runner_addr,
            aggregate_types,
            workflows,
            token,
            operator,
            stop,
            servers,
        })
    }

    /// Stops the nodes, each within [`nodes::DRAIN`].
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        for server in self.servers {
            let _ = tokio::time::timeout(nodes::DRAIN, server).await;
        }
    }
}
