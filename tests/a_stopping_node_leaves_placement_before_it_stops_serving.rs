//! Drain removes a node from placement first: on SIGTERM an aggregate node leaves the node
//! registry at once — a Gateway routing by the registry stops placing its entities there —
//! while it keeps serving for `node.leave_grace_ms`, so calls already placed on it are answered;
//! then it stops and exits 0. Before, a node deleted its entry only after its gRPC server had
//! shut down, so for up to the registry TTL Gateways kept sending it calls it no longer took.

mod common;

use std::time::Duration;

use cloudlysis_test_support::{NatsServer, eventually};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_the_registry_while_the_node_still_serves() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    // A long grace, so "still serving after it left" does not depend on timing.
    let (mut node, grpc, _http) = common::spawn_aggregate(
        &server.url(),
        &[("CLOUDLYSIS_NODE_LEAVE_GRACE_MS", "20000")],
    )
    .await;
    let gw = cloudlysis_gateway::Gateway::new(common::gateway_settings(
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:1".parse().unwrap(),
        None,
    ))
    .unwrap();
    let placement = gw.use_registry(js.clone()).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            placement.live("aggregate").len() == 1
        })
        .await
    );

    let pid = rustix::process::Pid::from_raw(node.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();

    // Out of placement well before the registry TTL would have dropped it…
    assert!(
        eventually(Duration::from_secs(2), || async {
            placement.live("aggregate").is_empty()
        })
        .await,
        "the stopping node stayed in placement: {:?}",
        placement.live("aggregate")
    );
    let token = gw
        .authenticator()
        .mint(
            "test",
            "acme",
            &["commands:*".into()],
            Duration::from_secs(600),
        )
        .unwrap();
    let req = axum::http::Request::post("/v1/commands/account/a-1")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            r#"{"type":"Open","payload":{"owner":"o"}}"#,
        ))
        .unwrap();
    let resp = tower::ServiceExt::oneshot(gw.router(), req).await.unwrap();
    assert_eq!(resp.status(), 503, "no live node: nothing is sent");
    assert_eq!(resp.headers()["retry-after"], "1");

    // …while the node still answers what was already sent to it.
    let channel = common::node_channel(&grpc).await;
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(health.is_ok(), "{health:?}");
    assert!(
        node.try_wait().unwrap().is_none(),
        "the node stopped before its grace"
    );
    let _ = node.kill().await;
}
