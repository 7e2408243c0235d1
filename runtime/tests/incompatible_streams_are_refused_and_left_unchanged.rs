//! Each incompatible variant is refused with the field named, and the stream is left unchanged.

use std::time::Duration;

use async_nats::jetstream::stream::{Config, StorageType};
use cloudlysis_runtime::stream::{self, StreamError, StreamPolicy};
use cloudlysis_test_support::NatsServer;

async fn assert_refused(policy: StreamPolicy, cfg: Config, field: &str) {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    js.create_stream(cfg).await.unwrap();
    let before = js
        .get_stream(policy.name)
        .await
        .unwrap()
        .cached_info()
        .clone();

    let err = stream::ensure_stream(&js, &policy).await.unwrap_err();
    match &err {
        StreamError::Incompatible(inc) => {
            assert_eq!(inc.field, field);
            assert_eq!(inc.stream, policy.name);
        }
        other => panic!("expected an incompatibility, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(policy.name) && msg.contains(field), "{msg}");
    assert!(matches!(
        stream::check_stream(&js, &policy).await,
        Err(StreamError::Incompatible(_))
    ));

    let after = js
        .get_stream(policy.name)
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(
        serde_json::to_value(&after.config).unwrap(),
        serde_json::to_value(&before.config).unwrap(),
        "stream left unchanged"
    );
    assert_eq!(after.created, before.created, "stream not replaced");
}

#[tokio::test]
async fn a_missing_subject_is_refused() {
    let policy = stream::workflow_events();
    let mut cfg = policy.stream_config();
    cfg.subjects = vec!["tenant.*.effect_result.*".into()];
    assert_refused(policy, cfg, "subjects").await;
}

#[tokio::test]
async fn a_duplicate_window_below_the_minimum_is_refused() {
    let policy = stream::aggregate_events();
    let mut cfg = policy.stream_config();
    cfg.duplicate_window = Duration::from_secs(30);
    assert_refused(policy, cfg, "duplicate_window").await;
}

#[tokio::test]
async fn a_max_age_on_aggregate_events_is_refused() {
    let policy = stream::aggregate_events();
    let mut cfg = policy.stream_config();
    cfg.max_age = Duration::from_secs(3600);
    assert_refused(policy, cfg, "max_age").await;
}

#[tokio::test]
async fn memory_storage_is_refused() {
    let policy = stream::aggregate_events();
    let mut cfg = policy.stream_config();
    cfg.storage = StorageType::Memory;
    assert_refused(policy, cfg, "storage").await;
}

#[tokio::test]
async fn check_reports_a_missing_stream_without_creating_it() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    let err = stream::check_stream(&js, &stream::aggregate_events())
        .await
        .unwrap_err();
    assert!(matches!(err, StreamError::Missing { .. }), "{err}");
    assert!(js.get_stream("AGGREGATE_EVENTS").await.is_err());
}
