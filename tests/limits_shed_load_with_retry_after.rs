//! Bounded everything: past `aggregate.max_entities` new entities are refused with 429, and past
//! `gateway.max_in_flight` requests are shed with 503 — both problem+json with `Retry-After`,
//! and the requests already admitted still complete.

mod common;

use std::time::Duration;

use cloudlysis_actors::aggregate::AggregateSettings;
use cloudlysis_gateway::{Gateway, GatewaySettings};
use common::*;

const OPEN: &str = r#"{"type":"Open","payload":{"owner":"o"}}"#;

#[tokio::test]
async fn new_entities_past_the_limit_are_429() {
    let p = Platform::start_with(AggregateSettings {
        max_entities: 2,
        ..AggregateSettings::default()
    })
    .await;
    let token = p.token("acme", &["commands:account"]);
    for id in ["a-1", "a-2"] {
        let (s, _) = p
            .command(
                &format!("/v1/commands/account/{id}"),
                Some(&token),
                &[],
                OPEN,
            )
            .await;
        assert_eq!(s, 200);
    }
    let (s, resp) = p
        .command("/v1/commands/account/a-3", Some(&token), &[], OPEN)
        .await;
    assert_eq!(s, 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert!(
        body_json(resp).await["detail"]
            .as_str()
            .unwrap()
            .contains("max_entities")
    );
    // Existing entities are unaffected.
    let deposit = r#"{"type":"Deposit","payload":{"amount":1}}"#;
    let (s, _) = p
        .command("/v1/commands/account/a-1", Some(&token), &[], deposit)
        .await;
    assert_eq!(s, 200);
    assert_eq!(p.message_count().await, 3);
}

#[tokio::test]
async fn requests_past_the_gateway_limit_are_shed_with_503() {
    // A node that accepts connections and never answers holds the one admitted request.
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
        command_timeout: Duration::from_secs(3),
        max_body_bytes: 4096,
        max_in_flight: 1,
        ui_dir: cloudlysis_gateway::config::DEFAULT_UI_DIR.into(),
        tenant_max_in_flight: None,
        tenant_weights: Default::default(),
        oidc: Default::default(),
        node_tls: Default::default(),
    })
    .unwrap();
    let token = gateway
        .authenticator()
        .mint("t", "acme", &["commands:*".into()], Duration::from_secs(60))
        .unwrap();
    let post = |gw: Gateway, token: String| async move {
        use tower::ServiceExt;
        let req = axum::http::Request::post("/v1/commands/account/a-1")
            .header("authorization", format!("Bearer {token}"))
            .body(axum::body::Body::from(OPEN))
            .unwrap();
        gw.router().oneshot(req).await.unwrap()
    };
    let first = tokio::spawn(post(gateway.clone(), token.clone()));
    let mut admitted = false;
    for _ in 0..500 {
        if gateway.in_flight() == 1 {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(admitted, "the first request was not admitted");

    let shed = post(gateway.clone(), token.clone()).await;
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_eq!(shed.headers()["content-type"], "application/problem+json");

    // The admitted request ends at its deadline, and the slot is free again.
    let first = first.await.unwrap();
    assert_eq!(first.status(), 504);
    assert_eq!(gateway.in_flight(), 0);
}
