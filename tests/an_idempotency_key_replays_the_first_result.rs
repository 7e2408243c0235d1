//! A repeated command with the same Idempotency-Key returns the first result and appends
//! nothing — also after the aggregate node restarts.

mod common;

use cloudlysis_actors::aggregate::AggregateSettings;
use common::*;

#[tokio::test]
async fn replays_return_the_first_result_across_a_node_restart() {
    let mut p = Platform::start().await;
    let token = p.token("acme", &["commands:account"]);
    let (s, _) = p
        .command(
            "/v1/commands/account/acc",
            Some(&token),
            &[],
            r#"{"type":"Open","payload":{"owner":"a"}}"#,
        )
        .await;
    assert_eq!(s, 200);
    let deposit = r#"{"type":"Deposit","payload":{"amount":10}}"#;
    let key = [("idempotency-key", "pay-42")];

    let (s, first) = p
        .command("/v1/commands/account/acc", Some(&token), &key, deposit)
        .await;
    assert_eq!(s, 200);
    let first = body_json(first).await;
    assert_eq!(first["replayed"], false);

    let (s, again) = p
        .command("/v1/commands/account/acc", Some(&token), &key, deposit)
        .await;
    assert_eq!(s, 200);
    let again = body_json(again).await;
    assert_eq!(again["replayed"], true);
    assert_eq!(again["event_ids"], first["event_ids"]);
    assert_eq!(again["version"], first["version"]);
    assert_eq!(again["stream_sequence"], first["stream_sequence"]);
    assert_eq!(p.message_count().await, 2, "no new event");

    p.restart_node(AggregateSettings::default()).await;
    let (s, after) = p
        .command("/v1/commands/account/acc", Some(&token), &key, deposit)
        .await;
    assert_eq!(s, 200);
    let after = body_json(after).await;
    assert_eq!(after["replayed"], true);
    assert_eq!(after["event_ids"], first["event_ids"]);
    assert_eq!(p.message_count().await, 2, "no new event after the restart");

    // A different key is a different command.
    let (s, other) = p
        .command(
            "/v1/commands/account/acc",
            Some(&token),
            &[("idempotency-key", "pay-43")],
            deposit,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(body_json(other).await["version"], 3);
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_a_bad_request() {
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:account"]);
    let (s, resp) = p
        .command(
            "/v1/commands/account/acc",
            Some(&token),
            &[("idempotency-key", "has space")],
            r#"{"type":"Open","payload":{"owner":"a"}}"#,
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
}
