//! Rebuild: a view rebuilt from the stream (through the `ProjectionAdmin` RPC) equals the live
//! one — and repairs a document the live one got wrong — while queries keep being answered from
//! the live generation until the switch; the old generation's consumer and documents are gone
//! afterwards. Asking for a second rebuild while one runs, or for an unknown view, is refused.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cloudlysis_proto::projection_admin::projection_admin_client::ProjectionAdminClient;
use cloudlysis_proto::projection_admin::{DescribeViewsRequest, RebuildViewRequest};
use cloudlysis_test_support::eventually;
use common::*;

const ACCOUNTS: usize = 12;
const DEPOSITS: usize = 8;

async fn list_all(p: &Platform, token: &str, min_seq: u64) -> BTreeMap<String, serde_json::Value> {
    let (s, body) = query(
        p,
        "/v1/query/balances?limit=500",
        token,
        &[("x-min-sequence", &min_seq.to_string())],
    )
    .await;
    assert_eq!(s, 200, "{body}");
    body["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["key"].as_str().unwrap().to_string(),
                d["document"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_view_equals_the_live_one_and_queries_never_stop() {
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:account", "queries:balances"]);
    let mut last = 0;
    for a in 0..ACCOUNTS {
        let account = format!("acc-{a}");
        last = p
            .account_command(
                &token,
                &account,
                &format!(r#"{{"type":"Open","payload":{{"owner":"o{a}"}}}}"#),
            )
            .await;
        for d in 1..=DEPOSITS {
            last = p
                .account_command(
                    &token,
                    &account,
                    &format!(
                        r#"{{"type":"Deposit","payload":{{"amount":{}}}}}"#,
                        a * 100 + d
                    ),
                )
                .await;
        }
    }
    let live = list_all(&p, &token, last).await;
    assert_eq!(live.len(), ACCOUNTS);
    assert_eq!(p.projection.generation("balances"), Some(0));

    // A bug (or a hand edit) corrupts one live document; the rebuild must not copy it.
    let kv = p.js.get_key_value("cloudlysis_views").await.unwrap();
    let raw = kv.get("balances.acme.acc-3").await.unwrap().unwrap();
    let mut record: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    record["doc"]["balance"] = serde_json::json!(-1);
    kv.put(
        "balances.acme.acc-3",
        serde_json::to_vec(&record).unwrap().into(),
    )
    .await
    .unwrap();

    let mut admin = ProjectionAdminClient::with_interceptor(
        common::node_channel(p.projection_addr).await,
        common::operator_credential,
    );
    let started = admin
        .rebuild_view(RebuildViewRequest {
            view: "balances".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((started.generation, started.active_generation), (1, 0));

    // While it rebuilds, commands go on and every query is answered.
    let mut during = 0;
    let mut late_balance = 0i64;
    last = p
        .account_command(
            &token,
            "late",
            r#"{"type":"Open","payload":{"owner":"late"}}"#,
        )
        .await;
    let mut switched = false;
    for i in 1..=200i64 {
        if i <= 20 {
            last = p
                .account_command(
                    &token,
                    "late",
                    &format!(r#"{{"type":"Deposit","payload":{{"amount":{i}}}}}"#),
                )
                .await;
            late_balance += i;
        }
        let (s, body) = query(&p, "/v1/query/balances/acc-1", &token, &[]).await;
        assert_eq!(s, 200, "a query during the rebuild failed: {body}");
        assert_eq!(body["document"], live["acc-1"]);
        during += 1;
        let described = admin
            .describe_views(DescribeViewsRequest {})
            .await
            .unwrap()
            .into_inner();
        let status = &described.views[0];
        if status.generation == 1 && status.rebuilding.is_none() {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !switched {
        switched = eventually(Duration::from_secs(60), || async {
            p.projection.generation("balances") == Some(1)
        })
        .await;
    }
    assert!(switched, "the rebuild did not complete");
    assert!(during > 0);
    assert_eq!(p.projection.generation("balances"), Some(1));

    // The rebuilt view equals the live one (with the corrupted document repaired) plus what
    // was written during the rebuild.
    let rebuilt = list_all(&p, &token, last).await;
    let mut expected = live.clone();
    expected.insert(
        "late".into(),
        serde_json::json!({"owner": "late", "balance": late_balance, "open": true}),
    );
    assert_eq!(rebuilt, expected);
    assert_eq!(rebuilt["acc-3"]["balance"], live["acc-3"]["balance"]);
    let (s, body) = query(&p, "/v1/query/balances/acc-3", &token, &[]).await;
    assert_eq!((s, &body["document"]), (200, &live["acc-3"]));

    // The old generation is retired: its durable consumer and its documents are gone.
    let retired = eventually(Duration::from_secs(30), || async {
        let events = p.js.get_stream("AGGREGATE_EVENTS").await.unwrap();
        let consumer_gone = events
            .consumer_info("cloudlysis-projection-view-balances")
            .await
            .is_err();
        let docs_gone = kv.get("balances.acme.acc-1").await.unwrap().is_none();
        consumer_gone && docs_gone
    })
    .await;
    assert!(retired, "generation 0 was not retired");
    assert!(
        kv.get("balances=g1.acme.acc-1").await.unwrap().is_some(),
        "generation 1 holds the documents"
    );

    // The checkpoint is recorded in KV per generation; the retired one's record is gone.
    let checkpoints = p.js.get_key_value("cloudlysis_checkpoints").await.unwrap();
    let recorded = eventually(Duration::from_secs(30), || async {
        let Ok(Some(raw)) = checkpoints.get("balances=g1.checkpoint").await else {
            return false;
        };
        let record: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        record["generation"] == 1 && record["sequence"].as_u64() >= Some(last)
    })
    .await;
    assert!(recorded, "generation 1's checkpoint is not recorded");
    assert!(
        checkpoints
            .get("balances.checkpoint")
            .await
            .unwrap()
            .is_none()
    );

    // A second rebuild works the same way (generation 2).
    let again = admin
        .rebuild_view(RebuildViewRequest {
            view: "balances".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.generation, again.active_generation), (2, 1));
    assert!(
        eventually(Duration::from_secs(60), || async {
            p.projection.generation("balances") == Some(2)
        })
        .await
    );
    assert_eq!(list_all(&p, &token, last).await, expected);
}

#[tokio::test]
async fn rebuild_refuses_unknown_views_and_a_second_concurrent_rebuild() {
    let p = Platform::start().await;
    let mut admin = ProjectionAdminClient::with_interceptor(
        common::node_channel(p.projection_addr).await,
        common::operator_credential,
    );
    let err = admin
        .rebuild_view(RebuildViewRequest {
            view: "nosuchview".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    assert!(err.message().contains("balances"), "{err}");
    let err = admin
        .rebuild_view(RebuildViewRequest {
            view: "bad.view".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

    // With no projection node running the view, a requested rebuild stays pending, and a
    // second request is refused with the generation in progress named.
    use cloudlysis_actors::projection::generation::{RebuildError, request_rebuild};
    let first = request_rebuild(&p.js, "orphan").await.unwrap();
    assert_eq!(first.building, Some(1));
    match request_rebuild(&p.js, "orphan").await {
        Err(RebuildError::InProgress {
            active: 0,
            building: 1,
            ..
        }) => {}
        other => panic!("expected InProgress, got {other:?}"),
    }
    assert!(matches!(
        request_rebuild(&p.js, "a*b").await,
        Err(RebuildError::InvalidView { .. })
    ));

    // Cancelling abandons generation 1 for good: the next rebuild builds generation 2, so a
    // cancelled generation still being retired is never picked up again.
    use cloudlysis_actors::projection::generation::cancel_rebuild;
    let (after, cancelled) = cancel_rebuild(&p.js, "orphan").await.unwrap();
    assert_eq!((after.active, after.building, cancelled), (0, None, 1));
    assert!(matches!(
        cancel_rebuild(&p.js, "orphan").await,
        Err(RebuildError::NotRebuilding { active: 0, .. })
    ));
    assert_eq!(
        request_rebuild(&p.js, "orphan").await.unwrap().building,
        Some(2)
    );

    // Through the RPC: nothing to cancel on the live view.
    let err = admin
        .cancel_rebuild(cloudlysis_proto::projection_admin::CancelRebuildRequest {
            view: "balances".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
}

#[tokio::test]
async fn a_starting_node_retires_generations_left_behind() {
    use async_nats::jetstream::consumer::pull;
    use cloudlysis_actors::projection::ProjectionNode;
    use cloudlysis_actors::projection::generation::{self as view_generation, Generations};
    use cloudlysis_examples::balances::Balances;
    use cloudlysis_runtime::consumer::ConsumerSettings;
    use cloudlysis_runtime::stream;
    use futures::TryStreamExt;

    // A node died mid-switch: the record says generation 1, but generation 0's durable and
    // documents, and a stray generation 7 durable, are still there.
    let server = cloudlysis_test_support::NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    stream::ensure_stream(&js, &stream::aggregate_events())
        .await
        .unwrap();
    let events = js.get_stream("AGGREGATE_EVENTS").await.unwrap();
    for name in [
        "cloudlysis-projection-view-balances",
        "cloudlysis-projection-view-balances=g7",
    ] {
        events
            .create_consumer(pull::Config {
                durable_name: Some(name.into()),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let generations = view_generation::bucket(&js).await.unwrap();
    let written = view_generation::compare_and_set(
        &generations,
        "balances",
        None,
        Generations {
            active: 1,
            building: None,
            latest: 1,
        },
    )
    .await
    .unwrap();
    assert!(written);
    let views = cloudlysis_runtime::kv::ensure_bucket(&js, &cloudlysis_runtime::kv::views())
        .await
        .unwrap();
    views.put("balances.acme.stale", "{}".into()).await.unwrap();

    let node = ProjectionNode::builder(js.clone(), ConsumerSettings::default())
        .retire_grace(Duration::from_millis(100))
        .register::<Balances>()
        .build()
        .await
        .unwrap();
    assert_eq!(node.generation("balances"), Some(1));
    let cleaned = eventually(Duration::from_secs(30), || async {
        let names: Vec<String> = events.consumer_names().try_collect().await.unwrap();
        let stale_doc = views.get("balances.acme.stale").await.unwrap();
        names == vec!["cloudlysis-projection-view-balances=g1".to_string()] && stale_doc.is_none()
    })
    .await;
    assert!(cleaned, "leftover generations were not retired");
}
