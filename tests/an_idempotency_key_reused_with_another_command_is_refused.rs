//! An idempotency key is bound to the command it was first used with (aggregate type, id,
//! command type and payload): a retry of the same command replays the first result, a different
//! command under the same key is a client bug and gets 422 `idempotency-key-reused` — also when
//! only the stream remembers the key. A corrupt idempotency record is an error, never "absent".
//!
//! Before the fix the same key with a different amount was answered 200 "replayed", and a
//! corrupt record was read as absent (the command ran a second time).

mod common;

use cloudlysis_runtime::kv as buckets;
use common::*;

const KEY: [(&str, &str); 1] = [("idempotency-key", "pay-1")];

async fn deposit(p: &Platform, token: &str, body: &str) -> (u16, serde_json::Value) {
    let (s, resp) = p
        .command("/v1/commands/account/acc", Some(token), &KEY, body)
        .await;
    (s, body_json(resp).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_with_another_command_is_422_and_commits_nothing() {
    let mut p = Platform::start().await;
    let token = p.token("acme", &["commands:account"]);
    p.account_command(&token, "acc", r#"{"type":"Open","payload":{"owner":"a"}}"#)
        .await;
    let (s, first) = deposit(&p, &token, r#"{"type":"Deposit","payload":{"amount":5}}"#).await;
    assert_eq!(s, 200, "{first}");
    let count = p.message_count().await;

    // The same command again (whitespace differs): replayed.
    let (s, again) = deposit(
        &p,
        &token,
        r#"{ "payload": {"amount": 5}, "type": "Deposit" }"#,
    )
    .await;
    assert_eq!(
        (s, &again["replayed"]),
        (200, &serde_json::json!(true)),
        "{again}"
    );

    // Another amount, another command type: refused, named, nothing committed.
    for other in [
        r#"{"type":"Deposit","payload":{"amount":6}}"#,
        r#"{"type":"Withdraw","payload":{"amount":5}}"#,
    ] {
        let (s, body) = deposit(&p, &token, other).await;
        assert_eq!(s, 422, "{body}");
        assert_eq!(
            body["type"], "urn:cloudlysis:problem:idempotency-key-reused",
            "{body}"
        );
        assert!(body["detail"].as_str().unwrap().contains("pay-1"), "{body}");
    }
    assert_eq!(p.message_count().await, count);

    // Only the stream remembers the key (its record lost, a fresh node): still refused, and
    // the same command still replays.
    let idem =
        p.js.get_key_value(buckets::IDEMPOTENCY_BUCKET)
            .await
            .unwrap();
    // The record is written after the answer: purge it once it is there.
    let record = buckets::idempotency_key("acme", "account", "acc", "pay-1");
    assert!(
        cloudlysis_test_support::eventually(std::time::Duration::from_secs(10), || async {
            matches!(idem.get(&record).await, Ok(Some(_)))
        })
        .await,
        "the idempotency record was stored"
    );
    idem.purge(&record).await.unwrap();
    p.restart_node(Default::default()).await;
    let (s, body) = deposit(&p, &token, r#"{"type":"Deposit","payload":{"amount":6}}"#).await;
    assert_eq!(s, 422, "{body}");
    let (s, body) = deposit(&p, &token, r#"{"type":"Deposit","payload":{"amount":5}}"#).await;
    assert_eq!(
        (s, &body["replayed"]),
        (200, &serde_json::json!(true)),
        "{body}"
    );
    assert_eq!(body["event_ids"], first["event_ids"]);
    assert_eq!(p.message_count().await, count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_idempotency_record_is_an_error_not_a_second_commit() {
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:account"]);
    p.account_command(&token, "acc", r#"{"type":"Open","payload":{"owner":"a"}}"#)
        .await;
    let idem =
        p.js.get_key_value(buckets::IDEMPOTENCY_BUCKET)
            .await
            .unwrap();
    idem.put(
        buckets::idempotency_key("acme", "account", "acc", "pay-1"),
        "{not json".into(),
    )
    .await
    .unwrap();
    let count = p.message_count().await;
    let (s, body) = deposit(&p, &token, r#"{"type":"Deposit","payload":{"amount":5}}"#).await;
    assert_eq!(s, 503, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("corrupt"),
        "{body}"
    );
    assert_eq!(p.message_count().await, count, "nothing committed");
}
