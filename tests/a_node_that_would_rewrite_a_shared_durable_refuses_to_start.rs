//! A projection node whose view now follows another aggregate type (or that runs with another
//! ack wait than the nodes already running) does not rewrite the shared durable: it refuses to
//! start, naming the field and what to do, and the running nodes go on unchanged.

mod common;

use std::time::Duration;

use cloudlysis_actors::projection::ProjectionNode;
use cloudlysis_actors::projection::view::View;
use cloudlysis_runtime::consumer::ConsumerSettings;
use cloudlysis_runtime::envelope::EventEnvelope;
use common::Platform;

/// `balances`, now also following `order` events.
struct WiderBalances;

impl View for WiderBalances {
    const NAME: &'static str = "balances";
    const SCHEMA_VERSION: u32 = 1;
    type Document = cloudlysis_examples::balances::Balance;
    fn aggregate_types() -> &'static [&'static str] {
        &["account", "order"]
    }
    fn key(e: &EventEnvelope) -> Option<String> {
        Some(e.aggregate_id.clone())
    }
    fn apply(_: &mut Self::Document, _: &EventEnvelope) -> Result<(), String> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_filter_or_setting_is_refused_with_the_field_named() {
    let p = Platform::start().await;
    let refused = |settings: ConsumerSettings, wider: bool| {
        let js = p.js.clone();
        async move {
            let b = ProjectionNode::builder(js, settings);
            let b = if wider {
                b.register::<WiderBalances>()
            } else {
                b.register::<cloudlysis_examples::balances::Balances>()
            };
            match tokio::time::timeout(Duration::from_secs(30), b.build()).await {
                Ok(Ok(_)) => panic!("the node started"),
                Ok(Err(e)) => e.to_string(),
                Err(_) => panic!("the node neither started nor refused"),
            }
        }
    };
    let text = refused(ConsumerSettings::default(), true).await;
    assert!(text.contains("filter_subjects"), "{text}");
    assert!(text.contains("rebuild"), "{text}");
    let text = refused(
        ConsumerSettings {
            ack_wait: Duration::from_secs(3),
            ..ConsumerSettings::default()
        },
        false,
    )
    .await;
    assert!(text.contains("ack_wait"), "{text}");

    // The running node still serves the view from the unchanged durable.
    let token = p.token("acme", &["commands:account", "queries:balances"]);
    let seq = p
        .account_command(&token, "a", r#"{"type":"Open","payload":{"owner":"a"}}"#)
        .await;
    let (s, doc) = common::query(
        &p,
        "/v1/query/balances/a",
        &token,
        &[("x-min-sequence", &seq.to_string())],
    )
    .await;
    assert_eq!(s, 200, "{doc}");
}
