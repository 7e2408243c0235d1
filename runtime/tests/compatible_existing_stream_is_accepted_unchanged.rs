//! An existing compatible stream (extra subjects, larger limits) is accepted and left unchanged.

use std::time::Duration;

use cloudlysis_runtime::stream::{self, EnsureOutcome};
use cloudlysis_test_support::NatsServer;

#[tokio::test]
async fn a_compatible_stream_with_extra_subjects_and_larger_limits_is_left_unchanged() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    let policy = stream::workflow_commands();
    let mut cfg = policy.stream_config();
    cfg.subjects = vec!["tenant.*.effect.*".into(), "audit.>".into()];
    cfg.max_age = Duration::from_secs(90 * 24 * 3600);
    cfg.duplicate_window = Duration::from_secs(600);
    cfg.max_message_size = 4 * 1024 * 1024;
    cfg.description = Some("operator-managed".into());
    js.create_stream(cfg).await.unwrap();
    let before = js
        .get_stream(policy.name)
        .await
        .unwrap()
        .cached_info()
        .clone();

    let (outcome, _) = stream::ensure_stream(&js, &policy).await.unwrap();
    assert_eq!(outcome, EnsureOutcome::Compatible);
    stream::check_stream(&js, &policy).await.unwrap();

    let after = js
        .get_stream(policy.name)
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(
        serde_json::to_value(&after.config).unwrap(),
        serde_json::to_value(&before.config).unwrap(),
        "config read back identical"
    );
    assert_eq!(after.created, before.created);
}

#[tokio::test]
async fn a_broader_wildcard_covers_the_required_subjects() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    let policy = stream::aggregate_events();
    let mut cfg = policy.stream_config();
    cfg.subjects = vec!["tenant.*.aggregate.>".into()];
    js.create_stream(cfg).await.unwrap();
    let (outcome, _) = stream::ensure_stream(&js, &policy).await.unwrap();
    assert_eq!(outcome, EnsureOutcome::Compatible);
}
