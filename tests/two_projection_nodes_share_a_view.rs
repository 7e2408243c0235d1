//! Scale-out: two projection nodes sharing the view's durable consumer over 10 000 events apply
//! every event exactly once — the view equals a fold of the stream — and both did work.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use cloudlysis_actors::projection_node::ProjectionNode;
use cloudlysis_examples::balances::Balances;
use cloudlysis_runtime::consumer::ConsumerSettings;
use cloudlysis_runtime::context::{RequestContext, TenantId};
use cloudlysis_runtime::envelope::{Commit, EventEnvelope};
use cloudlysis_runtime::{nats, subject};
use common::*;
use futures::StreamExt;

const EVENTS: u64 = 10_000;
const ACCOUNTS: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_applied_once_across_two_nodes() {
    let p = Platform::start().await;
    let second = ProjectionNode::builder(p.js.clone(), ConsumerSettings::default())
        .register::<Balances>()
        .build()
        .await
        .unwrap();

    // Publish commits straight to the stream (the aggregate node is not under test here).
    let tenant = TenantId::new("acme").unwrap();
    let ctx = RequestContext::new(tenant.clone());
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let mut publishes = futures::stream::FuturesUnordered::new();
    for i in 0..EVENTS {
        let account = format!("acc-{}", i % ACCOUNTS);
        let amount = (i % 7 + 1) as i64;
        *expected.entry(account.clone()).or_default() += amount;
        let commit = Commit {
            schema_version: 1,
            commit_id: format!("c-{i}"),
            events: vec![EventEnvelope {
                event_id: format!("e-{i}"),
                tenant_id: "acme".into(),
                aggregate_type: "account".into(),
                aggregate_id: account.clone(),
                sequence: i / ACCOUNTS + 1,
                event_type: "Deposited".into(),
                schema_version: 1,
                occurred_at: "2026-11-26T00:00:00Z".into(),
                payload: serde_json::json!({ "amount": amount }),
                correlation_id: None,
                traceparent: None,
            }],
        };
        let subj = subject::aggregate_event(
            &tenant,
            &"account".try_into().unwrap(),
            &account.as_str().try_into().unwrap(),
        );
        let (js, ctx) = (p.js.clone(), ctx.clone());
        publishes.push(async move {
            nats::publish(
                &js,
                subj,
                &ctx,
                &format!("c-{i}"),
                None,
                Bytes::from(serde_json::to_vec(&commit).unwrap()),
                Duration::from_secs(30),
            )
            .await
            .unwrap()
            .sequence
        });
        if publishes.len() >= 256 {
            publishes.next().await;
        }
    }
    while publishes.next().await.is_some() {}
    let last =
        p.js.get_stream("AGGREGATE_EVENTS")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .last_sequence;

    let mut caught_up = false;
    for _ in 0..3000 {
        if p.projection.checkpoint("balances") >= Some(last)
            && second.checkpoint("balances") >= Some(last)
        {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(caught_up, "views did not catch up with sequence {last}");

    let (a, b) = (
        p.projection.commits_applied("balances").unwrap(),
        second.commits_applied("balances").unwrap(),
    );
    assert_eq!(
        a + b,
        EVENTS,
        "every commit applied exactly once ({a} + {b})"
    );
    assert!(a > 0 && b > 0, "both nodes did work ({a}, {b})");

    let kv = p.js.get_key_value("cloudlysis_views").await.unwrap();
    for (account, sum) in &expected {
        let bytes = kv
            .get(format!("balances.acme.{account}"))
            .await
            .unwrap()
            .unwrap();
        let record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(record["doc"]["balance"], *sum, "{account}");
    }
}
