//! The projection node's gRPC services — `QueryService`, `ProjectionAdmin`, `OpsAdmin`,
//! `NodeAdmin` and health — served on a listener ([`ProjectionNode::serve_grpc`]) or called by a
//! Gateway in this process ([`ProjectionNode::local`], see [`cloudlysis_runtime::local`]). Both
//! put the same layers in front of the same services.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cloudlysis_proto::projection::query_service_server::{QueryService, QueryServiceServer};
use cloudlysis_proto::projection_admin::projection_admin_server::ProjectionAdminServer;
use cloudlysis_runtime::admission::NodeServing;

use super::ProjectionNode;
use crate::node_admin::NodeAdminService;
use crate::ops::OpsService;

impl ProjectionNode {
    /// The node's services (`OpsAdmin` left out, logged, when the poison bucket or the audit
    /// log cannot be opened).
    async fn routes(&self, serving: &NodeServing) -> tonic::service::Routes {
        let (reporter, _) = tonic_health::server::health_reporter();
        reporter
            .set_serving::<QueryServiceServer<ProjectionNode>>()
            .await;
        reporter
            .set_serving::<ProjectionAdminServer<ProjectionNode>>()
            .await;
        let admin = NodeAdminService::new(
            "projection",
            self.inner.instance.clone(),
            self.inner.root.clone(),
        )
        .behaviours(self.view_names())
        .holds("view");
        let health = crate::health::NodeHealth::server(&reporter, serving.readiness());
        let routes = tonic::service::Routes::new(health)
            .add_service(admin.into_server())
            .add_service(ProjectionAdminServer::new(self.clone()))
            .add_service(QueryServiceServer::new(self.clone()));
        OpsService::added_to(routes, self.inner.js.clone(), Some(self.clone())).await
    }

    /// The node's services for callers in this process, behind the layers
    /// [`ProjectionNode::serve_grpc`] puts in front of them, with `serving`'s keys and count of
    /// calls in flight (pass the `NodeServing` the server gets, so both count against one
    /// `node.max_in_flight`). `QueryService` is also served to typed calls.
    pub async fn local(&self, serving: &NodeServing) -> cloudlysis_runtime::local::LocalNode {
        let query: Arc<dyn QueryService> = Arc::new(self.clone());
        cloudlysis_runtime::local::LocalNode::new(self.routes(serving).await, serving)
            .with_typed(query)
    }

    /// Serves `QueryService`, `ProjectionAdmin`, `OpsAdmin`, `NodeAdmin`, gRPC health and
    /// reflection on `listener` until `shutdown` ([`crate::grpc::serve`]); then stops the view
    /// controllers and the supervision tree.
    pub async fn serve_grpc(
        self,
        listener: tokio::net::TcpListener,
        serving: impl Into<NodeServing>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let serving = serving.into();
        let result =
            crate::grpc::serve(self.routes(&serving).await, &serving, listener, shutdown).await;
        self.inner
            .controllers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let _ = self.inner.root.shutdown(Duration::from_secs(30)).await;
        result
    }
}
