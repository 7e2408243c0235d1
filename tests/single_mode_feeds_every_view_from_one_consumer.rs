//! Single mode: one durable consumer (`cloudlysis-projection-all`) feeds every view; each view
//! equals the fold of the stream, no per-view consumer exists, rebuilds are refused with a
//! reason, and a node refuses a mode that would apply events a second time.

use std::collections::BTreeMap;
use std::time::Duration;

use cloudlysis_actors::projection::view::View;
use cloudlysis_actors::projection::{
    ProjectionError, ProjectionMode, ProjectionNode, ProjectionNodeBuilder,
};
use cloudlysis_examples::balances::Balances;
use cloudlysis_examples::load::Deposits;
use cloudlysis_runtime::consumer::ConsumerSettings;
use cloudlysis_runtime::context::TenantId;
use cloudlysis_runtime::envelope::EventEnvelope;
use cloudlysis_test_support::{NatsServer, eventually, view_document};
use serde::{Deserialize, Serialize};

/// A second view over the same events: deposits counted per account.
struct DepositCounts;

#[derive(Default, Serialize, Deserialize)]
struct Count {
    deposits: u64,
}

impl View for DepositCounts {
    const NAME: &'static str = "deposit_counts";
    const SCHEMA_VERSION: u32 = 1;
    type Document = Count;
    fn aggregate_types() -> &'static [&'static str] {
        &["account"]
    }
    fn key(event: &EventEnvelope) -> Option<String> {
        Some(event.aggregate_id.clone())
    }
    fn apply(doc: &mut Count, event: &EventEnvelope) -> Result<(), String> {
        if event.event_type == "Deposited" {
            doc.deposits += 1;
        }
        Ok(())
    }
}

/// A view added after Single mode has been running.
struct LateView;

impl View for LateView {
    const NAME: &'static str = "late_view";
    const SCHEMA_VERSION: u32 = 1;
    type Document = Count;
    fn aggregate_types() -> &'static [&'static str] {
        &["account"]
    }
    fn key(event: &EventEnvelope) -> Option<String> {
        Some(event.aggregate_id.clone())
    }
    fn apply(_: &mut Count, _: &EventEnvelope) -> Result<(), String> {
        Ok(())
    }
}

const EVENTS: u64 = 400;
const ACCOUNTS: u64 = 10;

async fn publish_deposits(js: &async_nats::jetstream::Context) -> (u64, BTreeMap<String, i64>) {
    let published = Deposits {
        tenant: TenantId::new("acme").unwrap(),
        prefix: "acc-".into(),
        events: EVENTS,
        accounts: ACCOUNTS,
        amount: |i| (i % 5 + 1) as i64,
        window: 64,
    }
    .publish(js)
    .await
    .unwrap();
    (published.last_sequence, published.balances)
}

async fn consumer_names(js: &async_nats::jetstream::Context) -> Vec<String> {
    use futures::TryStreamExt;
    let events = js.get_stream("AGGREGATE_EVENTS").await.unwrap();
    let mut names: Vec<String> = events.consumer_names().try_collect().await.unwrap();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_consumer_feeds_both_views_exactly() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    let node = ProjectionNode::builder(js.clone(), ConsumerSettings::default())
        .mode(ProjectionMode::Single)
        .register::<Balances>()
        .register::<DepositCounts>()
        .build()
        .await
        .unwrap();
    let (last, sums) = publish_deposits(&js).await;
    let n = node.clone();
    assert!(
        eventually(Duration::from_secs(60), move || {
            let n = n.clone();
            async move {
                n.checkpoint("balances") >= Some(last)
                    && n.checkpoint("deposit_counts") >= Some(last)
            }
        })
        .await,
        "views did not catch up with {last}"
    );
    assert_eq!(node.commits_applied("balances"), Some(EVENTS));
    assert_eq!(node.commits_applied("deposit_counts"), Some(EVENTS));
    assert_eq!(
        consumer_names(&js).await,
        vec!["cloudlysis-projection-all".to_string()]
    );

    for (account, sum) in &sums {
        let balance = view_document(&js, "balances", "acme", account).await;
        assert_eq!(balance["balance"], *sum, "{account}");
        let count = view_document(&js, "deposit_counts", "acme", account).await;
        assert_eq!(count["deposits"], EVENTS / ACCOUNTS, "{account}");
    }

    let refused = node.rebuild("balances").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("PerView"), "{refused}");
    // Also when asked directly (as `cloudlysis projection rebuild` does), not through a node.
    assert!(matches!(
        cloudlysis_actors::projection::generation::request_rebuild(&js, "balances").await,
        Err(cloudlysis_actors::projection::generation::RebuildError::SingleMode(_))
    ));

    // A view the shared consumer never fed would miss every event before now: refused.
    let reason = mode_conflict(
        ProjectionNode::builder(js.clone(), ConsumerSettings::default())
            .mode(ProjectionMode::Single)
            .register::<Balances>()
            .register::<DepositCounts>()
            .register::<LateView>(),
    )
    .await;
    assert!(
        reason.contains("`late_view` is new to Single mode"),
        "{reason}"
    );
    // The views it does feed may restart in Single mode (a second replica, or a restart).
    ProjectionNode::builder(js.clone(), ConsumerSettings::default())
        .mode(ProjectionMode::Single)
        .register::<DepositCounts>()
        .build()
        .await
        .unwrap();

    // The same views started PerView would apply every event again: refused, naming the mode.
    let reason = mode_conflict(
        ProjectionNode::builder(js.clone(), ConsumerSettings::default()).register::<Balances>(),
    )
    .await;
    assert!(
        reason.contains("CLOUDLYSIS_PROJECTION_MODE=single"),
        "{reason}"
    );
}

#[tokio::test]
async fn single_mode_over_views_that_ran_per_view_is_refused() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    let per_view = ProjectionNode::builder(js.clone(), ConsumerSettings::default())
        .register::<Balances>()
        .build()
        .await
        .unwrap();
    drop(per_view);
    let reason = mode_conflict(
        ProjectionNode::builder(js.clone(), ConsumerSettings::default())
            .mode(ProjectionMode::Single)
            .register::<Balances>(),
    )
    .await;
    assert!(
        reason.contains("balances") && reason.contains("per-view"),
        "{reason}"
    );
}

#[test]
fn a_bad_mode_names_the_setting() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloudlysis"))
        .env(
            "CLOUDLYSIS_NODE_SECRET",
            cloudlysis_test_support::NODE_SECRET,
        )
        .env_remove("CLOUDLYSIS_CONFIG")
        .args([
            "projection",
            "--mode",
            "sometimes",
            "--nats-url",
            "nats://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("projection.mode") && stderr.contains("per-view"),
        "{stderr}"
    );
}

async fn mode_conflict(builder: ProjectionNodeBuilder) -> String {
    match builder.build().await {
        Err(ProjectionError::Mode(reason)) => reason,
        Err(other) => panic!("expected a mode conflict, got {other}"),
        Ok(_) => panic!("expected a mode conflict, got a node"),
    }
}
