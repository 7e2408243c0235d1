//! A node that closes while a call is on the wire refuses it at the HTTP/2 layer: a server
//! shutting down sends GOAWAY naming the last stream it took, and every stream above it was not
//! processed (RFC 9113 §6.8); a server may also refuse one stream with RST_STREAM
//! `REFUSED_STREAM` (§8.7). Such a call never reached the node's handler, so it is as safe to
//! repeat as one whose connection failed: a workflow start moves on to the next runner, a read
//! and a keyed command are retried, and what is left is 503 + `Retry-After` (nothing was done) —
//! never 502 "outcome unknown".
//!
//! Found in CI: a transfer started while a drained runner exited (SIGTERM) got
//! `502 h2 protocol error: http2 error` (`a_runner_drains_under_load_and_exits_zero`). The
//! race is one frame wide, so the node here is a minimal HTTP/2 peer that refuses every request
//! the way a closing server does; the NATS server and the other nodes are real.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::Request;
use common::{Platform, body_json, gateway_call};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

/// How the peer refuses a request.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// GOAWAY with last stream id 0: the connection closes, no stream was processed.
    GoAway,
    /// RST_STREAM `REFUSED_STREAM` on the request's stream.
    RefusedStream,
}

/// An HTTP/2 peer at an ephemeral port that refuses every request as `how` says; counts the
/// requests (HEADERS frames) it refused.
async fn closing_node(how: Refusal) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(refuse(socket, how, counted.clone()));
        }
    });
    (addr, requests)
}

/// One connection: the preface and SETTINGS exchange, then a refusal per request.
async fn refuse(mut s: tokio::net::TcpStream, how: Refusal, requests: Arc<AtomicUsize>) {
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    let mut preface = [0u8; 24];
    if s.read_exact(&mut preface).await.is_err() {
        return;
    }
    if s.write_all(&frame(4, 0, 0, &[])).await.is_err() {
        return;
    }
    loop {
        let mut head = [0u8; 9];
        if s.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if s.read_exact(&mut payload).await.is_err() {
            return;
        }
        let reply = match kind {
            // SETTINGS (not an ACK): acknowledge.
            4 if flags & 1 == 0 => frame(4, 1, 0, &[]),
            // PING: answer it.
            6 if flags & 1 == 0 => frame(6, 1, 0, &payload),
            // HEADERS: a request; refuse it.
            1 => {
                requests.fetch_add(1, Ordering::SeqCst);
                match how {
                    // Last stream id 0, NO_ERROR: a graceful close that took nothing.
                    Refusal::GoAway => frame(7, 0, 0, &[0; 8]),
                    // REFUSED_STREAM is error code 7.
                    Refusal::RefusedStream => frame(3, 0, stream, &7u32.to_be_bytes()),
                }
            }
            _ => continue,
        };
        if s.write_all(&reply).await.is_err() {
            return;
        }
    }
}

const DEPOSIT: &str = r#"{"type":"Deposit","payload":{"amount":5}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_a_closing_node_refused_is_503_and_a_keyed_one_is_retried_first() {
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:*"]);
    for how in [Refusal::GoAway, Refusal::RefusedStream] {
        let (addr, requests) = closing_node(how).await;
        let gw = p.gateway_with(|s| s.aggregate_addr = addr.clone());

        // Without a key the Gateway does not repeat a command; the client learns that nothing
        // was done and may repeat it.
        let (status, resp) = p
            .command_via(&gw, "/v1/commands/account/a-1", &token, DEPOSIT)
            .await;
        assert!(resp.headers().contains_key("retry-after"), "{how:?}");
        let body = body_json(resp).await;
        assert_eq!(status, 503, "{how:?}: {body}");
        assert_eq!(body["type"], "urn:cloudlysis:problem:unavailable", "{body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("nothing was done"),
            "{how:?}: {body}"
        );
        assert_eq!(requests.load(Ordering::SeqCst), 1, "{how:?}");

        // With a key the Gateway repeats it itself (the command profile: 3 attempts).
        let req = Request::post("/v1/commands/account/a-1")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .header("idempotency-key", format!("k-{how:?}"))
            .body(Body::from(DEPOSIT))
            .unwrap();
        let resp = gw.router().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 503, "{how:?}");
        assert!(resp.headers().contains_key("retry-after"), "{how:?}");
        assert_eq!(requests.load(Ordering::SeqCst), 1 + 3, "{how:?}");
    }
    // Nothing reached the store.
    assert_eq!(p.message_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_a_closing_node_refused_is_retried_then_503() {
    let p = Platform::start().await;
    let token = p.token("acme", &["queries:*"]);
    for how in [Refusal::GoAway, Refusal::RefusedStream] {
        let (addr, requests) = closing_node(how).await;
        let gw = p.gateway_with(|s| s.projection_addr = addr.clone());
        let (status, body) = gateway_call(&gw, "GET", "/v1/query/balances/a-1", &token, "").await;
        assert_eq!(status, 503, "{how:?}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("projection"),
            "{how:?}: {body}"
        );
        // The read profile: 3 attempts.
        assert_eq!(requests.load(Ordering::SeqCst), 3, "{how:?}");
    }
}

/// Starts a transfer `id` through `gw`.
async fn start(
    gw: &cloudlysis_gateway::Gateway,
    token: &str,
    id: &str,
) -> (u16, serde_json::Value) {
    let path = format!("/v1/workflows/transfer/{id}");
    gateway_call(
        gw,
        "POST",
        &path,
        token,
        r#"{"from":"a","to":"b","amount":1}"#,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_a_closing_runner_refused_goes_to_the_next_runner() {
    let mut p = Platform::start().await;
    p.start_transfer_runner().await;
    let runner = format!("http://{}", p.runner_addr.unwrap());
    let token = p.token("acme", &["workflows:*", "commands:*"]);
    for how in [Refusal::GoAway, Refusal::RefusedStream] {
        let (closing, requests) = closing_node(how).await;
        // The closing runner first in the list: with static addresses a start begins at the
        // runner its id hashes to, so some of these ids begin at the closing one.
        let gw = p.gateway_with(|s| s.runner_addr = format!("{closing},{runner}"));
        for k in 0..6 {
            let (status, body) = start(&gw, &token, &format!("t-{how:?}-{k}")).await;
            assert_eq!(status, 201, "{how:?} t-{k}: {body}");
        }
        assert!(
            requests.load(Ordering::SeqCst) > 0,
            "{how:?}: no start began at the closing runner, the test proves nothing"
        );

        // The closing runner alone: nothing was started, the client may try again.
        let gw = p.gateway_with(|s| s.runner_addr = closing.clone());
        let (status, body) = start(&gw, &token, &format!("u-{how:?}")).await;
        assert_eq!(status, 503, "{how:?}: {body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("nothing was done"),
            "{how:?}: {body}"
        );
    }
}
