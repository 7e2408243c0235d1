//! A handler whose store does not answer (`HandlerError::unavailable`: a timeout, no leader
//! during an election, the connection down) has its message held and handed to it again
//! (100 ms doubling to 5 s), not failed: with `max_deliver` 2 — one failure would poison it —
//! a message whose store fails four times is handled on the fifth try, from the server's first
//! delivery, and no poison record is written. A drain hands a held message back instead of
//! waiting out the outage.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_waited_out_not_counted() {
    let (_server, js) = server().await;
    let seen = Seen::default();
    let (_sup, _handle) = start(&js, "outage", policy("outage", 4, 2), &seen, None).await;
    publish(&js, 1, r#"{"id":1,"unavailable_times":4}"#).await;
    until(|| seen.successes(1) == 1).await;
    assert_eq!(seen.attempts(1), 5, "four outages, then handled");
    assert_eq!(
        seen.delivered.lock().unwrap().get(&1).copied(),
        Some(1),
        "held through the outage: the server delivered it once"
    );
    let poison = js.get_key_value("cloudlysis_poison").await.unwrap();
    assert!(
        poison
            .get("cloudlysis-projection-view-outage.1")
            .await
            .unwrap()
            .is_none()
    );
}

/// A drain does not wait out an outage: a message held because its store does not answer is
/// handed back to the server (not counted as a failure, not quarantined) and the drain reports
/// nothing in flight. Before, the drain waited its whole timeout (the consumer's `ack_wait`) and
/// reported the message still in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_hands_a_held_message_back() {
    let (_server, js) = server().await;
    let seen = Seen::default();
    let (_sup, handle) = start(&js, "drainheld", policy("drainheld", 4, 5), &seen, None).await;
    publish(&js, 1, r#"{"id":1,"unavailable_times":1000000}"#).await;
    until(|| seen.attempts(1) >= 2).await;
    let report = handle.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        report,
        cloudlysis_actors::consumer::DrainReport {
            drained: true,
            in_flight: 0
        }
    );
    let poison = js.get_key_value("cloudlysis_poison").await.unwrap();
    assert!(
        poison
            .get("cloudlysis-projection-view-drainheld.1")
            .await
            .unwrap()
            .is_none()
    );
}
