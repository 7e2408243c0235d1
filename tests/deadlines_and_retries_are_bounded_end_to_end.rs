//! A request's deadline reaches the node and bounds the retries: a client may ask for less time
//! with `x-request-timeout-ms`; a query whose node cannot answer within it is 504, and the node
//! drops the work at that deadline and counts it. While a node keeps failing, the Gateway's
//! retry throttle stops retrying (gRFC A6) and every answer is still 503 with `Retry-After`.
//! Before, the Gateway retried every read 3 times whatever happened, with a fixed 5 s deadline.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use common::{Platform, body_json};
use tower::ServiceExt;

/// The value of `name{labels}` in a Prometheus scrape (0 when absent).
fn value(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.split(',').all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_query_past_the_clients_deadline_is_504_and_the_node_drops_the_work() {
    let metrics = cloudlysis_runtime::metrics::install().unwrap();
    let p = Platform::start().await;
    let abandoned = || {
        value(
            &metrics.render(),
            "cloudlysis_node_calls_abandoned_total",
            r#"reason="deadline""#,
        )
    };
    let before = abandoned();
    let token = p.token("acme", &["queries:*"]);
    // A sequence the view will never reach: the node waits for it until the deadline.
    let (status, body) = common::query(
        &p,
        "/v1/query/balances/a-1",
        &token,
        &[
            ("x-min-sequence", "1000000"),
            ("x-request-timeout-ms", "300"),
        ],
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(
        body["type"].as_str().unwrap_or(""),
        "urn:cloudlysis:problem:timeout",
        "{body}"
    );
    assert!(
        cloudlysis_test_support::eventually(Duration::from_secs(5), || async {
            abandoned() > before
        })
        .await,
        "the node did not count the work it dropped"
    );

    // A deadline is a number of milliseconds.
    let (status, body) = common::query(
        &p,
        "/v1/query/balances/a-1",
        &token,
        &[("x-request-timeout-ms", "soon")],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("x-request-timeout-ms"),
        "{body}"
    );
}

#[tokio::test]
async fn retries_stop_when_the_throttle_bucket_is_empty() {
    let metrics = cloudlysis_runtime::metrics::install().unwrap();
    let p = Platform::start().await;
    // A Gateway whose projection node is gone: every read fails before it is sent.
    let gw = p.gateway_with(|s| s.projection_addr = "http://127.0.0.1:1".into());
    let token = p.token("acme", &["queries:*"]);
    let count = |outcome: &str| {
        value(
            &metrics.render(),
            "cloudlysis_gateway_retries_total",
            &format!(r#"profile="read",outcome="{outcome}""#),
        )
    };
    let (retried, throttled) = (count("retried"), count("throttled"));
    for _ in 0..20 {
        let req = Request::get("/v1/query/balances/a-1")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let resp = gw.router().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 503);
        assert!(resp.headers().contains_key("retry-after"));
        let body = body_json(resp).await;
        assert!(
            body["detail"].as_str().unwrap().contains("projection"),
            "{body}"
        );
    }
    // 10 tokens, one per failed attempt, retries only above half: a few retries, then none.
    let retries = count("retried") - retried;
    assert!((1.0..=5.0).contains(&retries), "{retries} retries");
    assert!(
        count("throttled") - throttled >= 10.0,
        "retries were not throttled"
    );
}

/// A command whose caller's deadline passes before it runs is answered "nothing was committed"
/// naming the caller's budget, not the node's default `command_timeout` (found by using the
/// platform: a 20 ms deadline was answered "did not complete within 10s").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_names_the_callers_deadline_not_the_nodes_default() {
    let p = Platform::start().await;
    let mut req = common::account_request(1, "Open", r#"{"owner":"o"}"#);
    // The deadline has passed by the time the node takes the call.
    req.deadline = Some(tokio::time::Instant::now());
    let e = p.node.execute("account", req).await.unwrap_err();
    let message = e.to_string();
    assert!(
        matches!(e, cloudlysis_actors::aggregate::CommandError::Timeout(d) if d < Duration::from_millis(20)),
        "{e:?}"
    );
    assert!(!message.contains("10s"), "{message}");
    assert!(message.contains("nothing was committed"), "{message}");
}
