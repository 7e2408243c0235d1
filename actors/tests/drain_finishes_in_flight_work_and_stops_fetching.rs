//! Drain stops fetching, lets in-flight messages finish, and reports zero in flight.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn drain_ends_with_zero_in_flight() {
    let (_server, js) = server().await;
    let seen = Seen::gated();
    let (_sup, h) = start(&js, "drain", policy("drain", 4, 5), &seen, None).await;
    for id in 0..20 {
        publish(&js, id, &format!(r#"{{"id":{id}}}"#)).await;
    }
    until(|| h.handler.depth() == 4).await;

    // Ask for the drain while four messages are held in flight.
    let drain = {
        let h = h.clone();
        tokio::spawn(async move { h.drain(Duration::from_secs(30)).await })
    };
    // Fetching stops at once; the four stay in flight until they finish.
    let stopped = async {
        loop {
            let s = h.status(Duration::from_secs(5)).await.unwrap();
            if s.draining && !s.fetching {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let status = tokio::time::timeout(Duration::from_secs(30), stopped)
        .await
        .unwrap();
    assert_eq!(status.in_flight, 4);
    assert!(!drain.is_finished(), "drain waits for in-flight work");

    // Let the four in-flight messages finish: the drain completes with nothing in flight.
    let gate = seen.gate.clone().unwrap();
    gate.add_permits(4);
    let report = drain.await.unwrap().unwrap();
    assert!(report.drained, "{report:?}");
    assert_eq!(report.in_flight, 0);
    assert_eq!(seen.distinct_successes(), 4);

    // Nothing more is fetched after the drain, even with the gate wide open.
    gate.add_permits(100);
    let handled = seen.distinct_successes();
    let mut c: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(STREAM)
        .await
        .unwrap()
        .get_consumer("cloudlysis-projection-view-drain")
        .await
        .unwrap();
    assert_eq!(c.info().await.unwrap().num_ack_pending, 0);
    assert_eq!(seen.distinct_successes(), handled);
}
