//! A workflow instance whose record does not decode is answered as a fault in the runner's data
//! — 502 `node-error` naming the record, without `Retry-After` — not as 503 "try again": no
//! retry makes it decode. (Before: 503 `unavailable` with `Retry-After: 1`.)

mod common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_instance_record_is_a_502_without_retry_after() {
    let mut p = Platform::start().await;
    p.start_transfer_runner().await;
    let instances =
        p.js.get_key_value(cloudlysis_runtime::kv::WORKFLOWS_BUCKET)
            .await
            .unwrap();
    instances
        .put("transfer.acme.t-bad", "{not json".into())
        .await
        .unwrap();
    let token = p.token("acme", &["workflows:*"]);
    let req = Request::get("/v1/workflows/transfer/t-bad")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let resp = p.gateway.router().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").cloned();
    let json = body_json(resp).await;
    assert_eq!(status, 502, "{json}");
    assert_eq!(retry_after, None, "{json}");
    let detail = json["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("does not decode"), "{json}");
}
