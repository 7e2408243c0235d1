//! `List` cannot exhaust a projection node: it holds at most a page of keys in memory (a
//! headers-only scan keeping the smallest keys after the cursor), a node runs at most
//! `MAX_CONCURRENT_LISTS` at once and refuses more at once (429 + `Retry-After`), and a list out
//! of time is `DEADLINE_EXCEEDED` (504), which the Gateway does not retry. Before the fix lists
//! were not admission-controlled (every one read up to 100 000 full documents and sorted them),
//! and a timeout was UNAVAILABLE, retried three times by the Gateway (503 in the end).

mod common;

use std::time::Duration;

use cloudlysis_actors::projection::MAX_CONCURRENT_LISTS;
use cloudlysis_test_support::eventually;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_beyond_the_bound_are_429_and_a_stalled_one_is_504() {
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:account", "queries:balances"]);
    let last = p
        .account_command(&token, "a", r#"{"type":"Open","payload":{"owner":"a"}}"#)
        .await;
    let (s, body) = query(
        &p,
        "/v1/query/balances?limit=10",
        &token,
        &[("x-min-sequence", &last.to_string())],
    )
    .await;
    assert_eq!(s, 200, "{body}");

    // The store stalls: lists hang in their scan, holding the node's admission.
    p.server.pause().unwrap();
    let mut stalled = Vec::new();
    for _ in 0..MAX_CONCURRENT_LISTS {
        let (gw, token) = (p.gateway.clone(), token.clone());
        stalled.push(tokio::spawn(async move {
            let req = axum::http::Request::get("/v1/query/balances?limit=10")
                .header("authorization", format!("Bearer {token}"))
                .body(axum::body::Body::empty())
                .unwrap();
            let resp = tower::ServiceExt::oneshot(gw.router(), req).await.unwrap();
            (resp.status().as_u16(), body_json(resp).await)
        }));
    }
    let node = p.projection.clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            let node = node.clone();
            async move { node.lists_in_flight() == MAX_CONCURRENT_LISTS }
        })
        .await,
        "the lists did not all start"
    );
    // One more is refused at once, asking to come back.
    let req = axum::http::Request::get("/v1/query/balances?limit=10")
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(p.gateway.router(), req)
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().contains_key("retry-after"));

    // The stalled ones end at their deadline: 504, not a retried 503.
    for task in stalled {
        let (s, body) = task.await.unwrap();
        assert_eq!(s, 504, "{body}");
    }
    p.server.resume().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            query(&p, "/v1/query/balances?limit=10", &token, &[])
                .await
                .0
                == 200
        })
        .await
    );
}
