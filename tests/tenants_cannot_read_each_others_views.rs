//! Tenant isolation on the query path: tenant A's token cannot read tenant B's documents by any
//! path — key guessing, prefix listing, spoofed header — it gets 403 or 404, never data.

mod common;

use common::*;

#[tokio::test]
async fn no_query_reaches_another_tenants_documents() {
    let p = Platform::start().await;
    let a = p.token("tenant-a", &["commands:account", "queries:balances"]);
    let b = p.token("tenant-b", &["commands:account", "queries:balances"]);
    let open = |owner: &str| format!(r#"{{"type":"Open","payload":{{"owner":"{owner}"}}}}"#);
    // Same id in both tenants, plus a B-only account.
    let (s, _) = p
        .command("/v1/commands/account/shared", Some(&a), &[], &open("alice"))
        .await;
    assert_eq!(s, 200);
    let (s, _) = p
        .command("/v1/commands/account/shared", Some(&b), &[], &open("bob"))
        .await;
    assert_eq!(s, 200);
    let (s, resp) = p
        .command("/v1/commands/account/b-secret", Some(&b), &[], &open("bea"))
        .await;
    assert_eq!(s, 200);
    let seq = body_json(resp).await["stream_sequence"]
        .as_u64()
        .unwrap()
        .to_string();
    let wait = [("x-min-sequence", seq.as_str())];

    let (s, doc) = query(&p, "/v1/query/balances/shared", &a, &wait).await;
    assert_eq!(s, 200);
    assert_eq!(doc["document"]["owner"], "alice", "A sees its own document");
    let (s, doc) = query(&p, "/v1/query/balances/shared", &b, &wait).await;
    assert_eq!(s, 200);
    assert_eq!(doc["document"]["owner"], "bob");

    // Key guessing.
    let (s, doc) = query(&p, "/v1/query/balances/b-secret", &a, &wait).await;
    assert_eq!(s, 404, "{doc}");
    // Prefix listing.
    let (s, list) = query(&p, "/v1/query/balances?prefix=b", &a, &wait).await;
    assert_eq!(s, 200);
    assert_eq!(list["documents"].as_array().unwrap().len(), 0, "{list}");
    let (s, list) = query(&p, "/v1/query/balances", &a, &wait).await;
    assert_eq!(s, 200);
    let owners: Vec<&str> = list["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["document"]["owner"].as_str().unwrap())
        .collect();
    assert_eq!(owners, ["alice"]);
    // Spoofed tenant header.
    let (s, doc) = query(
        &p,
        "/v1/query/balances/b-secret",
        &a,
        &[("x-tenant-id", "tenant-b")],
    )
    .await;
    assert_eq!(s, 403, "{doc}");
    // Subject syntax cannot widen the key space.
    for path in [
        "/v1/query/balances/*",
        "/v1/query/balances/tenant-b.b-secret",
        "/v1/query/balances?prefix=%3E",
    ] {
        let (s, _) = query(&p, path, &a, &[]).await;
        assert_eq!(s, 400, "{path}");
    }
}
