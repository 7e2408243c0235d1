//! Overload against a real nats-server: a Gateway with a small budget
//! (`gateway.max_in_flight` = 4) gets 800 concurrent commands, far beyond what it admits.
//! Every answer is 200, or 429 / 503 as problem+json with a `Retry-After` — no other status, no
//! 5xx besides 503 — and every 200 is a commit on the stream, while nothing refused was
//! committed. (Latency and goodput under overload are measured by `cloudlysis bench overload`,
//! docs/performance.md; this test asserts no timing.)

mod common;

use common::*;

const REQUESTS: usize = 800;
const ACCOUNTS: usize = 64;

#[tokio::test]
async fn every_refusal_is_429_or_503_with_retry_after_and_every_200_is_committed() {
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:account"]);
    for i in 0..ACCOUNTS {
        p.account_command(
            &token,
            &format!("acc-{i}"),
            r#"{"type":"Open","payload":{"owner":"o"}}"#,
        )
        .await;
    }
    let opened = p.message_count().await;
    let gw = p.gateway_with(|s| s.max_in_flight = 4);

    let mut tasks = Vec::new();
    for i in 0..REQUESTS {
        let (gw, token) = (gw.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let req =
                axum::http::Request::post(format!("/v1/commands/account/acc-{}", i % ACCOUNTS))
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {token}"))
                    .body(axum::body::Body::from(
                        r#"{"type":"Deposit","payload":{"amount":1}}"#,
                    ))
                    .unwrap();
            let resp = tower::ServiceExt::oneshot(gw.router(), req).await.unwrap();
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let content_type = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            (status, retry_after, content_type)
        }));
    }
    let (mut ok, mut refused) = (0u64, 0u64);
    for t in tasks {
        let (status, retry_after, content_type) = t.await.unwrap();
        match status {
            200 => ok += 1,
            429 | 503 => {
                refused += 1;
                assert!(
                    retry_after.is_some_and(|s| s >= 1),
                    "{status} without a Retry-After in seconds"
                );
                assert_eq!(content_type, "application/problem+json", "{status}");
            }
            other => panic!("an overloaded Gateway answered {other}"),
        }
    }
    assert!(refused > 0, "the load exceeded the budget: {ok} accepted");
    assert!(ok > 0, "some commands were admitted");
    assert_eq!(
        p.message_count().await - opened,
        ok,
        "every 200 is one commit, and nothing refused was committed"
    );
}
