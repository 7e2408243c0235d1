//! A request body that cannot be read — the client's stream breaks off mid-body — is a 400
//! naming the read error, on every route that reads a body; 413 is kept for a body over
//! `gateway.max_body_bytes`. (Before: a workflow start or verb answered any read error as 413
//! "exceeds … bytes or could not be read".)

mod common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use tower::ServiceExt;

/// A body whose stream yields a little JSON and then fails.
fn broken_body() -> Body {
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
        Ok(bytes::Bytes::from_static(b"{\"from\":")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )),
    ];
    Body::from_stream(futures::stream::iter(chunks))
}

#[tokio::test]
async fn a_broken_body_is_400_and_an_oversized_one_413_on_every_route() {
    let p = Platform::start().await;
    let token = p.token(
        "acme",
        &["commands:*", "workflows:*", "workflows:transfer:operate"],
    );
    for path in [
        "/v1/commands/account/acc-1",
        "/v1/workflows/transfer/t-1",
        "/v1/workflows/transfer/t-1/cancel",
    ] {
        let req = Request::post(path)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(broken_body())
            .unwrap();
        let resp = p.gateway.router().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let json = body_json(resp).await;
        assert_eq!(status, 400, "{path}: {json}");
        assert_eq!(json["type"], "urn:cloudlysis:problem:bad-request", "{path}");
        let detail = json["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("could not read the body"),
            "{path}: {detail}"
        );

        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(2 << 20));
        let (status, resp) = p.command(path, Some(&token), &[], &big).await;
        let json = body_json(resp).await;
        assert_eq!(status, 413, "{path}: {json}");
        assert!(
            json["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("exceeds"),
            "{path}: {json}"
        );
    }
}
