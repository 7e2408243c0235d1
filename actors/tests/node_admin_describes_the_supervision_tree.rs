//! `node.admin.v1.NodeAdmin/Describe` returns the node's role, version and supervision tree with
//! mailbox statistics, over a real gRPC connection.

use std::time::Duration;

use cloudlysis_actors::node_admin::NodeAdminService;
use cloudlysis_proto::node::{DescribeRequest, node_admin_client::NodeAdminClient};
use cloudlysis_runtime::mailbox::{ActorProcessingErr, BoundedActor, BoundedRef};
use cloudlysis_supervision::{ChildSpec, SupervisorConfig, SupervisorRef};

struct Idle;

impl BoundedActor for Idle {
    type Msg = ();
    type State = ();
    type Arguments = ();
    const KIND: &'static str = "idle";

    async fn pre_start(&self, _: BoundedRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: &BoundedRef<()>,
        _: (),
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

#[tokio::test]
async fn describe_returns_role_version_and_tree() {
    let mailbox = BoundedRef::new(Idle::KIND, 32);
    let root = SupervisorRef::start(
        SupervisorConfig::new("projection-node")
            .child(ChildSpec::bounded("view-worker", mailbox, || (Idle, ())))
            .child(ChildSpec::supervisor(SupervisorConfig::new("consumers"))),
        None,
    )
    .await
    .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = NodeAdminService::new("projection", "node-1", root.clone()).into_server();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let mut client = NodeAdminClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut request = tonic::Request::new(DescribeRequest {});
    request.set_timeout(Duration::from_secs(5));
    let resp = client.describe(request).await.unwrap().into_inner();
    assert_eq!(resp.role, "projection");
    assert_eq!(resp.node_id, "node-1");
    assert_eq!(resp.version, env!("CARGO_PKG_VERSION"));
    let tree = resp.supervision.unwrap();
    assert_eq!(tree.name, "projection-node");
    assert_eq!(tree.strategy, "one_for_one");
    assert_eq!(tree.children[0].name, "view-worker");
    assert_eq!(tree.children[0].kind, "idle");
    assert_eq!(tree.children[0].status, "running");
    assert_eq!(tree.children[0].mailbox.unwrap().capacity, 32);
    assert_eq!(tree.supervisors[0].name, "consumers");

    // A node whose tree is gone answers UNAVAILABLE, not a hang.
    root.shutdown(Duration::from_secs(5)).await.unwrap();
    let err = client.describe(DescribeRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    server.abort();
}
