//! Per-tenant fair admission: tenant A floods the Gateway (its requests hang at a node that never
//! answers); A alone may take 90 % of `gateway.max_in_flight` and is refused beyond it with 429
//! and `Retry-After` — so tenant B, arriving next, is admitted at once, and from then on A's
//! share is half. Before per-tenant admission one global semaphore let A take everything: B got
//! 503. Every refusal carries the request's correlation id and says why in its own terms.

use std::time::Duration;

use cloudlysis_gateway::{Gateway, GatewaySettings};
use tower::ServiceExt;

const SECRET: &str = "test-secret-test-secret-test-secret";
const OPEN: &str = r#"{"type":"Open","payload":{"owner":"o"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tenant_is_held_to_its_share_and_another_is_admitted() {
    // A node that accepts connections and never answers: admitted requests stay in flight.
    let blackhole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = blackhole.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = blackhole.accept().await {
            conns.push(c);
        }
    });
    let gateway = Gateway::new(GatewaySettings {
        aggregate_addr: format!("http://{addr}"),
        projection_addr: "http://127.0.0.1:1".into(),
        runner_addr: "http://127.0.0.1:1".into(),
        jwt_secret: SECRET.into(),
        node_secret: cloudlysis_test_support::NODE_SECRET.into(),
        command_timeout: Duration::from_secs(5),
        max_body_bytes: 4096,
        max_in_flight: 10,
        ui_dir: cloudlysis_gateway::config::DEFAULT_UI_DIR.into(),
        tenant_max_in_flight: None,
        tenant_weights: Default::default(),
        oidc: Default::default(),
        node_tls: Default::default(),
    })
    .unwrap();
    let token = |tenant: &str| {
        gateway
            .authenticator()
            .mint("t", tenant, &["commands:*".into()], Duration::from_secs(60))
            .unwrap()
    };
    let post = |gw: Gateway, token: String, id: String| async move {
        let req = axum::http::Request::post(format!("/v1/commands/account/{id}"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .header("x-correlation-id", format!("corr-{id}"))
            .body(axum::body::Body::from(OPEN))
            .unwrap();
        let resp = gw.router().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").cloned();
        // A refusal carries the request's correlation id, like every other problem.
        if status != 200 {
            assert_eq!(
                resp.headers().get("x-correlation-id").unwrap(),
                &format!("corr-{id}"),
                "{status}"
            );
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["correlation_id"], format!("corr-{id}"), "{body}");
            return (
                status,
                retry_after,
                body["detail"].as_str().unwrap().to_string(),
            );
        }
        (status, retry_after, String::new())
    };

    // A floods: 9 of 10 places are taken, the rest refused at once with 429.
    let a = token("tenant-a");
    let mut held = Vec::new();
    for i in 0..9 {
        held.push(tokio::spawn(post(
            gateway.clone(),
            a.clone(),
            format!("a{i}"),
        )));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gateway.in_flight() < 9 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "A's requests were not admitted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..5 {
        let (status, retry_after, detail) = post(gateway.clone(), a.clone(), format!("x{i}")).await;
        assert_eq!(status, 429, "A beyond its share");
        assert!(retry_after.is_some());
        // Alone, A is held back by the reserve for other tenants, not by other tenants.
        assert!(
            detail.contains("kept for other tenants") && !detail.contains("are active"),
            "{detail}"
        );
    }

    // B arrives: admitted at once (its request goes to the node: the 90 % left room).
    let b = token("tenant-b");
    let b_request = tokio::spawn(post(gateway.clone(), b.clone(), "b0".into()));
    while gateway.in_flight() < 10 {
        assert!(tokio::time::Instant::now() < deadline, "B was not admitted");
        assert!(!b_request.is_finished(), "B was refused: {:?}", b_request);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Now the budget is full: A (over its half) gets 429, and so would anyone (503 when full).
    let (status, _, detail) = post(gateway.clone(), a.clone(), "x9".into()).await;
    assert_eq!(status, 429);
    assert!(
        detail.contains("while other tenants are active"),
        "{detail}"
    );
    let (status, retry_after, _) = post(gateway.clone(), token("tenant-c"), "c0".into()).await;
    assert_eq!(status, 503);
    assert!(retry_after.is_some());
    for h in held {
        h.abort();
    }
    b_request.abort();
}
