//! "Nothing was committed" is said only when it is true. Once a publish may have started, a
//! failure is *outcome unknown* (504 / 502 `outcome-unknown`, telling the client to retry with
//! the same `Idempotency-Key` or read the aggregate); a call that never reached the node is 503
//! with `Retry-After`.
//!
//! Before the fix, a JetStream ack delayed past the caller's deadline (nats-server frozen with
//! SIGSTOP) was answered 504 "nothing was committed" — and the commit landed when the server
//! went on; a node that died mid-call was a 502 "transport error" either way.

mod common;

use std::time::Duration;

use cloudlysis_test_support::eventually;
use common::{Platform, gateway_call};

const DEPOSIT: &str = r#"{"type":"Deposit","payload":{"amount":7}}"#;

fn problem_type(body: &serde_json::Value) -> &str {
    body["type"]
        .as_str()
        .and_then(|t| t.strip_prefix("urn:cloudlysis:problem:"))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_delayed_past_the_deadline_is_an_unknown_outcome_and_the_commit_lands() {
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:account"]);
    // A warm entity: the next command is decided on cached state and published at once.
    p.account_command(&token, "a", r#"{"type":"Open","payload":{"owner":"a"}}"#)
        .await;
    let before = p.message_count().await;
    let gw = p.gateway_with(|s| s.command_timeout = Duration::from_millis(800));

    p.server.pause().unwrap();
    let (status, body) = gateway_call(&gw, "POST", "/v1/commands/account/a", &token, DEPOSIT).await;
    p.server.resume().unwrap();

    assert_eq!(status, 504, "{body}");
    assert_eq!(problem_type(&body), "outcome-unknown", "{body}");
    // The command carried no key: the advice is to read first, not to "retry with the same
    // key" it never had — and it is given once.
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("carried no Idempotency-Key"), "{body}");
    assert!(!detail.contains("same Idempotency-Key"), "{body}");
    assert_eq!(detail.matches("outcome is unknown").count(), 1, "{body}");
    // The server goes on with what it was sent: the commit lands, as "unknown" allowed.
    assert!(
        eventually(Duration::from_secs(10), || async {
            p.message_count().await == before + 1
        })
        .await,
        "the deposit was committed after the deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_before_any_publish_is_not_committed_and_stays_so() {
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:account"]);
    p.account_command(&token, "b", r#"{"type":"Open","payload":{"owner":"b"}}"#)
        .await;
    let before = p.message_count().await;
    // A cold entity: it must read the stream before deciding, and the server is frozen.
    let mut p = p;
    p.restart_node(Default::default()).await;
    let gw = p.gateway_with(|s| s.command_timeout = Duration::from_millis(800));

    p.server.pause().unwrap();
    let (status, body) = gateway_call(&gw, "POST", "/v1/commands/account/b", &token, DEPOSIT).await;
    p.server.resume().unwrap();

    assert_eq!(status, 504, "{body}");
    assert_eq!(problem_type(&body), "timeout", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("nothing was committed"),
        "{body}"
    );
    // The entity goes on loading once the server thaws, but gave the command up: the next
    // command to it (handled after the first, in order) is the only one committed.
    let (status, body) = gateway_call(
        &p.gateway,
        "POST",
        "/v1/commands/account/b",
        &token,
        DEPOSIT,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        p.message_count().await,
        before + 1,
        "only the second deposit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_be_reached_is_503_with_retry_after() {
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:account"]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let gw = p.gateway_with(|s| s.aggregate_addr = format!("http://{addr}"));
    let (status, resp) = p
        .command_via(&gw, "/v1/commands/account/c", &token, DEPOSIT)
        .await;
    assert_eq!(status, 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_dies_mid_call_is_an_unknown_outcome() {
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:account"]);
    // A "node" that takes the connection and the request, then dies (closes the socket).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0u8; 64 * 1024];
            let mut seen = 0;
            // The HTTP/2 preface, settings and the request's frames.
            while seen < 100 {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen += n,
                }
            }
            drop(socket);
        }
    });
    let gw = p.gateway_with(|s| s.aggregate_addr = format!("http://{addr}"));
    let (status, resp) = p
        .command_via(&gw, "/v1/commands/account/d", &token, DEPOSIT)
        .await;
    let retry_after = resp.headers().get("retry-after").cloned();
    let body = common::body_json(resp).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(problem_type(&body), "outcome-unknown", "{body}");
    assert_eq!(retry_after, None, "no blind retry: {body}");

    // With a key, the same failure says to retry with that key.
    let (status, resp) = common::post_command(
        &gw,
        "/v1/commands/account/d",
        &token,
        Some("k-d-1"),
        DEPOSIT,
    )
    .await;
    assert_eq!(status, 502);
    let body = common::body_json(resp).await;
    assert_eq!(problem_type(&body), "outcome-unknown", "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("same Idempotency-Key"), "{body}");
    assert!(!detail.contains("carried no"), "{body}");
}
