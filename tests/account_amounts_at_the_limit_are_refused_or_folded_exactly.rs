//! The demo domain cannot poison its own view: an amount above the account's limit
//! ([`MAX_AMOUNT`], 2^53 − 1: exact as an `i64` in the view and as a JSON number in any client)
//! is refused by the aggregate, a balance cannot grow past it, and amounts at the limit are
//! folded into the `balances` view exactly, with no poison record.
//!
//! Before the fix `account` took any `u64` while `balances` folded into `i64`: a deposit of
//! `u64::MAX` was accepted (200) and its event poisoned the view.

mod common;

use cloudlysis_examples::account::MAX_AMOUNT;
use common::{Platform, body_json, query};
use futures::StreamExt;

async fn deposit(
    p: &Platform,
    token: &str,
    account: &str,
    amount: u64,
) -> (u16, serde_json::Value) {
    let (s, resp) = p
        .command(
            &format!("/v1/commands/account/{account}"),
            Some(token),
            &[],
            &format!(r#"{{"type":"Deposit","payload":{{"amount":{amount}}}}}"#),
        )
        .await;
    (s, body_json(resp).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amounts_beyond_the_limit_are_refused_and_the_view_folds_the_limit_exactly() {
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:account", "queries:balances"]);
    for account in ["big", "huge"] {
        p.account_command(
            &token,
            account,
            &format!(r#"{{"type":"Open","payload":{{"owner":"{account}"}}}}"#),
        )
        .await;
    }

    // Beyond the limit: refused with the limit named, nothing committed.
    let before = p.message_count().await;
    for amount in [u64::MAX, i64::MAX as u64 + 1, MAX_AMOUNT + 1] {
        let (s, body) = deposit(&p, &token, "huge", amount).await;
        assert_eq!(s, 422, "a deposit of {amount}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("at most"),
            "{body}"
        );
    }
    assert_eq!(p.message_count().await, before, "nothing was committed");

    // At the limit: accepted; one more unit would take the balance past it.
    let (s, body) = deposit(&p, &token, "big", MAX_AMOUNT).await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = deposit(&p, &token, "big", 1).await;
    assert_eq!(s, 422, "{body}");
    let last = p
        .account_command(
            &token,
            "huge",
            &format!(r#"{{"type":"Deposit","payload":{{"amount":{MAX_AMOUNT}}}}}"#),
        )
        .await;

    // The view folds both balances exactly (read-your-writes up to the last commit).
    for account in ["big", "huge"] {
        let (s, doc) = query(
            &p,
            &format!("/v1/query/balances/{account}"),
            &token,
            &[("x-min-sequence", &last.to_string())],
        )
        .await;
        assert_eq!(s, 200, "{doc}");
        assert_eq!(
            doc["document"]["balance"].as_u64(),
            Some(MAX_AMOUNT),
            "{doc}"
        );
    }
    let poison = p.js.get_key_value("cloudlysis_poison").await.unwrap();
    let keys: Vec<_> = poison.keys().await.unwrap().collect().await;
    assert!(keys.is_empty(), "no poison record: {keys:?}");
}
