//! The projection node's gRPC services — `QueryService`, `ProjectionAdmin`, `OpsAdmin`,
//! `NodeAdmin` and health — served on a listener ([`ProjectionNode::serve_grpc`]) or called by a
//! Gateway in this process ([`ProjectionNode::local`], see [`cloudlysis_runtime::local`]). Both
//! put the same layers in front of the same services.

use std::future::Future;
use std::time::Duration;

use cloudlysis_proto::node::node_admin_server::NodeAdminServer;
use cloudlysis_proto::ops::ops_admin_server::OpsAdminServer;
use cloudlysis_proto::projection::query_service_server::QueryServiceServer;
use cloudlysis_proto::projection_admin::projection_admin_server::ProjectionAdminServer;
use cloudlysis_runtime::admission::NodeServing;
use tonic_health::pb::health_server::{Health, HealthServer};

use super::ProjectionNode;
use crate::node_admin::NodeAdminService;
use crate::ops::OpsService;

/// The node's services, ready to be routed (`H`: gRPC health).
struct Services<H> {
    health: H,
    admin: NodeAdminServer<NodeAdminService>,
    views: ProjectionAdminServer<ProjectionNode>,
    query: QueryServiceServer<ProjectionNode>,
    /// `None` when the poison bucket or the audit log could not be opened (logged).
    ops: Option<OpsAdminServer<OpsService>>,
}

impl ProjectionNode {
    async fn services(&self) -> Services<HealthServer<impl Health + use<>>> {
        let (reporter, health) = tonic_health::server::health_reporter();
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
        .behaviours(self.view_names());
        let ops = match OpsService::new(self.inner.js.clone(), Some(self.clone())).await {
            Ok(ops) => Some(ops.server()),
            Err(e) => {
                tracing::error!(error = %e, "OpsAdmin could not start; poison operations are not served");
                None
            }
        };
        Services {
            health,
            admin: admin.into_server(),
            views: ProjectionAdminServer::new(self.clone()),
            query: QueryServiceServer::new(self.clone()),
            ops,
        }
    }

    /// The node's services for callers in this process, behind the layers
    /// [`ProjectionNode::serve_grpc`] puts in front of them, with `serving`'s keys and count of
    /// calls in flight (pass the `NodeServing` the server gets, so both count against one
    /// `node.max_in_flight`).
    pub async fn local(&self, serving: &NodeServing) -> cloudlysis_runtime::local::LocalNode {
        let s = self.services().await;
        let mut routes = tonic::service::Routes::new(s.health)
            .add_service(s.admin)
            .add_service(s.views)
            .add_service(s.query);
        if let Some(ops) = s.ops {
            routes = routes.add_service(ops);
        }
        cloudlysis_runtime::local::LocalNode::new(routes, serving)
    }

    /// Serves `QueryService`, `ProjectionAdmin`, `OpsAdmin`, `NodeAdmin`, gRPC health and
    /// reflection on `listener` until `shutdown`; then stops the view controllers and the
    /// supervision tree.
    pub async fn serve_grpc(
        self,
        listener: tokio::net::TcpListener,
        serving: impl Into<NodeServing>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let serving = serving.into();
        let s = self.services().await;
        let root = self.inner.root.clone();
        let mut router = serving
            .server()?
            // Work whose caller has gone is counted; every call but health and reflection needs
            // a node credential, then a place within node.max_in_flight.
            .layer(cloudlysis_runtime::abandon::AbandonLayer)
            .layer(serving.keys.layer())
            .layer(serving.admission())
            .add_service(s.health)
            .add_service(s.admin)
            .add_service(s.views)
            .add_service(s.query);
        if let Some(ops) = s.ops {
            router = router.add_service(ops);
        }
        let result = crate::grpc::with_reflection(router)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener)
                    .with_nodelay(Some(true))
                    .with_keepalive(Some(Duration::from_secs(60))),
                shutdown,
            )
            .await;
        self.inner
            .controllers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let _ = root.shutdown(Duration::from_secs(30)).await;
        result
    }
}
