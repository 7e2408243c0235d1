//! An effect that has run when its ledger stops answering (the effects bucket's stream away, as
//! for the seconds of a leader election) keeps its outcome and writes it once the ledger
//! answers again: the effect is not run again, nothing is quarantined, and the workflow goes on.
//! Handing the command back instead would find its own claim still leased and, once the lease
//! ran out, run the effect a second time. The withdraw effect waits at a gate; the ledger is
//! taken away (its records kept and put back at their revisions afterwards, as a leader
//! election keeps them), then the gate opens.

mod common;

use cloudlysis_runtime::kv::EFFECTS_BUCKET;
use cloudlysis_runtime::metrics::names::{HANDLER_OLDEST_HELD, HANDLER_RETRIES};
use common::observe::{
    counter, held_for_at_least, held_not_poisoned, put_back, take_bucket, until_started,
};
use common::{Platform, runner_settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_waits_out_its_ledger_and_the_effect_runs_once() {
    let metrics = cloudlysis_runtime::metrics::install().unwrap();
    let mut p = Platform::start().await;
    let mut settings = runner_settings();
    settings.consumer.max_deliver = 2;
    let (gate, withdraws, deposits) = p.start_gated_transfer_runner(settings).await;
    let token = p.token("acme", &["commands:*", "workflows:*"]);
    p.open_accounts(&token, 100).await;
    p.start_transfer(&token, "t-1", "a", "b", 40).await;
    until_started(&withdraws).await;

    // The ledger goes away with the withdraw's claim in it; then the withdraw runs.
    let taken = take_bucket(&p.js, EFFECTS_BUCKET).await;
    assert!(!taken.records.is_empty(), "the withdraw's claim was kept");
    gate.send(true).unwrap();

    let labels = [("handler", "effect_worker")];
    held_not_poisoned(&p.js, || metrics.render(), HANDLER_RETRIES, &labels).await;
    held_for_at_least(|| metrics.render(), HANDLER_OLDEST_HELD, 1.0).await;
    assert_eq!(p.balance("acme", "a").await, 60, "the withdraw ran");

    // The ledger answers again: the outcome is written, the workflow goes on, nothing ran twice.
    put_back(&p.js, taken).await;
    p.transfer_completed_once(&token, "t-1", &withdraws, &deposits)
        .await;
    assert_eq!(
        counter(&metrics.render(), HANDLER_OLDEST_HELD, &labels),
        0.0,
        "nothing is held once the outcome was written"
    );
}
