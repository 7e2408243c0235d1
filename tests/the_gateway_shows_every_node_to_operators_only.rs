//! `GET /admin/nodes` and `GET /admin/supervision`: every node the Gateway routes to, with its
//! role, version, uptime, behaviours and supervision tree — through the probe fan-out actor,
//! which asks each node once per TTL however many operators ask. Both need `admin:read`; a
//! node that does not answer is reported as unreachable, not waited for.

mod common;

use common::{Platform, gateway_call};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_every_node_and_its_tree_from_one_fan_out() {
    let p = Platform::start().await;
    let admin = p.token("acme", &["admin:read"]);
    let other = p.token("acme", &["commands:*", "queries:*", "runner:admin"]);
    for path in ["/admin/nodes", "/admin/supervision"] {
        let (s, body) = gateway_call(&p.gateway, "GET", path, &other, "").await;
        assert_eq!(s, 403, "{path}: {body}");
        let (s, _) = gateway_call(&p.gateway, "GET", path, "not-a-token", "").await;
        assert_eq!(s, 401, "{path}");
    }
    assert_eq!(
        p.gateway.probe_fanouts(),
        0,
        "nothing probed for refused callers"
    );

    // Several operators at once: one fan-out answers them all.
    let asks = (0..6).map(|_| gateway_call(&p.gateway, "GET", "/admin/nodes", &admin, ""));
    let answers = futures::future::join_all(asks).await;
    assert_eq!(p.gateway.probe_fanouts(), 1);
    let (s, body) = &answers[0];
    assert_eq!(*s, 200, "{body}");
    let nodes = body["nodes"].as_array().unwrap();
    let aggregate = nodes.iter().find(|n| n["role"] == "aggregate").unwrap();
    assert_eq!(aggregate["health"], "serving", "{aggregate}");
    assert_eq!(aggregate["behaviours"], serde_json::json!(["account"]));
    assert!(aggregate["uptime_seconds"].is_u64(), "{aggregate}");
    let projection = nodes.iter().find(|n| n["role"] == "projection").unwrap();
    assert_eq!(projection["behaviours"], serde_json::json!(["balances"]));
    // Nothing held through a store outage (see the outage tests for a node that holds).
    assert_eq!(projection["held"], serde_json::json!([]), "{projection}");
    // No runner runs in this platform: its address answers nothing.
    let runner = nodes.iter().find(|n| n["role"] == "runner").unwrap();
    assert_eq!(runner["health"], "unreachable", "{runner}");
    assert!(runner["error"].is_string());

    let (s, body) = gateway_call(&p.gateway, "GET", "/admin/supervision", &admin, "").await;
    assert_eq!(s, 200, "{body}");
    let trees = body["nodes"].as_array().unwrap();
    let aggregate = trees.iter().find(|n| n["role"] == "aggregate").unwrap();
    assert_eq!(aggregate["tree"]["name"], "aggregate-node", "{aggregate}");
    assert_eq!(
        p.gateway.probe_fanouts(),
        1,
        "served from the cache within its TTL"
    );
}
