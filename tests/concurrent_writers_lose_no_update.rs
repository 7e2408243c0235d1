//! 100 concurrent deposits from 10 tasks end with the right balance and version; two aggregate
//! nodes writing the same entity resolve their conflicts with no duplicate versions.

mod common;

use std::collections::BTreeSet;

use cloudlysis_actors::aggregate::{AggregateSettings, CommandError, CommandRequest};
use cloudlysis_runtime::context::{RequestContext, TenantId};
use common::*;

#[tokio::test]
async fn one_hundred_concurrent_deposits_all_count() {
    let p = Platform::start().await;
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
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (gw, token) = (p.gateway.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            use tower::ServiceExt;
            for _ in 0..10 {
                let req = axum::http::Request::post("/v1/commands/account/acc")
                    .header("authorization", format!("Bearer {token}"))
                    .body(axum::body::Body::from(
                        r#"{"type":"Deposit","payload":{"amount":3}}"#,
                    ))
                    .unwrap();
                let resp = gw.router().oneshot(req).await.unwrap();
                assert_eq!(resp.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let commits = p.commits().await;
    let versions: Vec<u64> = commits
        .iter()
        .flat_map(|c| c.1.events.iter().map(|e| e.sequence))
        .collect();
    assert_eq!(
        versions,
        (1..=101).collect::<Vec<_>>(),
        "contiguous, no duplicates"
    );
    let deposited: u64 = commits
        .iter()
        .flat_map(|c| c.1.events.iter())
        .filter(|e| e.event_type == "Deposited")
        .map(|e| e.payload["amount"].as_u64().unwrap())
        .sum();
    assert_eq!(deposited, 300);
    // The entity's own view agrees: withdrawing exactly the balance works, one more does not.
    let (s, _) = p
        .command(
            "/v1/commands/account/acc",
            Some(&token),
            &[],
            r#"{"type":"Withdraw","payload":{"amount":300}}"#,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = p
        .command(
            "/v1/commands/account/acc",
            Some(&token),
            &[],
            r#"{"type":"Withdraw","payload":{"amount":1}}"#,
        )
        .await;
    assert_eq!(s, 422);
}

#[tokio::test]
async fn two_nodes_writing_one_entity_never_duplicate_a_version() {
    let p = Platform::start().await;
    // A second node on the same NATS: its entity for acc is a separate actor with its own state.
    let other = cloudlysis_actors::aggregate::node::AggregateNode::builder(
        p.js.clone(),
        AggregateSettings::default(),
    )
    .register::<cloudlysis_examples::account::Account>()
    .build()
    .await
    .unwrap();
    let req = |command: &str, payload: &str| CommandRequest {
        ctx: RequestContext::new(TenantId::new("acme").unwrap()),
        aggregate_id: "acc".try_into().unwrap(),
        command_type: command.into(),
        payload: bytes::Bytes::from(payload.to_string()),
        expected_version: None,
        deadline: None,
    };
    p.node
        .execute("account", req("Open", r#"{"owner":"a"}"#))
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let node = if i % 2 == 0 {
            p.node.clone()
        } else {
            other.clone()
        };
        let r = req("Deposit", &format!(r#"{{"amount":{}}}"#, i + 1));
        tasks.push(tokio::spawn(async move {
            (i + 1, node.execute("account", r).await)
        }));
    }
    let mut accepted = 0u64;
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            (amount, Ok(_)) => accepted += amount,
            (_, Err(CommandError::Conflict(_))) => conflicts += 1,
            (_, Err(e)) => panic!("unexpected error {e}"),
        }
    }
    let commits = p.commits().await;
    let versions: Vec<u64> = commits
        .iter()
        .flat_map(|c| c.1.events.iter().map(|e| e.sequence))
        .collect();
    let unique: BTreeSet<u64> = versions.iter().copied().collect();
    assert_eq!(
        unique.len(),
        versions.len(),
        "no duplicate versions: {versions:?}"
    );
    assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
    let in_stream: u64 = commits
        .iter()
        .flat_map(|c| c.1.events.iter())
        .filter(|e| e.event_type == "Deposited")
        .map(|e| e.payload["amount"].as_u64().unwrap())
        .sum();
    assert_eq!(
        in_stream, accepted,
        "every accepted deposit is in the stream, nothing else"
    );
    assert_eq!(
        versions.len() as u64,
        1 + 40 - conflicts,
        "conflicts are reported, never lost"
    );
}
