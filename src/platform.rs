//! The whole platform in one process — an aggregate, a projection and a runner node, each
//! on its gRPC port, and a Gateway routing to them — in process, without the network
//! (`runtime::local`), as the runner's effects reach the aggregate node — over an application's
//! behaviours. `cloudlysis dev` serves it on its HTTP port and [`crate::harness`] starts it for
//! a user's integration tests ([`Hosting::Dev`]); `cloudlysis all` runs it as a deployment
//! ([`Hosting::Deployed`], see [`crate::all`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudlysis_actors::runner::{ReloadSource, RunnerNode};
use cloudlysis_gateway::{Gateway, GatewaySettings};
use cloudlysis_runtime::admission::NodeServing;
use cloudlysis_runtime::config::ConfigSource;
use cloudlysis_runtime::registry::Registration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::App;
use crate::dev::{DEV_JWT_SECRET, DEV_NODE_SECRET, DEV_OPERATOR_RIGHTS, DEV_TENANT};
use crate::nodes::{self, Nats};

/// How a [`Platform`] is hosted.
pub(crate) enum Hosting {
    /// `cloudlysis dev` and the test harness: nodes on ephemeral loopback ports, the public dev
    /// secrets wherever no secret is configured.
    Dev,
    /// `cloudlysis all`: nodes on the listeners bound from their settings, with the node
    /// settings (`node.secret` required, `node.max_in_flight`, TLS), the Gateway's secret
    /// required, and the runner's settings reloadable from `reload`.
    Deployed {
        /// Where a reload reads the settings from.
        reload: ReloadSource,
        /// The aggregate, projection and runner nodes' gRPC listeners, in that order.
        listeners: [tokio::net::TcpListener; 3],
        /// With registry placement: the nodes register and the Gateway places work by the
        /// registry (`gateway.placement = registry`).
        registry: Option<Box<Registry>>,
    },
}

/// The Gateway the runner's effects read the placement from (registry placement), once made.
type Placing = Arc<Mutex<Option<Gateway>>>;

