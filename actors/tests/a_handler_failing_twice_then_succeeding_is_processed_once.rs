//! A handler that fails twice then succeeds: the message is processed once, after two
//! redeliveries, and the counters say so.

mod common;

use cloudlysis_runtime::metrics;
use common::*;

#[tokio::test]
async fn a_message_failing_twice_is_processed_once_after_two_redeliveries() {
    let prom = metrics::install().unwrap();
    let (_server, js) = server().await;
    let seen = Seen::default();
    let (_sup, _h) = start(&js, "twice", policy("twice", 8, 5), &seen, None).await;

    publish(&js, 1, r#"{"id":1,"fail_times":2}"#).await;
    until(|| seen.successes(1) == 1).await;
    assert_eq!(seen.attempts(1), 3);

    let labels = r#"stream="AGGREGATE_EVENTS",consumer="cloudlysis-projection-view-twice""#;
    let text = prom.render();
    let ack = format!("cloudlysis_consumer_messages_total{{{labels},outcome=\"ack\"}}");
    until(|| metric(&prom.render(), &ack) == 1.0).await;
    assert_eq!(
        metric(
            &text,
            &format!("cloudlysis_consumer_redeliveries_total{{{labels}}}")
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!("cloudlysis_consumer_messages_total{{{labels},outcome=\"nak\"}}")
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            &format!("cloudlysis_consumer_poison_total{{{labels}}}")
        ),
        0.0
    );

    // And the server agrees nothing is pending.
    let mut c: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(STREAM)
        .await
        .unwrap()
        .get_consumer("cloudlysis-projection-view-twice")
        .await
        .unwrap();
    let info = c.info().await.unwrap();
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!(info.num_pending, 0);
}
