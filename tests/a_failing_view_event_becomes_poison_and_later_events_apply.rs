//! An event whose `apply` always fails gets one poison record (stream sequence, subject, error,
//! attempts), is termed, and later events are still applied.

mod common;

use std::time::Duration;

use cloudlysis_actors::projection::ProjectionNode;
use cloudlysis_actors::projection::view::View;
use cloudlysis_runtime::consumer::{ConsumerSettings, NakBackoff};
use cloudlysis_runtime::envelope::EventEnvelope;
use cloudlysis_runtime::poison::PoisonRecord;
use common::*;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Doc {
    sum: i64,
}

/// Refuses deposits of exactly 13.
struct Picky;

impl View for Picky {
    const NAME: &'static str = "picky";
    const SCHEMA_VERSION: u32 = 1;
    type Document = Doc;
    fn aggregate_types() -> &'static [&'static str] {
        &["account"]
    }
    fn key(e: &EventEnvelope) -> Option<String> {
        Some(e.aggregate_id.clone())
    }
    fn apply(doc: &mut Doc, e: &EventEnvelope) -> Result<(), String> {
        if e.event_type == "Deposited" {
            let amount = e.payload["amount"].as_i64().ok_or("no amount")?;
            if amount == 13 {
                return Err("13 is unlucky".into());
            }
            doc.sum += amount;
        }
        Ok(())
    }
}

#[tokio::test]
async fn the_poison_event_is_quarantined_and_the_view_moves_on() {
    let p = Platform::start().await;
    let settings = ConsumerSettings {
        max_deliver: 3,
        nak_backoff: NakBackoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            multiplier: 2,
        },
        ..ConsumerSettings::default()
    };
    let picky = ProjectionNode::builder(p.js.clone(), settings)
        .register::<Picky>()
        .build()
        .await
        .unwrap();
    let token = p.token("acme", &["commands:account"]);
    let send = |body: String| {
        let (p, token) = (&p, token.clone());
        async move {
            p.command("/v1/commands/account/acc", Some(&token), &[], &body)
                .await
                .0
        }
    };
    assert_eq!(
        send(r#"{"type":"Open","payload":{"owner":"o"}}"#.into()).await,
        200
    );
    for amount in [5, 13, 7] {
        assert_eq!(
            send(format!(
                r#"{{"type":"Deposit","payload":{{"amount":{amount}}}}}"#
            ))
            .await,
            200
        );
    }

    let kv = p.js.get_key_value("cloudlysis_views").await.unwrap();
    let mut sum = None;
    for _ in 0..1500 {
        if let Ok(Some(bytes)) = kv.get("picky.acme.acc").await {
            let record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            if record["doc"]["sum"] == 12 {
                sum = Some(12);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sum, Some(12), "5 and 7 applied, 13 not");

    let poison = p.js.get_key_value("cloudlysis_poison").await.unwrap();
    let mut records = Vec::new();
    for _ in 0..1500 {
        let keys: Vec<String> = poison
            .keys()
            .await
            .unwrap()
            .map(|k| k.unwrap())
            .collect()
            .await;
        if !keys.is_empty() {
            for k in keys {
                let bytes = poison.get(&k).await.unwrap().unwrap();
                records.push(serde_json::from_slice::<PoisonRecord>(&bytes).unwrap());
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!(r.consumer, "cloudlysis-projection-view-picky");
    assert_eq!(r.sequence, 3, "the 13 deposit was the third commit");
    assert_eq!(r.subject, "tenant.acme.aggregate.account.acc");
    assert_eq!(r.error, "13 is unlucky");
    assert_eq!(r.attempts, 2, "max_deliver - 1");
    drop(picky);
}
