//! A Gateway in the same process as its nodes calls them without the network
//! (`runtime::local`): a command, a query and a workflow start reach their nodes with nothing
//! listening at their addresses, the node credential is still verified as on the wire (the same
//! refusal when the secrets differ), the node's `max_in_flight` counts calls from both paths,
//! and a draining runner's health is `NOT_SERVING` in process as on its server.

mod common;

use std::collections::HashMap;

use cloudlysis_gateway::Gateway;
use cloudlysis_runtime::admission::NodeServing;
use common::*;

/// Where nothing listens: only the in-process path can reach a node registered there.
const DEAD: &str = "http://127.0.0.1:1";
const OPEN: &str = r#"{"type":"Open","payload":{"owner":"local"}}"#;
const DEPOSIT: &str = r#"{"type":"Deposit","payload":{"amount":1}}"#;

fn gateway(
    p: &Platform,
    node_secret: &str,
    locals: HashMap<String, cloudlysis_runtime::local::LocalNode>,
) -> Gateway {
    let mut settings = gateway_settings(p.grpc_addr, p.projection_addr, None);
    settings.aggregate_addr = DEAD.into();
    settings.node_secret = node_secret.into();
    Gateway::with_local_nodes(settings, locals).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_reaches_a_node_in_the_process_with_nothing_listening() {
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:account"]);

    // Over the network the address is dead: nothing was sent, 503.
    let remote = gateway(&p, cloudlysis_test_support::NODE_SECRET, HashMap::new());
    let (s, resp) = p
        .command_via(&remote, "/v1/commands/account/loc-1", &token, OPEN)
        .await;
    assert_eq!(s, 503, "{}", body_json(resp).await);

    // The same address registered as the node in this process: committed.
    let serving: NodeServing = cloudlysis_test_support::node_keys().into();
    let local = p.node.local(&serving).await;
    let gw = gateway(
        &p,
        cloudlysis_test_support::NODE_SECRET,
        HashMap::from([(DEAD.to_string(), local)]),
    );
    let before = p.message_count().await;
    let (s, resp) = p
        .command_via(&gw, "/v1/commands/account/loc-1", &token, OPEN)
        .await;
    let body = body_json(resp).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["version"], 1, "{body}");
    assert_eq!(
        p.message_count().await,
        before + 1,
        "one commit on the stream"
    );
    let (s, resp) = p
        .command_via(
            &gw,
            "/v1/commands/account/loc-1",
            &token,
            r#"{"type":"Deposit","payload":{"amount":5}}"#,
        )
        .await;
    let body = body_json(resp).await;
    assert_eq!(
        (s, &body["version"]),
        (200, &serde_json::json!(2)),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_the_node_refuses_is_refused_in_process_as_on_the_wire() {
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:account"]);
    let other = "another-node-secret-another-node-secret";

    // Over the wire: a Gateway signing with another secret than the node's.
    let mut settings = gateway_settings(p.grpc_addr, p.projection_addr, None);
    settings.node_secret = other.into();
    let wire = Gateway::new(settings).unwrap();
    let (wire_status, resp) = p
        .command_via(&wire, "/v1/commands/account/loc-2", &token, OPEN)
        .await;
    let wire_body = body_json(resp).await;

    // In process: the same mismatch.
    let serving: NodeServing = cloudlysis_test_support::node_keys().into();
    let gw = gateway(
        &p,
        other,
        HashMap::from([(DEAD.to_string(), p.node.local(&serving).await)]),
    );
    let before = p.message_count().await;
    let (status, resp) = p
        .command_via(&gw, "/v1/commands/account/loc-2", &token, OPEN)
        .await;
    let body = body_json(resp).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!((status, &body["type"]), (wire_status, &wire_body["type"]));
    assert!(
        body["detail"].as_str().unwrap().contains("node.secret"),
        "{body}"
    );
    assert_eq!(p.message_count().await, before, "nothing committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_the_wire_and_in_process_share_the_nodes_max_in_flight() {
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:account"]);
    for id in ["held", "refused"] {
        p.account_command(&token, id, r#"{"type":"Open","payload":{"owner":"o"}}"#)
            .await;
    }
    // The node served over gRPC and in process with one `NodeServing` of one place.
    let serving = NodeServing::new(cloudlysis_test_support::node_keys(), 1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let wire_addr = listener.local_addr().unwrap();
    let server = tokio::spawn(p.node.clone().serve_grpc(
        listener,
        serving.clone(),
        std::future::pending(),
    ));
    let wire = Gateway::new(gateway_settings(wire_addr, p.projection_addr, None)).unwrap();
    let local = gateway(
        &p,
        cloudlysis_test_support::NODE_SECRET,
        HashMap::from([(DEAD.to_string(), p.node.local(&serving).await)]),
    );

    // A command over the wire holds the place: its publish waits for a frozen NATS.
    p.server.pause().unwrap();
    let held = {
        let (gw, token) = (wire.clone(), token.clone());
        tokio::spawn(async move {
            let req = axum::http::Request::post("/v1/commands/account/held")
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {token}"))
                .body(axum::body::Body::from(DEPOSIT))
                .unwrap();
            tower::ServiceExt::oneshot(gw.router(), req)
                .await
                .unwrap()
                .status()
        })
    };
    assert!(
        cloudlysis_test_support::eventually(std::time::Duration::from_secs(10), || async {
            serving.in_flight() == 1
        })
        .await,
        "the wire call holds the node's one place"
    );

    // In process, the node is full: refused at once, nothing sent on.
    let (s, resp) = p
        .command_via(&local, "/v1/commands/account/refused", &token, DEPOSIT)
        .await;
    let retry_after = resp.headers().get("retry-after").cloned();
    let body = body_json(resp).await;
    assert_eq!(s, 503, "{body}");
    assert!(retry_after.is_some(), "a Retry-After: {body}");

    p.server.resume().unwrap();
    assert_eq!(held.await.unwrap(), 200, "the held call completes");
    // The place is given back: the in-process call goes through now.
    let (s, resp) = p
        .command_via(&local, "/v1/commands/account/refused", &token, DEPOSIT)
        .await;
    assert_eq!(s, 200, "{}", body_json(resp).await);
    assert_eq!(serving.in_flight(), 0);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_reaches_a_projection_node_in_the_process_with_nothing_listening() {
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:account", "queries:*"]);
    p.account_command(&token, "q-1", OPEN).await;
    let seq = p.account_command(&token, "q-1", DEPOSIT).await;
    let query = |gw: Gateway| {
        let token = token.clone();
        async move {
            let req = axum::http::Request::get("/v1/query/balances/q-1")
                .header("authorization", format!("Bearer {token}"))
                .header("x-min-sequence", seq.to_string())
                .body(axum::body::Body::empty())
                .unwrap();
            let resp = tower::ServiceExt::oneshot(gw.router(), req).await.unwrap();
            (resp.status().as_u16(), body_json(resp).await)
        }
    };
    let settings = || {
        let mut s = gateway_settings(p.grpc_addr, p.projection_addr, None);
        s.projection_addr = DEAD.into();
        s
    };

    // Over the network the address is dead.
    let (s, body) = query(Gateway::new(settings()).unwrap()).await;
    assert_eq!(s, 503, "{body}");

    // The projection node registered at that address in this process answers, once the view
    // has the deposit.
    let serving: NodeServing = cloudlysis_test_support::node_keys().into();
    let local = p.projection.local(&serving).await;
    let gw =
        Gateway::with_local_nodes(settings(), HashMap::from([(DEAD.to_string(), local)])).unwrap();
    let (s, body) = query(gw).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["document"]["balance"], 1, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_reaches_a_runner_in_the_process_and_its_health_follows_a_drain() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let mut p = Platform::start().await;
    let runner = p.start_transfer_runner().await;
    let serving: NodeServing = cloudlysis_test_support::node_keys().into();
    let local = runner.local(&serving).await;
    let mut settings = gateway_settings(p.grpc_addr, p.projection_addr, None);
    settings.runner_addr = DEAD.into();
    let gw =
        Gateway::with_local_nodes(settings, HashMap::from([(DEAD.to_string(), local.clone())]))
            .unwrap();
    let token = p.token("acme", &["workflows:*"]);
    let start = |id: &'static str| {
        let gw = gw.clone();
        let token = token.clone();
        async move {
            gateway_call(
                &gw,
                "POST",
                &format!("/v1/workflows/transfer/{id}"),
                &token,
                r#"{"from":"a","to":"b","amount":1}"#,
            )
            .await
        }
    };
    let (s, body) = start("in-process-1").await;
    assert_eq!(s, 201, "{body}");

    let health = || async {
        let mut h = HealthClient::new(cloudlysis_runtime::local::NodeChannel::Local(local.clone()));
        let r = h
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        ServingStatus::try_from(r.status).unwrap()
    };
    assert_eq!(health().await, ServingStatus::Serving);
    runner.drain(std::time::Duration::from_secs(5), false).await;
    assert_eq!(health().await, ServingStatus::NotServing);
    // Refused at the door, and no other runner: nothing started.
    let (s, body) = start("in-process-2").await;
    assert_eq!(s, 503, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("draining"),
        "{body}"
    );
}
