//! A handler panic is a failure its supervisor sees (restart with the panic as reason), never a
//! process abort; the message is redelivered and processed.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn a_panicking_handler_is_restarted_and_the_message_redelivered() {
    let (_server, js) = server().await;
    let seen = Seen::default();
    let (sup, _h) = start(&js, "panics", policy("panics", 4, 5), &seen, None).await;

    publish(&js, 1, r#"{"id":1,"panic_once":true}"#).await;
    publish(&js, 2, r#"{"id":2}"#).await;
    until(|| seen.successes(1) == 1 && seen.successes(2) == 1).await;
    assert_eq!(seen.attempts(1), 2);

    let tree = sup.snapshot(Duration::from_secs(5)).await.unwrap();
    let handler = tree.find_child("panics-handler").unwrap();
    assert_eq!(handler.restarts, 1);
    assert_eq!(
        handler.last_failure.as_deref(),
        Some("panicked: event 1 panics once")
    );
    let consumer = tree.find_child("panics-consumer").unwrap();
    assert_eq!(consumer.restarts, 0, "the consumer kept running");
    assert_eq!(consumer.kind, "jetstream_consumer");
}
