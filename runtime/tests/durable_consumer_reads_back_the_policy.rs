//! A durable consumer made from the policy reads back with the same ack policy, ack wait,
//! max deliver and max ack pending.

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer};
use cloudlysis_runtime::config::ConfigSource;
use cloudlysis_runtime::consumer::{ConsumerPolicy, ConsumerRole, ConsumerSettings, DurableName};
use cloudlysis_runtime::stream;
use cloudlysis_runtime::subject::{SubjectToken, filter};
use cloudlysis_test_support::NatsServer;

#[tokio::test]
async fn a_durable_consumer_reads_back_with_the_policy_settings() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    stream::ensure_stream(&js, &stream::aggregate_events())
        .await
        .unwrap();
    let src = ConfigSource::from_env([
        ("PROJECTION_ACK_TIMEOUT_MS", "7000"),
        ("PROJECTION_MAX_DELIVER", "4"),
        ("PROJECTION_MAX_IN_FLIGHT", "16"),
    ]);
    let policy = ConsumerPolicy {
        durable: DurableName::projection_view(&SubjectToken::new("balances").unwrap()),
        filter_subjects: vec![filter::aggregate_type_events(
            &SubjectToken::new("account").unwrap(),
        )],
        settings: ConsumerSettings::load(ConsumerRole::Projection, &src).unwrap(),
    };
    let s = js.get_stream("AGGREGATE_EVENTS").await.unwrap();
    s.create_consumer(policy.pull_config()).await.unwrap();

    // Read back through a fresh lookup.
    let mut consumer: PullConsumer = s
        .get_consumer("cloudlysis-projection-view-balances")
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    let c = &info.config;
    assert_eq!(
        c.durable_name.as_deref(),
        Some("cloudlysis-projection-view-balances")
    );
    assert_eq!(c.ack_policy, AckPolicy::Explicit);
    assert_eq!(c.ack_wait, Duration::from_millis(7000));
    assert_eq!(c.max_deliver, 4);
    assert_eq!(c.max_ack_pending, 16);
    assert_eq!(c.filter_subject, "tenant.*.aggregate.account.*");
    assert!(c.deliver_subject.is_none(), "pull consumer");
}
