//! The server-side consumer has `max_ack_pending == max_in_flight`, and the handler's mailbox
//! never holds more than that at once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;

#[tokio::test]
async fn the_consumer_never_holds_more_than_max_in_flight() {
    let (_server, js) = server().await;
    let seen = Seen::gated();
    let (_sup, h) = start(&js, "bounded", policy("bounded", 4, 5), &seen, None).await;
    for id in 0..40 {
        publish(&js, id, &format!(r#"{{"id":{id}}}"#)).await;
    }

    let mut c: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(STREAM)
        .await
        .unwrap()
        .get_consumer("cloudlysis-projection-view-bounded")
        .await
        .unwrap();
    assert_eq!(c.info().await.unwrap().config.max_ack_pending, 4);

    // Gate closed: exactly 4 messages are out, and no more.
    until(|| h.handler.depth() == 4).await;
    let info = c.info().await.unwrap();
    assert_eq!(info.num_ack_pending, 4);
    assert_eq!(h.handler.capacity(), 4);

    // Open the gate slowly, sampling the mailbox depth as messages flow.
    let max_seen = Arc::new(AtomicUsize::new(0));
    let gate = seen.gate.clone().unwrap();
    for _ in 0..40 {
        gate.add_permits(1);
        max_seen.fetch_max(h.handler.depth(), Ordering::SeqCst);
        let info = c.info().await.unwrap();
        assert!(
            info.num_ack_pending <= 4,
            "server shows {} pending",
            info.num_ack_pending
        );
    }
    until(|| seen.distinct_successes() == 40).await;
    assert!(max_seen.load(Ordering::SeqCst) <= 4);
    for id in 0..40 {
        assert_eq!(seen.successes(id), 1);
    }
}
