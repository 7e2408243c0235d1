//! An API request's bearer token is looked up once: the admission layer verifies it (to know
//! the tenant it admits) and hands the claims to the handler, which does not verify the token
//! again. Before, every command and query verified its token twice (two look-ups in the
//! Gateway's token cache, each copying the claims).

mod common;

use common::*;

fn lookups(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("cloudlysis_gateway_token_cache_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_command_and_query_looks_its_token_up_once() {
    let metrics = cloudlysis_runtime::metrics::install().unwrap();
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:account", "queries:balances"]);
    p.account_command(&token, "once", r#"{"type":"Open","payload":{"owner":"o"}}"#)
        .await;
    let before = lookups(&metrics.render());
    for _ in 0..3 {
        p.account_command(
            &token,
            "once",
            r#"{"type":"Deposit","payload":{"amount":1}}"#,
        )
        .await;
    }
    assert_eq!(
        lookups(&metrics.render()) - before,
        3.0,
        "one token-cache look-up per command"
    );

    let before = lookups(&metrics.render());
    let (s, body) = query(&p, "/v1/query/balances/once", &token, &[]).await;
    assert!(s == 200 || s == 404, "{s} {body}");
    assert_eq!(
        lookups(&metrics.render()) - before,
        1.0,
        "one token-cache look-up per query"
    );

    // A request the admission layer cannot verify is still refused by the handler.
    let (s, resp) = p
        .command(
            "/v1/commands/account/once",
            Some("not-a-token"),
            &[],
            r#"{"type":"Deposit","payload":{"amount":1}}"#,
        )
        .await;
    assert_eq!(s, 401, "{}", body_json(resp).await);
}
