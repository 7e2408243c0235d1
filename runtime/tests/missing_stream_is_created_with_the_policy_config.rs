//! A missing stream is created with exactly the policy's config, read back from the server.

use cloudlysis_runtime::stream::{self, EnsureOutcome};
use cloudlysis_test_support::NatsServer;

#[tokio::test]
async fn missing_streams_are_created_with_the_policy_config() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    for policy in stream::all() {
        let (outcome, _) = stream::ensure_stream(&js, &policy).await.unwrap();
        assert_eq!(outcome, EnsureOutcome::Created, "{}", policy.name);

        let mut read_back = js.get_stream(policy.name).await.unwrap();
        let cfg = read_back.info().await.unwrap().config.clone();
        let want = policy.stream_config();
        assert_eq!(cfg.name, want.name);
        assert_eq!(cfg.subjects, want.subjects);
        assert_eq!(cfg.storage, want.storage);
        assert_eq!(cfg.retention, want.retention);
        assert_eq!(cfg.max_age, want.max_age);
        assert_eq!(cfg.max_messages, want.max_messages);
        assert_eq!(cfg.max_bytes, want.max_bytes);
        assert_eq!(cfg.max_messages_per_subject, want.max_messages_per_subject);
        assert_eq!(cfg.max_message_size, want.max_message_size);
        assert_eq!(cfg.duplicate_window, want.duplicate_window);
        assert_eq!(cfg.discard, want.discard);
        assert_eq!(cfg.num_replicas, want.num_replicas);
        assert_eq!(cfg.description, want.description);
        assert_eq!(cfg.allow_direct, want.allow_direct);

        // Ensuring again finds it compatible and changes nothing.
        let (outcome, info) = stream::ensure_stream(&js, &policy).await.unwrap();
        assert_eq!(outcome, EnsureOutcome::Compatible);
        assert_eq!(info.created, read_back.cached_info().created);
    }
}
