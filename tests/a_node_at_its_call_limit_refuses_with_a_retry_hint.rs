//! Backpressure across processes: a node serves at most `node.max_in_flight` calls at once; one
//! more is refused before any handler runs with `UNAVAILABLE`, marked `not-committed`, and a
//! `grpc-retry-pushback-ms` hint, which the Gateway honours when it retries and turns into 503
//! with `Retry-After` — never a bare 500 or a timeout. Health checks still answer. Before, a node
//! took every call it was sent.

mod common;

use std::time::Duration;

use cloudlysis_proto::projection::GetRequest;
use cloudlysis_proto::projection::query_service_client::QueryServiceClient;
use cloudlysis_runtime::admission::NodeServing;
use cloudlysis_runtime::outcome::ErrorKind;
use cloudlysis_runtime::{RequestContext, TenantId};
use common::Platform;

fn get(min_sequence: Option<u64>) -> tonic::Request<GetRequest> {
    let mut r = tonic::Request::new(GetRequest {
        view: "balances".into(),
        key: "a-1".into(),
        min_sequence,
    });
    RequestContext::new(TenantId::new("acme").unwrap()).inject(r.metadata_mut());
    common::sign(&mut r, "acme", &["queries:balances"]);
    r.set_timeout(Duration::from_secs(5));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_the_limit_is_refused_at_once_with_a_hint_and_the_gateway_says_503() {
    let p = Platform::start().await;
    // A projection node that serves one call at a time.
    let node =
        cloudlysis_actors::projection::ProjectionNode::builder(p.js.clone(), Default::default())
            .register::<cloudlysis_examples::balances::Balances>()
            .build()
            .await
            .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(node.serve_grpc(
        listener,
        NodeServing::new(cloudlysis_test_support::node_keys(), 1),
        std::future::pending(),
    ));
    let channel = common::node_channel(addr).await;

    // One call holds the only place: it waits for a sequence the view never reaches. (Should
    // a probe below win the race for the place, the holder is refused and started again.)
    let hold = || {
        let mut holder = QueryServiceClient::new(channel.clone());
        tokio::spawn(async move { holder.get(get(Some(1_000_000))).await })
    };
    let held = std::sync::Mutex::new(hold());

    let client = QueryServiceClient::new(channel.clone());
    let last = std::sync::Mutex::new(None);
    let refused = cloudlysis_test_support::eventually(Duration::from_secs(5), || async {
        {
            let mut h = held.lock().unwrap();
            if h.is_finished() {
                *h = hold();
            }
        }
        let r = client.clone().get(get(None)).await;
        let done = matches!(&r, Err(s) if s.code() == tonic::Code::Unavailable);
        *last.lock().unwrap() = Some(r);
        done
    })
    .await;
    assert!(refused, "{:?}", last.lock().unwrap());
    let held = held.into_inner().unwrap();
    let status = last.lock().unwrap().take().unwrap().unwrap_err();
    assert!(
        status.message().contains("node.max_in_flight"),
        "{status:?}"
    );
    assert_eq!(ErrorKind::of(&status), Some(ErrorKind::NotCommitted));
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "200"
    );

    // Health still answers while the node is full.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();

    // Through the Gateway: retried after the hint, then 503 with Retry-After naming the limit.
    let gw = p.gateway_with(|s| s.projection_addr = format!("http://{addr}"));
    let token = p.token("acme", &["queries:*"]);
    let req = axum::http::Request::get("/v1/query/balances/a-1")
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(gw.router(), req).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body = common::body_json(resp).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("node.max_in_flight"),
        "{body}"
    );

    // The held call ends at its deadline and frees the place.
    let held = held.await.unwrap().unwrap_err();
    assert_eq!(held.code(), tonic::Code::DeadlineExceeded, "{held}");
    let mut client = QueryServiceClient::new(common::node_channel(addr).await);
    let after = client.get(get(None)).await;
    assert!(
        !matches!(&after, Err(s) if s.code() == tonic::Code::Unavailable),
        "{after:?}"
    );
}
