//! With registry placement (`gateway.placement = registry`), nodes register themselves in NATS
//! KV and the Gateway sends every command for one entity to one aggregate node (rendezvous
//! hashing over the live nodes serving the type), so optimistic concurrency is the safety net,
//! not the routine. Two Gateways agree on the placement without talking to each other: an
//! entity's commands land on one node whichever Gateway they come through. When a node dies
//! (kill -9), its entities answer from another node once its registry entry is older than the
//! TTL, through either Gateway, while load keeps coming, and no acknowledged command is lost.
//! Reads spread over the two projection nodes, through either Gateway. Before, a Gateway held one
//! static address per role.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use cloudlysis_runtime::registry;
use cloudlysis_test_support::{NatsServer, eventually, http_get};
use common::body_json;

/// The sum of the series of `metric` with `label` of the node serving metrics at `http`.
async fn counted(http: &str, metric: &str, label: &str) -> u64 {
    let (_, text) = http_get(&format!("{http}/metrics")).await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(metric) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// `cloudlysis_commands_total{outcome="ok"}` of the node serving metrics at `http`.
async fn commands_ok(http: &str) -> u64 {
    counted(http, "cloudlysis_commands_total", r#"outcome="ok""#).await
}

/// POSTs `body` to account `id` through `gw`: the status and the answer.
async fn post_via(
    gw: &cloudlysis_gateway::Gateway,
    token: &str,
    id: &str,
    body: &'static str,
    key: Option<&str>,
) -> (u16, serde_json::Value) {
    use tower::ServiceExt;
    let mut req = axum::http::Request::post(format!("/v1/commands/account/{id}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let resp = gw
        .router()
        .oneshot(req.body(axum::body::Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, body_json(resp).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_entity_one_node_and_a_dead_nodes_entities_move_within_the_ttl() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    let mut nodes = Vec::new();
    for _ in 0..2 {
        nodes.push(common::spawn_aggregate(&server.url(), &[]).await);
    }
    let mut projections = Vec::new();
    for _ in 0..2 {
        projections.push(common::spawn_node("projection", &server.url(), &[]).await);
    }
    let gw = cloudlysis_gateway::Gateway::new(common::gateway_settings(
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:1".parse().unwrap(),
        None,
    ))
    .unwrap();
    let placement = gw.use_registry(js.clone()).await.unwrap();
    // A second Gateway, with its own view of the registry.
    let gw2 = cloudlysis_gateway::Gateway::new(common::gateway_settings(
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:1".parse().unwrap(),
        None,
    ))
    .unwrap();
    let placement2 = gw2.use_registry(js.clone()).await.unwrap();
    for p in [&placement, &placement2] {
        assert!(
            eventually(Duration::from_secs(10), || async {
                p.live("aggregate").len() == 2 && p.live("projection").len() == 2
            })
            .await,
            "{:?} {:?}",
            p.live("aggregate"),
            p.live("projection")
        );
    }
    let http_of: HashMap<String, String> = nodes
        .iter()
        .map(|(_, grpc, http)| (format!("http://{grpc}"), http.clone()))
        .collect();
    let token = {
        let auth = gw.authenticator();
        auth.mint(
            "test",
            "acme",
            &["commands:*".into()],
            Duration::from_secs(600),
        )
        .unwrap()
    };
    // Gateway 0 or 1; both accept the same tokens (one signing secret).
    let post = |via: usize, id: String, body: &'static str, key: Option<String>| {
        let gw = [&gw, &gw2][via % 2].clone();
        let token = token.clone();
        async move { post_via(&gw, &token, &id, body, key.as_deref()).await }
    };

    // Every entity's commands land on the node rendezvous picks for it, and only there, whichever
    // Gateway they come through (the Open through one, the Deposit through the other).
    let ids: Vec<String> = (0..24).map(|i| format!("a-{i}")).collect();
    let mut acknowledged: HashMap<String, u64> = HashMap::new();
    let mut placed: HashMap<String, u64> = HashMap::new();
    let mut last_sequence = 0;
    for (i, id) in ids.iter().enumerate() {
        let node = placement.aggregate_for("acme", "account", id).unwrap();
        assert_eq!(
            placement2
                .aggregate_for("acme", "account", id)
                .unwrap()
                .grpc_addr,
            node.grpc_addr,
            "{id}: the Gateways disagree"
        );
        *placed.entry(node.grpc_addr.clone()).or_default() += 2;
        for (via, body) in [
            (i, r#"{"type":"Open","payload":{"owner":"o"}}"#),
            (i + 1, r#"{"type":"Deposit","payload":{"amount":5}}"#),
        ] {
            let (s, b) = post(via, id.clone(), body, None).await;
            assert_eq!(s, 200, "{id}: {b}");
            last_sequence = last_sequence.max(b["stream_sequence"].as_u64().unwrap());
            *acknowledged.entry(id.clone()).or_default() += 1;
        }
    }
    assert_eq!(placed.len(), 2, "both nodes got entities: {placed:?}");
    for (addr, n) in &placed {
        assert_eq!(commands_ok(&http_of[addr]).await, *n, "{addr}");
    }

    // Reads go to either projection node, through either Gateway, and see the writes.
    let reader = gw
        .authenticator()
        .mint(
            "test",
            "acme",
            &["queries:*".into()],
            Duration::from_secs(600),
        )
        .unwrap();
    for (i, id) in ids.iter().enumerate() {
        use tower::ServiceExt;
        let req = axum::http::Request::get(format!("/v1/query/balances/{id}"))
            .header("authorization", format!("Bearer {reader}"))
            .header("x-min-sequence", last_sequence.to_string())
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = [&gw, &gw2][i % 2].router().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = body_json(resp).await;
        assert_eq!(status, 200, "{id}: {body}");
        assert_eq!(body["document"]["balance"], 5, "{id}: {body}");
    }
    let mut reads = Vec::new();
    for (_, _, http) in &projections {
        reads.push(counted(http, "cloudlysis_view_gets_total", r#"outcome="found""#).await);
    }
    assert_eq!(reads.iter().sum::<u64>(), ids.len() as u64, "{reads:?}");
    assert!(
        reads.iter().all(|&n| n > 0),
        "one projection node took every read: {reads:?}"
    );

    // The operator's node list comes from the registry too: both nodes, serving.
    let admin = gw
        .authenticator()
        .mint(
            "ops",
            "acme",
            &["admin:read".into()],
            Duration::from_secs(600),
        )
        .unwrap();
    let listed = {
        use tower::ServiceExt;
        let req = axum::http::Request::get("/admin/nodes")
            .header("authorization", format!("Bearer {admin}"))
            .body(axum::body::Body::empty())
            .unwrap();
        body_json(gw.router().oneshot(req).await.unwrap()).await
    };
    let mut listed_addrs: Vec<String> = listed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["role"] == "aggregate" && n["health"] == "serving")
        .map(|n| n["address"].as_str().unwrap().to_string())
        .collect();
    listed_addrs.sort();
    let mut expected: Vec<String> = http_of.keys().cloned().collect();
    expected.sort();
    assert_eq!(listed_addrs, expected, "{listed}");

    // Runner operations find runners through the registry as well.
    let _runner = common::spawn_runner(&server.url(), &format!("http://{}", nodes[1].1), &[]).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            placement.live("runner").len() == 1
        })
        .await
    );
    let operator = gw
        .authenticator()
        .mint(
            "ops",
            "acme",
            &["runner:admin".into()],
            Duration::from_secs(600),
        )
        .unwrap();
    let runners = {
        use tower::ServiceExt;
        let req = axum::http::Request::get("/admin/runner/nodes")
            .header("authorization", format!("Bearer {operator}"))
            .body(axum::body::Body::empty())
            .unwrap();
        body_json(gw.router().oneshot(req).await.unwrap()).await
    };
    let listed = runners["nodes"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{runners}");
    assert!(listed[0]["error"].is_null(), "{runners}");
    assert!(listed[0]["node_id"].is_string(), "{runners}");

    // Load through both Gateways while a node dies: each worker deposits under a fresh
    // idempotency key and retries that key until it is acknowledged (503: nothing was sent;
    // 502 / 504 outcome-unknown: a call the kill caught), pausing 50 ms as a client honouring
    // Retry-After would.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (gws, token, ids, stop) = (
                [gw.clone(), gw2.clone()],
                token.clone(),
                ids.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut acked: HashMap<String, u64> = HashMap::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let id = &ids[(w * 7 + n * 5) % ids.len()];
                    let key = format!("load-{w}-{n}");
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
                    loop {
                        let body = r#"{"type":"Deposit","payload":{"amount":1}}"#;
                        let (s, b) = post_via(&gws[n % 2], &token, id, body, Some(&key)).await;
                        match s {
                            200 => break,
                            502..=504 if tokio::time::Instant::now() < deadline => {
                                tokio::time::sleep(Duration::from_millis(50)).await
                            }
                            _ => panic!("{id} {key}: {s} {b}"),
                        }
                    }
                    *acked.entry(id.clone()).or_default() += 1;
                    n += 1;
                }
                acked
            })
        })
        .collect();

    // kill -9 one node: its entities answer from the other within the TTL (plus a heartbeat).
    let victim_addr = format!("http://{}", nodes[0].1);
    nodes[0].0.kill().await.unwrap();
    let moved: Vec<&String> = ids
        .iter()
        .filter(|id| {
            placement
                .aggregate_for("acme", "account", id)
                .unwrap()
                .grpc_addr
                == victim_addr
        })
        .collect();
    assert!(!moved.is_empty());
    let killed = tokio::time::Instant::now();
    for (n, id) in moved.iter().enumerate() {
        // A retried command carries its idempotency key: it commits once whatever happened.
        let key = format!("move-{n}");
        let last = std::sync::Mutex::new((0, serde_json::Value::Null));
        let ok = eventually(registry::TTL + Duration::from_secs(5), || async {
            let answer = post(
                n,
                (*id).clone(),
                r#"{"type":"Deposit","payload":{"amount":1}}"#,
                Some(key.clone()),
            )
            .await;
            // While the dead node is still placed: 503 with Retry-After (nothing sent), or
            // outcome-unknown (502 / 504) for a call the kill caught on its connection — retried
            // with the same key either way.
            let unknown = answer.1["type"] == "urn:cloudlysis:problem:outcome-unknown";
            assert!(
                answer.0 == 200
                    || answer.0 == 503
                    || ((answer.0 == 502 || answer.0 == 504) && unknown),
                "{id}: {answer:?}"
            );
            let done = answer.0 == 200;
            *last.lock().unwrap() = answer;
            done
        })
        .await;
        assert!(ok, "{id} did not move: {:?}", last.lock().unwrap());
        *acknowledged.entry((*id).clone()).or_default() += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut under_load = 0;
    for w in workers {
        for (id, n) in w.await.unwrap() {
            *acknowledged.entry(id).or_default() += n;
            under_load += n;
        }
    }
    assert!(under_load > 0, "no load ran during the kill");
    eprintln!(
        "{under_load} deposits acknowledged under load; the dead node's entities answered from the other node {:?} after the kill",
        killed.elapsed()
    );
    assert!(
        !placement
            .live("aggregate")
            .iter()
            .any(|n| n.grpc_addr == victim_addr)
    );
    // The channel pool and the placement watcher are bounded actors in the Gateway's tree.
    let tree = gw
        .supervisor()
        .unwrap()
        .snapshot(Duration::from_secs(5))
        .await
        .unwrap();
    for (name, kind) in [
        ("channel-pool", "channel_pool"),
        ("placement-watcher", "placement_watcher"),
    ] {
        let child = tree.find_child(name).unwrap_or_else(|| panic!("{tree:?}"));
        assert_eq!(child.kind, kind);
        assert!(
            child.mailbox.as_ref().is_some_and(|m| m.capacity > 0),
            "{child:?}"
        );
    }
    // The sweep (every 250 ms) evicts the departed node's channel.
    assert!(
        eventually(Duration::from_secs(2), || async {
            !placement.pool.addresses().contains(&victim_addr)
        })
        .await,
        "the departed node's channel was not evicted"
    );

    // A Gateway that starts now replays the dead node's last entry (still in the bucket): it is
    // as old as its write, so the new Gateway does not count the dead node as live either.
    let late = cloudlysis_gateway::Gateway::new(common::gateway_settings(
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:1".parse().unwrap(),
        None,
    ))
    .unwrap();
    let late = late.use_registry(js.clone()).await.unwrap();
    let survivor = format!("http://{}", nodes[1].1);
    assert!(
        eventually(Duration::from_secs(5), || async {
            late.live("aggregate")
                .iter()
                .any(|n| n.grpc_addr == survivor)
        })
        .await
    );
    assert!(
        late.live("aggregate")
            .iter()
            .all(|n| n.grpc_addr != victim_addr),
        "a dead node counted as live: {:?}",
        late.live("aggregate")
    );

    // No acknowledged command was lost: each acknowledged one is a commit in the stream.
    let mut stream = js.get_stream("AGGREGATE_EVENTS").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut commits: HashMap<String, u64> = HashMap::new();
    for seq in 1..=last {
        if let Ok(m) = stream.get_raw_message(seq).await {
            let id = m.subject.rsplit('.').next().unwrap().to_string();
            *commits.entry(id).or_default() += 1;
        }
    }
    assert_eq!(commits, acknowledged);
}
