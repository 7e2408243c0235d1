//! A handler whose store does not answer (`HandlerError::unavailable`: a timeout, no leader
//! during an election, the connection down) has its message held and handed to it again
//! (100 ms doubling to 5 s), not failed: with `max_deliver` 2 — one failure would poison it —
//! a message whose store fails four times is handled on the fifth try, from the server's first
//! delivery, and no poison record is written.

mod common;

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
