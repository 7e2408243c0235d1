//! `GET /v1/query/{view}?prefix=&limit=&cursor=`: pages through one tenant's documents in key
//! order, each document once with its latest state, never another tenant's, and bad cursors
//! are 400.

mod common;

use common::*;

#[tokio::test]
async fn pages_cover_every_matching_document_once_in_key_order() {
    let p = Platform::start().await;
    let acme = p.token("acme", &["commands:account", "queries:balances"]);
    let other = p.token("other", &["commands:account"]);
    let mut last = 0;
    for id in [
        "acc-3", "acc-0", "acc-6", "acc-1", "acc-5", "acc-2", "acc-4", "zed-1", "zed-2",
    ] {
        last = p
            .account_command(&acme, id, r#"{"type":"Open","payload":{"owner":"o"}}"#)
            .await;
    }
    // Several writes to one document: it is listed once, with its latest state.
    for _ in 0..3 {
        last = p
            .account_command(
                &acme,
                "acc-2",
                r#"{"type":"Deposit","payload":{"amount":5}}"#,
            )
            .await;
    }
    // Another tenant's documents with the same keys never show up.
    for id in ["acc-0", "acc-7"] {
        last = last.max(
            p.account_command(&other, id, r#"{"type":"Open","payload":{"owner":"x"}}"#)
                .await,
        );
    }

    let mut keys = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let path = format!("/v1/query/balances?prefix=acc-&limit=3&cursor={cursor}");
        let (s, body) = query(&p, &path, &acme, &[("x-min-sequence", &last.to_string())]).await;
        assert_eq!(s, 200, "{body}");
        pages += 1;
        let docs = body["documents"].as_array().unwrap();
        assert!(docs.len() <= 3);
        for d in docs {
            keys.push(d["key"].as_str().unwrap().to_string());
            if d["key"] == "acc-2" {
                assert_eq!(d["document"]["balance"], 15);
            }
            assert_eq!(d["document"]["owner"], "o");
        }
        match body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(
        keys,
        [
            "acc-0", "acc-1", "acc-2", "acc-3", "acc-4", "acc-5", "acc-6"
        ]
    );
    assert_eq!(pages, 3);

    // Without a prefix: all nine of acme's documents.
    let (s, body) = query(&p, "/v1/query/balances?limit=500", &acme, &[]).await;
    assert_eq!(s, 200);
    assert_eq!(body["documents"].as_array().unwrap().len(), 9);

    let (s, body) = query(&p, "/v1/query/balances?cursor=a.b", &acme, &[]).await;
    assert_eq!(s, 400, "{body}");
    let (s, body) = query(&p, "/v1/query/balances?prefix=*", &acme, &[]).await;
    assert_eq!(s, 400, "{body}");
}
