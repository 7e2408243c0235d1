//! Read-your-writes: a command followed by a query carrying the command's stream sequence in
//! `x-min-sequence` always sees the write.

mod common;

use common::*;

#[tokio::test]
async fn every_query_after_a_command_sees_its_write() {
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:account", "queries:balances"]);
    let (s, _) = p
        .command(
            "/v1/commands/account/acc",
            Some(&token),
            &[],
            r#"{"type":"Open","payload":{"owner":"ann"}}"#,
        )
        .await;
    assert_eq!(s, 200);
    for i in 1..=20i64 {
        let (s, resp) = p
            .command(
                "/v1/commands/account/acc",
                Some(&token),
                &[],
                &format!(r#"{{"type":"Deposit","payload":{{"amount":{i}}}}}"#),
            )
            .await;
        assert_eq!(s, 200);
        let seq = body_json(resp).await["stream_sequence"]
            .as_u64()
            .unwrap()
            .to_string();
        let (s, view) = query(
            &p,
            "/v1/query/balances/acc",
            &token,
            &[("x-min-sequence", &seq)],
        )
        .await;
        assert_eq!(s, 200, "{view}");
        assert_eq!(
            view["document"]["balance"],
            i * (i + 1) / 2,
            "after deposit {i}"
        );
        assert_eq!(view["document"]["owner"], "ann");
        assert!(view["checkpoint"].as_u64().unwrap() >= seq.parse::<u64>().unwrap());
    }
}

#[tokio::test]
async fn a_bad_min_sequence_or_missing_right_is_refused() {
    let p = Platform::start().await;
    let reader = p.token("acme", &["queries:balances"]);
    let (s, body) = query(
        &p,
        "/v1/query/balances/acc",
        &reader,
        &[("x-min-sequence", "soon")],
    )
    .await;
    assert_eq!(s, 400, "{body}");
    // Given twice (found by using the platform: the first was taken, so a lower one first
    // answered at once without the write).
    let (s, body) = query(
        &p,
        "/v1/query/balances/acc",
        &reader,
        &[("x-min-sequence", "1"), ("x-min-sequence", "99999")],
    )
    .await;
    assert_eq!(s, 400, "{body}");
    assert!(body.to_string().contains("more than once"), "{body}");
    let writer = p.token("acme", &["commands:*"]);
    let (s, body) = query(&p, "/v1/query/balances/acc", &writer, &[]).await;
    assert_eq!(s, 403, "{body}");
    let (s, _) = query(&p, "/v1/query/balances/a.b", &reader, &[]).await;
    assert_eq!(s, 400);
    let (s, _) = query(
        &p,
        "/v1/query/nosuchview/x",
        &p.token("acme", &["queries:*"]),
        &[],
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn a_read_that_waited_past_its_deadline_says_when_to_retry() {
    let p = Platform::start().await;
    let reader = p.token("acme", &["queries:balances"]);
    // A sequence the view has not reached: the read waits for it until its deadline. The read
    // is safe to repeat once the view caught up, so the 504 says when to.
    let req = axum::http::Request::builder()
        .uri("/v1/query/balances/acc")
        .header("authorization", format!("Bearer {reader}"))
        .header("x-min-sequence", "1000000")
        .header("x-request-timeout-ms", "300")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(p.gateway.router(), req)
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 504);
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(retry.as_deref(), Some("1"));
    // The node's answer (the view's sequence) or, when the Gateway's own timer fires first
    // (the node's deadline keeps a margin), the Gateway's: either names the wait.
    let body = body_json(resp).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("not yet 1000000") || detail.contains("did not answer within"),
        "{body}"
    );
}
