//! nats-server killed with -9 and restarted mid-stream: every message is handled, none lost.

mod common;

use common::*;

#[tokio::test]
async fn every_message_is_handled_across_a_server_crash() {
    let (mut server, js) = server().await;
    let seen = Seen::default();
    let (_sup, _h) = start(&js, "crash", policy("crash", 16, 10), &seen, None).await;

    for id in 0..300 {
        publish(&js, id, &format!(r#"{{"id":{id}}}"#)).await;
    }
    // Crash while the consumer is working through the backlog.
    until(|| seen.distinct_successes() >= 20).await;
    server.kill9().await.unwrap();
    server.restart().await.unwrap();

    // Publish more after the restart, on a fresh connection.
    let js2 = server.jetstream().await;
    for id in 300..400 {
        publish(&js2, id, &format!(r#"{{"id":{id}}}"#)).await;
    }
    until(|| seen.distinct_successes() == 400).await;
    for id in 0..400 {
        assert!(seen.successes(id) >= 1, "message {id} lost");
    }
}
