//! A node call whose service panics — a bug in the runtime's own service code — answers
//! `INTERNAL`, marked `outcome-unknown` (it may have done its work before it failed), and is
//! counted in `cloudlysis_node_call_panics_total`; the node serves on. Served the way every node
//! serves (`cloudlysis_actors::grpc::serve`, behind the node's layers).
//!
//! Before: the panic unwound through the call's stream task and the caller got the stream
//! reset, which says nothing about what the node did.

mod common;

use std::time::Duration;

use cloudlysis_proto::projection::query_service_client::QueryServiceClient;
use cloudlysis_proto::projection::query_service_server::{QueryService, QueryServiceServer};
use cloudlysis_proto::projection::{GetRequest, GetResponse, ListRequest, ListResponse};
use cloudlysis_runtime::admission::NodeServing;
use cloudlysis_runtime::outcome::ErrorKind;
use cloudlysis_runtime::{RequestContext, TenantId};
use tonic::{Request, Response, Status};

/// A query service with a bug: `get` panics, `list` answers.
struct Buggy;

#[tonic::async_trait]
impl QueryService for Buggy {
    async fn get(&self, _: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        if std::hint::black_box(true) {
            panic!("a bug in a node's service");
        }
        Err(Status::unimplemented("unreachable"))
    }

    async fn list(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        Ok(Response::new(ListResponse::default()))
    }
}

fn signed<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    RequestContext::new(TenantId::new("acme").unwrap()).inject(r.metadata_mut());
    common::sign(&mut r, "acme", &["queries:balances"]);
    r.set_timeout(Duration::from_secs(5));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_call_is_internal_outcome_unknown_and_the_node_serves_on() {
    let metrics = cloudlysis_runtime::metrics::install().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = tonic::service::Routes::new(QueryServiceServer::new(Buggy));
    let serving = NodeServing::new(cloudlysis_test_support::node_keys(), 8);
    tokio::spawn(async move {
        cloudlysis_actors::grpc::serve(routes, &serving, listener, std::future::pending()).await
    });
    let mut client = QueryServiceClient::new(common::node_channel(addr).await);

    for _ in 0..2 {
        let get = GetRequest {
            view: "balances".into(),
            key: "a-1".into(),
            min_sequence: None,
        };
        let failed = client.get(signed(get)).await.unwrap_err();
        assert_eq!(failed.code(), tonic::Code::Internal, "{failed:?}");
        assert!(
            failed
                .message()
                .contains("whether it took effect is not known"),
            "{failed:?}"
        );
        assert_eq!(
            ErrorKind::of(&failed),
            Some(ErrorKind::OutcomeUnknown),
            "{failed:?}"
        );
    }
    // The node serves on.
    let listed = client.list(signed(ListRequest::default())).await;
    assert!(listed.is_ok(), "{listed:?}");
    let text = metrics.render();
    assert!(
        text.contains("cloudlysis_node_call_panics_total 2"),
        "{text}"
    );
}
