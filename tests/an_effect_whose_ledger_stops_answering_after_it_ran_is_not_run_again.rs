//! An effect that has run when its ledger stops answering (the effects bucket's stream away, as
//! for the seconds of a leader election) keeps its outcome and writes it once the ledger
//! answers again: the effect is not run again, nothing is quarantined, and the workflow goes on.
//! Meanwhile `GET /admin/nodes` shows the runner holding it, and for how long.
//! Handing the command back instead would find its own claim still leased and, once the lease
//! ran out, run the effect a second time. The withdraw effect waits at a gate; the ledger is
//! taken away (its records kept and put back at their revisions afterwards, as a leader
//! election keeps them), then the gate opens.

mod common;

use cloudlysis_runtime::kv::EFFECTS_BUCKET;
use cloudlysis_runtime::metrics::names::{HANDLER_OLDEST_HELD, HANDLER_RETRIES};
use common::Platform;
use common::observe::{counter, held_for_at_least, held_not_poisoned, put_back, take_bucket};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_waits_out_its_ledger_and_the_effect_runs_once() {
    let metrics = cloudlysis_runtime::metrics::install().unwrap();
    let mut p = Platform::start().await;
    let common::GatedTransfer {
        gate,
        withdraws,
        deposits,
        token,
    } = p.gated_transfer_at_its_withdraw().await;

    // The ledger goes away with the withdraw's claim in it; then the withdraw runs.
    let taken = take_bucket(&p.js, EFFECTS_BUCKET).await;
    assert!(!taken.records.is_empty(), "the withdraw's claim was kept");
    gate.send(true).unwrap();

    let labels = [("handler", "effect_worker")];
    held_not_poisoned(&p.js, || metrics.render(), HANDLER_RETRIES, &labels).await;
    held_for_at_least(|| metrics.render(), HANDLER_OLDEST_HELD, &labels, 1.0).await;
    assert_eq!(p.balance("acme", "a").await, 60, "the withdraw ran");
    // Operators see it: the runner reports what it holds, and for how long.
    let admin = p.token("acme", &["admin:read"]);
    let held = p
        .runner_holds(&admin, |held| {
            held.iter()
                .all(|h| h["oldest_seconds"].as_f64() >= Some(1.0))
        })
        .await;
    assert_eq!(
        held,
        serde_json::json!([{"kind": "handler", "name": "effect_worker", "messages": 1}]),
        "GET /admin/nodes"
    );

    // Reading the instance meanwhile says the ledger's view is not known, and why — not a
    // made-up "no attempt yet".
    let (s, w) = p.workflow(&token, "transfer", "t-1").await;
    assert_eq!(s, 200, "{w}");
    let withdraw = &w["pending"][0];
    assert_eq!(withdraw["ledger_status"], "unknown", "{w}");
    assert!(
        withdraw["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("the effect ledger did not answer")),
        "{w}"
    );

    // The ledger answers again: the outcome is written, the workflow goes on, nothing ran twice.
    put_back(&p.js, taken).await;
    p.transfer_completed_once(&token, "t-1", &withdraws, &deposits)
        .await;
    assert_eq!(
        counter(&metrics.render(), HANDLER_OLDEST_HELD, &labels),
        0.0,
        "nothing is held once the outcome was written"
    );
    let held = p.runner_holds(&admin, <[_]>::is_empty).await;
    assert_eq!(held, serde_json::json!([]), "nothing held any more");
}
