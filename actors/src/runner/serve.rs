//! The runner node's gRPC services — `WorkflowService`, `RunnerAdmin`, `OpsAdmin`,
//! `NodeAdmin` and health — served on a listener ([`RunnerNode::serve_grpc`]) or called by a
//! Gateway in this process ([`RunnerNode::local`], see [`cloudlysis_runtime::local`]). Both put
//! the same layers in front of the same services and share the node's health reporter, so a
//! drain turns both `NOT_SERVING`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cloudlysis_proto::runner::runner_admin_server::RunnerAdminServer;
use cloudlysis_proto::workflows::workflow_service_server::WorkflowServiceServer;
use cloudlysis_runtime::admission::NodeServing;

use super::RunnerNode;
use crate::node_admin::NodeAdminService;
use crate::ops::OpsService;

impl RunnerNode {
    /// The node's services (`OpsAdmin` left out, logged, when the poison bucket or the audit
    /// log cannot be opened).
    async fn routes(&self, serving: &NodeServing) -> tonic::service::Routes {
        self.inner
            .health
            .set_serving::<RunnerAdminServer<RunnerNode>>()
            .await;
        self.set_health(!self.draining()).await;
        let behaviours: Vec<&str> = self
            .workflows()
            .into_iter()
            .chain(self.effect_types())
            .collect();
        let me = self.clone();
        let admin = NodeAdminService::new(
            "runner",
            self.inner.node_id.clone(),
            self.inner.root.clone(),
        )
        .behaviours(behaviours)
        .holds("handler")
        .state(Arc::new(move || {
            let state = me.drain_progress().state;
            (
                state == super::drain::DrainState::Serving,
                state.as_str().to_string(),
            )
        }));
        let health = crate::health::NodeHealth::server(&self.inner.health, serving.readiness());
        let routes = tonic::service::Routes::new(health)
            .add_service(admin.into_server())
            .add_service(RunnerAdminServer::new(self.clone()))
            .add_service(WorkflowServiceServer::new(self.clone()));
        OpsService::added_to(routes, self.inner.ctx.js.clone(), None).await
    }

    /// The node's services for callers in this process, behind the layers
    /// [`RunnerNode::serve_grpc`] puts in front of them, with `serving`'s keys and count of calls
    /// in flight (pass the `NodeServing` the server gets, so both count against one
    /// `node.max_in_flight`). Its health is the server's: `NOT_SERVING` while draining.
    pub async fn local(&self, serving: &NodeServing) -> cloudlysis_runtime::local::LocalNode {
        cloudlysis_runtime::local::LocalNode::new(self.routes(serving).await, serving)
    }

    /// Serves `WorkflowService`, `RunnerAdmin`, `OpsAdmin`, `NodeAdmin`, gRPC health and
    /// reflection on `listener` until `shutdown` resolves ([`crate::grpc::serve`]); then stops
    /// the supervision tree.
    pub async fn serve_grpc(
        self,
        listener: tokio::net::TcpListener,
        serving: impl Into<NodeServing>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let serving = serving.into();
        let result =
            crate::grpc::serve(self.routes(&serving).await, &serving, listener, shutdown).await;
        let _ = self.inner.root.shutdown(Duration::from_secs(30)).await;
        result
    }
}
