//! A drain's `grace_ms` outside what a runner takes (`runner.drain_grace_ms`'s bounds, 100 ms –
//! 1 h) is refused — 400 naming the bounds at the Gateway, `INVALID_ARGUMENT` at the node —
//! and the runner keeps serving.
//!
//! Before: `POST /admin/runner/nodes/{node}/drain?wait=true&grace_ms=18446744073709551615`
//! panicked the Gateway's handler (tonic's deadline encoding of the call) and dropped the
//! connection; without `wait` the node drained with a grace of 584 million years.

mod common;

use cloudlysis_proto::runner::DrainRequest;
use cloudlysis_proto::runner::runner_admin_client::RunnerAdminClient;
use common::{Platform, spawn_runner};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_out_of_bounds_is_refused_and_the_runner_keeps_serving() {
    let mut p = Platform::start().await;
    let runner = spawn_runner(&p.server.url(), &format!("http://{}", p.grpc_addr), &[]).await;
    p.route_runners(&[&runner.grpc]);
    let token = p.token("acme", &["runner:admin"]);
    let (st, nodes) = p.call("GET", "/admin/runner/nodes", &token, "").await;
    assert_eq!(st, 200, "{nodes}");
    let node = nodes["nodes"][0]["node_id"].as_str().unwrap().to_string();

    for path in [
        format!("/admin/runner/nodes/{node}/drain?wait=true&grace_ms=18446744073709551615"),
        format!("/admin/runner/nodes/{node}/drain?grace_ms=18446744073709551615"),
        format!("/admin/runner/nodes/{node}/drain?grace_ms=0"),
        "/admin/runner/drain?wait=true&grace_ms=3600001".to_string(),
    ] {
        let (st, body) = p.call("POST", &path, &token, "").await;
        assert_eq!(st, 400, "{path}: {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("grace_ms") && detail.contains("100 – 3600000"),
            "{path}: {body}"
        );
    }
    // The node refuses it too, whoever calls it.
    let mut client = RunnerAdminClient::with_interceptor(
        common::node_channel(&runner.grpc).await,
        common::operator_credential,
    );
    let refused = client
        .drain(DrainRequest {
            grace_ms: Some(u64::MAX),
            wait: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("grace_ms"), "{refused:?}");

    // Nothing was drained: the runner still serves.
    let (st, status) = p
        .call("GET", &format!("/admin/runner/nodes/{node}"), &token, "")
        .await;
    assert_eq!(st, 200, "{status}");
    assert_eq!(status["draining"], false, "{status}");
    assert_eq!(status["drain_state"], "serving", "{status}");
}