/// `cloudlysis all` with registry placement: where other processes reach its nodes.
pub(crate) struct Registry {
    /// The aggregate, projection and runner nodes' advertised URIs, in that order.
    pub advertised: [String; 3],
}

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
    /// The runner node (to drain it before stopping).
    pub runner: RunnerNode,
    gateway: Gateway,
    /// The aggregate, projection and runner nodes' registry entries (registry placement).
    registrations: Option<[Registration; 3]>,
    /// The Gateway as the runner's effects see it, let go of by [`Platform::stop`].
    placing: Placing,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Platform {
    /// Starts the nodes and the Gateway on `nats` (whose streams exist), hosted as `hosting`
    /// says. In dev, nodes take calls with credentials signed by the configured node secret,
    /// else the dev one, and the Gateway verifies tokens with the configured secret, else the
    /// dev one; deployed, both secrets must be configured.
    pub(crate) async fn start(
        src: &ConfigSource,
        nats: &Nats,
        app: &App,
        hosting: Hosting,
    ) -> anyhow::Result<Self> {
        // Before any node exists: metric handles made earlier would record nowhere (the CLI
        // installed it already; the harness has not).
        cloudlysis_runtime::metrics::install()?;
        let (dev, role, reload, [grpc, query_grpc, runner_grpc], registry) = match hosting {
            Hosting::Dev => (
                true,
                "dev",
                None,
                [
                    nodes::bind("127.0.0.1:0", "the dev aggregate node").await?,
                    nodes::bind("127.0.0.1:0", "the dev projection node").await?,
                    nodes::bind("127.0.0.1:0", "the dev runner node").await?,
                ],
                None,
            ),
            Hosting::Deployed {
                reload,
                listeners,
                registry,
            } => (false, "all", Some(reload), listeners, registry),
        };
        let keys =
            cloudlysis_runtime::credential::NodeKeys::load(src, dev.then_some(DEV_NODE_SECRET))?;
        // Each node's credential keys and admission budget.
        // The nodes' gRPC health follows NATS and JetStream, as a node's own process does.
        let node_readiness = nodes::node_readiness(&nats.client, "runner");
        let node_serving = || -> anyhow::Result<NodeServing> {
            let serving: NodeServing = if dev {
                keys.clone().into()
            } else {
                nodes::serving(src)?
            };
            Ok(serving.with_readiness(node_readiness.clone()))
        };
        let (stop, wait) = nodes::shutdown_channel();
        let mut servers = Vec::new();

        // The aggregate node.
        let node = nodes::aggregate_node(src, &nats.js, app.behaviours()).await?;
        let grpc_addr = grpc.local_addr()?;
        let aggregate_types = node.aggregate_types().join(", ");
        let node_types: Vec<String> = node
            .aggregate_types()
            .iter()
            .map(|t| t.to_string())
            .collect();
        let aggregate_tree = node.supervisor().clone();
        // The Gateway and the runner's effects call it in this process (no network, the same
        // layers and credential); its gRPC port serves everyone else (grpcurl, other processes).
        let serving = node_serving()?;
        let aggregate_load = serving.clone();
        let local_aggregate = node.local(&serving).await;
        servers.push(tokio::spawn(node.serve_grpc(grpc, serving, wait())));

        // The projection node with the application's views.
        let projection =
            nodes::projection_node(src, &nats.js, None, None, app.behaviours()).await?;
        let query_addr = query_grpc.local_addr()?;
        let projection_tree = projection.supervisor().clone();
        // The Gateway's queries and view admin go to it in this process too.
        let serving = node_serving()?;
        let projection_load = serving.clone();
        let view_names: Vec<String> = projection
            .view_names()
            .iter()
            .map(|v| v.to_string())
            .collect();
        let local_projection = projection.local(&serving).await;
        servers.push(tokio::spawn(projection.serve_grpc(
            query_grpc,
            serving,
            wait(),
        )));

        // The runner node; its effects send commands to the aggregate node in this process —
        // under registry placement, to the node that owns the entity, as the Gateway's commands
        // (the Gateway is made below: until it is there, effects are retried; `stop` lets go of
        // it, which holds the runner in turn).
        let aggregate_uri = format!("http://{grpc_addr}");
        let placing: Placing = Arc::default();
        let effects_go_to = if registry.is_some() {
            let placing = placing.clone();
            let place: cloudlysis_actors::runner::command_client::Placement =
                Arc::new(move |tenant: &str, ty: &str, id: &str| {
                    let gateway = placing.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    gateway
                        .ok_or_else(|| "the node registry is not watched yet".to_string())?
                        .placed_aggregate_channel(tenant, ty, id)
                });
            nodes::Aggregate::Placed(place)
        } else {
            nodes::Aggregate::Local(local_aggregate.clone())
        };
        let runner = nodes::runner_node(
            src,
            &nats.js,
            effects_go_to,
            reload,
            &keys,
            app.behaviours(),
        )
        .await?;
        let runner_addr = runner_grpc.local_addr()?;
        let workflows = runner.workflows().join(", ");
        // The Gateway's workflow calls go to it in this process; its health (NOT_SERVING while
        // draining) is its server's.
        let serving = node_serving()?;
        let runner_load = serving.clone();
        let local_runner = runner.local(&serving).await;
        servers.push(tokio::spawn(runner.clone().serve_grpc(
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
            dev.then_some(DEV_JWT_SECRET),
            dev.then_some(DEV_NODE_SECRET),
        )?;
        // The nodes by their bound addresses (static placement) and, under registry placement,
        // by the addresses they register: the Gateway's channel pool finds them there and calls
        // them in process, and the other processes' nodes over gRPC.
        let mut locals = std::collections::HashMap::from([
            (aggregate_uri.clone(), local_aggregate.clone()),
            (projection_uri.clone(), local_projection.clone()),
            (runner_uri.clone(), local_runner.clone()),
        ]);
        if let Some(registry) = &registry {
            let [a, p, r] = &registry.advertised;
            locals.insert(a.clone(), local_aggregate);
            locals.insert(p.clone(), local_projection);
            locals.insert(r.clone(), local_runner);
        }
        let gateway = Gateway::with_local_nodes(settings, locals)?;
        let registrations = match registry {
            None => None,
            Some(registry) => {
                let Registry {
                    advertised: [a, p, r],
                } = *registry;
                gateway.use_registry(nats.js.clone()).await?;
                *placing.lock().unwrap_or_else(|p| p.into_inner()) = Some(gateway.clone());
                let draining = runner.clone();
                let workflows_and_effects = runner
                    .workflows()
                    .into_iter()
                    .chain(runner.effect_types())
                    .map(str::to_string)
                    .collect();
                Some([
                    nodes::register_at(
                        &nats.js,
                        "aggregate",
                        a,
                        node_types,
                        move || aggregate_load.in_flight() as u64,
                        || false,
                    )
                    .await?,
                    nodes::register_at(
                        &nats.js,
                        "projection",
                        p,
                        view_names,
                        move || projection_load.in_flight() as u64,
                        || false,
                    )
                    .await?,
                    nodes::register_at(
                        &nats.js,
                        "runner",
                        r,
                        workflows_and_effects,
                        move || runner_load.in_flight() as u64,
                        move || draining.draining(),
                    )
                    .await?,
                ])
            }
        };
        // `/health`, `/ready`, `/metrics`: ready while NATS and JetStream answer for every
        // stream, each node's supervision tree runs and the runner takes new work.
        let runner_tree = runner.supervisor().clone();
        let intake = runner.clone();
        let (ops, _) = nodes::ops_router_with(&nats.client, role, &aggregate_tree, |r| {
            // The Gateway's own: its identity provider's keys, its view of the registry.
            gateway.edge_checks(r);
            nodes::supervision_check(r, "projection-supervision", projection_tree);
            nodes::supervision_check(r, "runner-supervision", runner_tree);
            nodes::intake_check(r, intake);
        })?;
        Ok(Self {
            router: gateway.router_with(ops),
            grpc_addr,
            query_addr,
            runner_addr,
            aggregate_types,
            workflows,
            runner,
            gateway,
            registrations,
            placing,
            stop,
            servers,
        })
    }

    /// A user token of [`DEV_TENANT`] (`commands:*`, `queries:*`, `workflows:*`) and an
    /// operator token of [`DEV_TENANT`] with [`DEV_OPERATOR_RIGHTS`], both valid 24 h, signed
    /// with the Gateway's secret.
    pub(crate) fn dev_tokens(&self) -> anyhow::Result<(String, String)> {
        let day = Duration::from_secs(24 * 3600);
        let token = self.gateway.authenticator().mint(
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
        let operator = self.gateway.authenticator().mint(
            "dev-operator",
            DEV_TENANT,
            &DEV_OPERATOR_RIGHTS
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>(),
            day,
        )?;
        Ok((token, operator))
    }

    /// True when the nodes are in the node registry (registry placement).
    pub(crate) fn registered(&self) -> bool {
        self.registrations.is_some()
    }

    /// With registry placement, the start of a stop: the aggregate and projection nodes leave
    /// the registry (Gateways stop placing work on them at once) and the runner starts draining
    /// with `grace` — its intake stops — and says so in its entry.
    pub(crate) async fn begin_leaving(&self, grace: Duration) {
        let Some([aggregate, projection, runner]) = &self.registrations else {
            return;
        };
        tokio::join!(aggregate.leave(), projection.leave(), async {
            self.runner.drain(grace, false).await;
            runner.refresh().await;
        });
    }

    /// With registry placement, after the runner drained: its entry leaves too.
    pub(crate) async fn finish_leaving(&self) {
        if let Some([_, _, runner]) = &self.registrations {
            runner.leave().await;
        }
    }

    /// Stops the nodes, each within [`nodes::DRAIN`].
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        for server in self.servers {
            let _ = tokio::time::timeout(nodes::DRAIN, server).await;
        }
        // The runner's effects held the Gateway, which holds the runner: let go of it.
        self.placing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}
