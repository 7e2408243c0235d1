//! A handler may defer a message that is not due yet (`HandlerError::defer`): it is nak'ed with
//! that delay, redelivered, and handled — never counted as a failure towards poison.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferrals_are_not_failures() {
    let (_server, js) = server().await;
    // max_deliver 4: three failures would poison it (after max_deliver - 1); three deferrals do not.
    let seen = Seen::default();
    let (_sup, _handle) = start(&js, "defer", policy("defer", 4, 4), &seen, None).await;
    publish(&js, 1, r#"{"id":1,"defer_times":3}"#).await;
    until(|| seen.successes(1) == 1).await;
    assert_eq!(seen.attempts(1), 4);
    let poison = js.get_key_value("cloudlysis_poison").await.unwrap();
    assert!(
        poison
            .get("cloudlysis-projection-view-defer.1")
            .await
            .unwrap()
            .is_none()
    );
}
