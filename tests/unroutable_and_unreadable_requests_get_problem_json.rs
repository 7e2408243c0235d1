//! A path the Gateway does not serve, a method a route does not serve, a path segment that is
//! not UTF-8 and a query string that does not fit are answered like every other refusal:
//! problem+json with the right status (and `Allow` on a 405), not an empty or plain-text body;
//! each carries the request's correlation id (the caller's, or a new one) in its body and its
//! `x-correlation-id`, and is counted in `cloudlysis_gateway_requests_total` (`route`
//! `unrouted` or `unreadable`), as every other answer is.

mod common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use tower::ServiceExt;

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405_with_allow_as_problem_json() {
    let metrics = cloudlysis_runtime::metrics::install().unwrap();
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:*", "queries:*", "workflows:*"]);
    let cases = [
        ("GET", "/v2/commands/account/a-1", 404, "not-found", None),
        ("GET", "/nothing-here", 404, "not-found", None),
        (
            "GET",
            "/v1/commands/account/a-1",
            405,
            "method-not-allowed",
            Some("POST"),
        ),
        (
            "DELETE",
            "/v1/query/balances/a-1",
            405,
            "method-not-allowed",
            Some("GET"),
        ),
        (
            "PUT",
            "/admin/nodes",
            405,
            "method-not-allowed",
            Some("GET"),
        ),
        ("POST", "/metrics", 405, "method-not-allowed", Some("GET")),
    ];
    // Served as `cloudlysis gateway` serves it: the API beside /health, /ready and /metrics.
    let router = p.gateway.router_with(cloudlysis_runtime::service::router(
        cloudlysis_runtime::service::ServiceEndpoints {
            readiness: cloudlysis_runtime::service::Readiness::new(),
            metrics: metrics.clone(),
        },
    ));
    for (i, (method, path, status, slug, allow)) in cases.into_iter().enumerate() {
        // Every other request brings its own correlation id; the rest get a new one.
        let sent = (i % 2 == 0).then(|| format!("corr-{i}"));
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"));
        if let Some(id) = &sent {
            req = req.header("x-correlation-id", id);
        }
        let req = req.body(Body::empty()).unwrap();
        let resp = router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(
            header("content-type").as_deref(),
            Some("application/problem+json"),
            "{method} {path}"
        );
        let correlation = header("x-correlation-id").expect("x-correlation-id");
        if let Some(id) = &sent {
            assert_eq!(&correlation, id, "{method} {path}");
        }
        let got_allow = header("allow");
        if let Some(allow) = allow {
            let got = got_allow.unwrap_or_default();
            assert!(got.contains(allow), "{method} {path}: allow {got:?}");
        }
        let json = body_json(resp).await;
        assert_eq!(json["status"], status);
        assert_eq!(json["type"], format!("urn:cloudlysis:problem:{slug}"));
        assert_eq!(json["correlation_id"], correlation, "{method} {path}");
        let detail = json["detail"].as_str().unwrap();
        assert!(detail.contains(path), "{method} {path}: {detail}");
    }
    // Nothing was sent on: no message reached the stream.
    assert_eq!(p.message_count().await, 0);
    // Counted like every other answer.
    let text = metrics.render();
    for status in [404, 405] {
        let series =
            format!("cloudlysis_gateway_requests_total{{route=\"unrouted\",status=\"{status}\"}}");
        assert!(text.contains(&series), "no {series} in\n{text}");
    }
}

#[tokio::test]
async fn a_path_or_query_string_the_gateway_cannot_read_is_a_400_problem() {
    // Installed before any request: a series recorded before the recorder is lost.
    let metrics = cloudlysis_runtime::metrics::install().unwrap();
    let p = Platform::start().await;
    let token = p.token(
        "acme",
        &["commands:*", "queries:*", "workflows:*", "admin:read"],
    );
    let cases = [
        ("POST", "/v1/commands/account/%FF", "UTF-8"),
        ("GET", "/v1/query/balances/%FF", "UTF-8"),
        ("GET", "/v1/query/balances?limit=abc", "limit"),
        (
            "GET",
            "/v1/workflows/transfer?limit=1&limit=2",
            "duplicate field `limit`",
        ),
        ("GET", "/admin/poison?limit=zz", "limit"),
    ];
    for (method, path, words) in cases {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(r#"{"type":"Deposit","payload":{"amount":1}}"#))
            .unwrap();
        let resp = p.gateway.router().oneshot(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{method} {path}");
        let correlation = resp
            .headers()
            .get("x-correlation-id")
            .map(|v| v.to_str().unwrap().to_string())
            .expect("x-correlation-id");
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(ctype.as_deref(), Some("application/problem+json"), "{path}");
        let json = body_json(resp).await;
        assert_eq!(json["type"], "urn:cloudlysis:problem:bad-request", "{path}");
        assert_eq!(json["correlation_id"], correlation, "{path}");
        let detail = json["detail"].as_str().unwrap();
        assert!(detail.contains(words), "{method} {path}: {detail}");
    }
    let text = metrics.render();
    let series = r#"cloudlysis_gateway_requests_total{route="unreadable",status="400"}"#;
    assert!(text.contains(series), "no {series} in\n{text}");
    assert_eq!(p.message_count().await, 0);
}
