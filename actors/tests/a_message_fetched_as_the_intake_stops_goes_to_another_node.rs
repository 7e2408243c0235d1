//! A message delivered to a pull that a node made just before its intake stopped (a drain) is
//! handed to another node and processed there. Before, the draining node nak'ed it at once; the
//! server sent it straight back to the same still-open pull, and after `max_deliver` such round
//! trips in a few milliseconds the message was given up as poison — in a runner, an effect that
//! never ran ("cancelled after 0 attempts" in `tests/a_runner_drains_under_load_and_exits_zero.rs`).

mod common;

use std::time::Duration;

use cloudlysis_actors::consumer::{self, SubtreeOptions};
use cloudlysis_supervision::{Backoff, SupervisorRef};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_fetched_as_the_intake_stops_is_processed_by_another_node() {
    let (_server, js) = server().await;
    let seen_a = Seen::default();
    let seen_b = Seen::default();
    let (intake, intake_rx) = tokio::sync::watch::channel(false);
    let handler_a = seen_a.clone();
    let (config, a) = consumer::supervised_with(
        "a",
        js.clone(),
        STREAM,
        policy("stray", 16, 5),
        SubtreeOptions {
            intake: Some(intake_rx),
            ..Default::default()
        },
        move || Scripted(handler_a.clone()),
    );
    let _a = SupervisorRef::start(config.backoff(Backoff::none()), None)
        .await
        .unwrap();
    // A's pull is open, with nothing to deliver yet; then its intake stops.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !a.status(Duration::from_secs(5)).await.unwrap().fetching {
        assert!(tokio::time::Instant::now() < deadline, "A never fetched");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    intake.send_replace(true);
    publish(&js, 1, r#"{"id":1}"#).await;

    // B, another node on the same durable, takes it.
    let (_b, _) = start(&js, "b", policy("stray", 16, 5), &seen_b, None).await;
    until(|| seen_b.successes(1) == 1).await;
    assert_eq!(seen_a.attempts(1), 0, "the draining node handled it");
    let mut c: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(STREAM)
        .await
        .unwrap()
        .get_consumer("cloudlysis-projection-view-stray")
        .await
        .unwrap();
    let info = c.info().await.unwrap();
    assert!(
        info.num_redelivered <= 1,
        "the message went round {} times",
        info.num_redelivered
    );
}
