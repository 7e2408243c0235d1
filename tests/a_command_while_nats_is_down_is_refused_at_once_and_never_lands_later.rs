//! A command that reaches its commit while the node's NATS client knows its connection is down
//! is refused at once — 503 with `Retry-After`, nothing committed — and it never lands later.
//!
//! Before: the NATS client queued the commit while it reconnected; the command waited out its
//! deadline and was answered 504 *outcome unknown*, and when the server came back the queued
//! commit landed — possibly after the client, told to read the aggregate first, had read it
//! without the deposit and sent it again.

mod common;

use std::time::Duration;

use async_nats::connection::State;
use cloudlysis_test_support::eventually;
use common::Platform;

const DEPOSIT: &str = r#"{"type":"Deposit","payload":{"amount":7}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_while_nats_is_down_is_503_and_is_not_committed_when_it_comes_back() {
    let mut p = Platform::start().await;
    let token = p.token("acme", &["commands:account"]);
    // A warm entity: the deposit is decided on cached state, with no read of NATS first.
    p.account_command(&token, "a", r#"{"type":"Open","payload":{"owner":"a"}}"#)
        .await;
    let before = p.message_count().await;
    // The node's client (shared with the test's) has seen the server go.
    let client = p.js.client();
    p.server.stop().await.unwrap();
    let down = eventually(Duration::from_secs(10), || {
        let client = client.clone();
        async move { client.connection_state() != State::Connected }
    })
    .await;
    assert!(down, "the client did not notice the server stop");

    let gw = p.gateway_with(|s| s.command_timeout = Duration::from_millis(1500));
    let (status, resp) =
        common::post_command(&gw, "/v1/commands/account/a", &token, None, DEPOSIT).await;
    let retry_after = resp.headers().get("retry-after").cloned();
    let body = common::body_json(resp).await;
    assert_eq!(status, 503, "{body}");
    assert!(retry_after.is_some(), "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("nothing was published"), "{body}");

    // The server comes back; a deposit after it commits (keyed, so a retry of it cannot count
    // twice), and it is the only new message: the refused one was not queued to land late.
    p.server.restart().await.unwrap();
    let up = eventually(Duration::from_secs(30), || {
        let client = client.clone();
        async move { client.connection_state() == State::Connected }
    })
    .await;
    assert!(up, "the client did not reconnect");
    let landed = eventually(Duration::from_secs(30), || async {
        let path = "/v1/commands/account/a";
        let key = Some("after-restart");
        common::post_command(&gw, path, &token, key, DEPOSIT)
            .await
            .0
            == 200
    })
    .await;
    assert!(landed, "no deposit committed after the server came back");
    assert_eq!(p.message_count().await, before + 1);
}
