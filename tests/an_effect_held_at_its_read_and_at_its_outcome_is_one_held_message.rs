//! A message whose store stops answering at two of its steps is one held message, not two: the
//! withdraw effect's ledger read is held (the effects bucket away), the bucket comes back, the
//! effect runs, and the bucket goes away again before its outcome is written. While the
//! outcome write waits, `GET /admin/nodes` reports the runner holding one message — as long as
//! the message has been held since its first step waited — and nothing once it is written.
//! Before the fix each step kept its own hold and the runner reported two.

mod common;

use cloudlysis_runtime::kv::EFFECTS_BUCKET;
use cloudlysis_runtime::metrics::names::{HANDLER_OLDEST_HELD, HANDLER_RETRIES};
use common::observe::{counter, held_for_at_least, put_back, take_bucket, until_started};
use common::{Platform, runner_settings};
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_held_at_its_read_and_at_its_outcome_write_is_one_held_message() {
    let metrics = cloudlysis_runtime::metrics::install().unwrap();
    let mut p = Platform::start().await;
    let mut settings = runner_settings();
    settings.consumer.max_deliver = 2;
    let (gate, withdraws, deposits) = p.start_gated_transfer_runner(settings).await;
    let token = p.token("acme", &["commands:*", "workflows:*"]);
    let admin = p.token("acme", &["admin:read"]);
    p.open_accounts(&token, 100).await;
    let labels = [("handler", "effect_worker")];

    // The ledger is away when the withdraw arrives: its read is held.
    let taken = take_bucket(&p.js, EFFECTS_BUCKET).await;
    p.start_transfer(&token, "t-1", "a", "b", 40).await;
    held_for_at_least(|| metrics.render(), HANDLER_OLDEST_HELD, &labels, 1.0).await;
    assert_eq!(withdraws.load(SeqCst), 0, "nothing ran without its claim");

    // It answers again: the withdraw is claimed and runs (it waits at its gate) ...
    put_back(&p.js, taken).await;
    until_started(&withdraws).await;
    // ... and the ledger goes away again before the outcome is written.
    let taken = take_bucket(&p.js, EFFECTS_BUCKET).await;
    let retries = counter(&metrics.render(), HANDLER_RETRIES, &labels);
    gate.send(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter(&metrics.render(), HANDLER_RETRIES, &labels) < retries + 2.0 {
        assert!(
            Instant::now() < deadline,
            "the outcome write was not retried"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(p.balance("acme", "a").await, 60, "the withdraw ran");

    let held = p.runner_holds(&admin, |held| !held.is_empty()).await;
    assert_eq!(
        held,
        serde_json::json!([{"kind": "handler", "name": "effect_worker", "messages": 1}]),
        "one message held, at its second step"
    );

    put_back(&p.js, taken).await;
    p.transfer_completed_once(&token, "t-1", &withdraws, &deposits)
        .await;
    assert_eq!(
        counter(&metrics.render(), HANDLER_OLDEST_HELD, &labels),
        0.0,
        "nothing is held once the outcome was written"
    );
}
