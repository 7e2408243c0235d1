//! TLS between Gateway and nodes: an aggregate node started with `node.tls_cert_file` and
//! `node.tls_key_file` serves gRPC over TLS only and registers an `https://` address; a Gateway
//! trusting the CA (`grpc.tls_ca_file`) routes commands to it, by static address and by the
//! registry. A plaintext caller, or one that does not trust the node's certificate, gets
//! nothing executed. A node given half the settings refuses to start, naming the missing one.
//! Before, node gRPC was plaintext only.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use cloudlysis_runtime::tls::ClientTls;
use cloudlysis_test_support::{NatsServer, eventually};
use common::body_json;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/tls/{name}"))
}

fn gateway(addr: &str, tls: ClientTls) -> cloudlysis_gateway::Gateway {
    let mut settings = common::gateway_settings(
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:1".parse().unwrap(),
        None,
    );
    settings.aggregate_addr = addr.to_string();
    settings.node_tls = tls;
    cloudlysis_gateway::Gateway::new(settings).unwrap()
}

async fn open(
    gw: &cloudlysis_gateway::Gateway,
    token: &str,
    account: &str,
) -> (u16, serde_json::Value) {
    let req = axum::http::Request::post(format!("/v1/commands/account/{account}"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::from(
            r#"{"type":"Open","payload":{"owner":"o"}}"#,
        ))
        .unwrap();
    let resp = tower::ServiceExt::oneshot(gw.router(), req).await.unwrap();
    (resp.status().as_u16(), body_json(resp).await)
}

async fn events(js: &async_nats::jetstream::Context) -> u64 {
    match js.get_stream("AGGREGATE_EVENTS").await {
        Ok(mut s) => s.info().await.unwrap().state.messages,
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_serves_tls_only_and_the_gateway_reaches_it() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    let cert = fixture("node.pem");
    let key = fixture("node-key.pem");
    let (_node, grpc, _http) = common::spawn_aggregate(
        &server.url(),
        &[
            ("CLOUDLYSIS_NODE_TLS_CERT_FILE", cert.to_str().unwrap()),
            ("CLOUDLYSIS_NODE_TLS_KEY_FILE", key.to_str().unwrap()),
        ],
    )
    .await;
    let port = grpc.rsplit(':').next().unwrap();
    let trusted = ClientTls::from_ca_file(&fixture("ca.pem")).unwrap();

    // By static address, trusting the CA: the command runs over TLS.
    let gw = gateway(&format!("https://127.0.0.1:{port}"), trusted.clone());
    let token = gw
        .authenticator()
        .mint(
            "test",
            "acme",
            &["commands:account".into()],
            Duration::from_secs(600),
        )
        .unwrap();
    let (status, body) = open(&gw, &token, "a-1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(events(&js).await, 1);
    // The certificate names `localhost` too.
    let gw_name = gateway(&format!("https://localhost:{port}"), trusted.clone());
    assert_eq!(open(&gw_name, &token, "a-2").await.0, 200);
    assert_eq!(events(&js).await, 2);

    // A Gateway that does not trust the certificate sends nothing: 503, nothing appended.
    let untrusted = gateway(
        &format!("https://127.0.0.1:{port}"),
        ClientTls::from_ca_file(&fixture("other-ca.pem")).unwrap(),
    );
    let (status, body) = open(&untrusted, &token, "a-3").await;
    assert!(status == 503 || status == 502, "{status} {body}");
    assert_eq!(
        body["type"].as_str().map(|t| t.ends_with("unavailable")),
        Some(true),
        "{body}"
    );
    assert_eq!(events(&js).await, 2);

    // A plaintext caller gets no answer from the TLS port, and nothing is appended.
    let plain = gateway(&format!("http://127.0.0.1:{port}"), ClientTls::default());
    let (status, body) = open(&plain, &token, "a-3").await;
    assert!(status >= 500, "{status} {body}");
    assert_eq!(events(&js).await, 2);

    // The node registered its https:// address; registry placement dials it over TLS through
    // the channel-pool actor.
    let mut settings = common::gateway_settings(
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:1".parse().unwrap(),
        None,
    );
    settings.node_tls = trusted;
    let by_registry = cloudlysis_gateway::Gateway::new(settings).unwrap();
    let placement = by_registry.use_registry(js.clone()).await.unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            placement.live("aggregate").len() == 1
        })
        .await
    );
    assert_eq!(
        placement.live("aggregate")[0].grpc_addr,
        format!("https://127.0.0.1:{port}")
    );
    let (status, body) = open(&by_registry, &token, "a-4").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(events(&js).await, 3);
    assert_eq!(
        placement.pool.addresses(),
        [format!("https://127.0.0.1:{port}")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_tls_configuration_refuses_the_start_naming_the_setting() {
    let cert = fixture("node.pem");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_cloudlysis"))
            .args([
                "aggregate",
                "--nats-url",
                "nats://127.0.0.1:1",
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .env_remove("CLOUDLYSIS_CONFIG")
            .env(
                "CLOUDLYSIS_NODE_SECRET",
                cloudlysis_test_support::NODE_SECRET,
            )
            .env("CLOUDLYSIS_NODE_TLS_CERT_FILE", cert.to_str().unwrap())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the node did not exit")
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("node.tls_cert_file") && stderr.contains("node.tls_key_file"),
        "{stderr}"
    );
}
