//! A Gateway request handler that panics — a bug, like the drain whose huge `grace_ms` once
//! overflowed tonic's deadline encoding — answers 500 `internal` problem+json under a
//! correlation id (also in `x-correlation-id`, and in the error the Gateway logs), says it does
//! not know whether a call it made took effect, and is counted in
//! `cloudlysis_gateway_handler_panics_total`; the Gateway goes on serving.
//!
//! Before: the panic unwound through the connection's task and the client saw the connection
//! drop with no answer.

mod common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use tower::ServiceExt;

fn panics_total(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("cloudlysis_gateway_handler_panics_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_problem_and_the_gateway_serves_on() {
    let metrics = cloudlysis_runtime::metrics::install().unwrap();
    let p = Platform::start().await;
    // A route beside the Gateway's own, as the service endpoints are merged, that panics.
    let boom = axum::Router::new().route(
        "/boom",
        axum::routing::get(|| async {
            if std::hint::black_box(true) {
                panic!("a bug in a handler");
            }
            "unreachable"
        }),
    );
    let router = p.gateway.router_with(boom);
    let before = panics_total(&metrics.render());

    let req = Request::get("/boom").body(Body::empty()).unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 500);
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/problem+json")
    );
    let correlation = header("x-correlation-id").expect("x-correlation-id");
    let json = body_json(resp).await;
    assert_eq!(json["type"], "urn:cloudlysis:problem:internal", "{json}");
    assert_eq!(json["correlation_id"], correlation, "{json}");
    let detail = json["detail"].as_str().unwrap();
    assert!(detail.contains("not known"), "{detail}");
    assert_eq!(panics_total(&metrics.render()), before + 1);

    // The Gateway serves on.
    let token = p.token("acme", &["commands:account"]);
    let (status, resp) = post_command(
        &p.gateway,
        "/v1/commands/account/a-1",
        &token,
        None,
        r#"{"type":"Open","payload":{"owner":"o"}}"#,
    )
    .await;
    assert_eq!(status, 200, "{}", body_json(resp).await);
}
