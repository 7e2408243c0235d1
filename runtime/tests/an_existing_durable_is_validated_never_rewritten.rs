//! A durable consumer is created from its policy, bound when an identical one exists, and
//! refused — with the field named and what to do — when it differs; the existing durable is
//! left unchanged. Before the fix consumers were started with create-or-update: a node with
//! another filter or ack wait rewrote the shared durable in place.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use cloudlysis_runtime::consumer::{
    ConsumerError, ConsumerPolicy, ConsumerSettings, DurableName, ensure_consumer,
};
use cloudlysis_runtime::stream;
use cloudlysis_runtime::subject::{SubjectToken, filter};
use cloudlysis_test_support::NatsServer;

fn policy(types: &[&str], settings: ConsumerSettings) -> ConsumerPolicy {
    ConsumerPolicy {
        durable: DurableName::projection_view(&SubjectToken::new("balances").unwrap()),
        filter_subjects: types
            .iter()
            .map(|t| filter::aggregate_type_events(&SubjectToken::new(*t).unwrap()))
            .collect(),
        settings,
    }
}

#[tokio::test]
async fn a_differing_durable_is_refused_with_the_field_named_and_left_unchanged() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    stream::ensure_stream(&js, &stream::aggregate_events())
        .await
        .unwrap();
    let s = js.get_stream("AGGREGATE_EVENTS").await.unwrap();
    let base = ConsumerSettings::default();
    let original = policy(&["account"], base);

    // Created, then bound again (an identical second node).
    ensure_consumer(&s, "AGGREGATE_EVENTS", &original)
        .await
        .unwrap();
    ensure_consumer(&s, "AGGREGATE_EVENTS", &original)
        .await
        .unwrap();

    let cases = [
        (
            policy(&["account", "order"], base),
            "filter_subjects",
            "rebuild",
        ),
        (
            policy(
                &["account"],
                ConsumerSettings {
                    ack_wait: Duration::from_secs(3),
                    ..base
                },
            ),
            "ack_wait",
            "projection.ack_timeout_ms",
        ),
        (
            policy(
                &["account"],
                ConsumerSettings {
                    max_in_flight: base.max_in_flight * 2,
                    ..base
                },
            ),
            "max_ack_pending",
            "projection.max_in_flight",
        ),
        (
            policy(
                &["account"],
                ConsumerSettings {
                    max_deliver: 9,
                    ..base
                },
            ),
            "max_deliver",
            "projection.max_deliver",
        ),
    ];
    for (other, field, hint) in cases {
        let Err(err) = ensure_consumer(&s, "AGGREGATE_EVENTS", &other).await else {
            panic!("a durable with another {field} was accepted");
        };
        let text = err.to_string();
        assert!(
            matches!(&err, ConsumerError::Incompatible { field: f, .. } if *f == field),
            "{text}"
        );
        assert!(text.contains(hint), "{text}");
    }

    // The durable is as the first node made it.
    let mut c: PullConsumer = s
        .get_consumer("cloudlysis-projection-view-balances")
        .await
        .unwrap();
    let info = c.info().await.unwrap();
    assert_eq!(info.config.ack_wait, base.ack_wait);
    assert_eq!(info.config.max_deliver, base.max_deliver as i64);
    assert_eq!(info.config.max_ack_pending, base.max_in_flight as i64);
    assert_eq!(
        info.config.filter_subject,
        filter::aggregate_type_events(&SubjectToken::new("account").unwrap())
    );
}
