//! While the workflow instances bucket does not answer (its KV stream is away, as for the
//! seconds of a leader election), an effect's result reaching its workflow is held and handed to
//! the workflow again, not failed towards poison: once the bucket answers, the workflow goes on
//! from where it was, each effect ran once, the transfer completes, and no poison record was
//! written. The result arrives during the outage: the withdraw effect waits at a gate, the
//! bucket is taken away (its records kept and put back at their revisions afterwards, as a
//! leader election keeps them), then the gate opens.

mod common;

use std::sync::atomic::Ordering;

use cloudlysis_runtime::kv::WORKFLOWS_BUCKET;
use cloudlysis_runtime::metrics::names::{HANDLER_OLDEST_HELD, HANDLER_RETRIES};
use common::Platform;
use common::observe::{counter, held_for_at_least, held_not_poisoned, put_back, take_bucket};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effect_result_waits_out_the_instances_bucket_and_the_workflow_goes_on() {
    let metrics = cloudlysis_runtime::metrics::install().unwrap();
    let mut p = Platform::start().await;
    let common::GatedTransfer {
        gate,
        withdraws,
        deposits,
        token,
    } = p.gated_transfer_at_its_withdraw().await;

    // The instances bucket goes away, then the withdraw's result is let through.
    let taken = take_bucket(&p.js, WORKFLOWS_BUCKET).await;
    assert!(
        !taken.records.is_empty(),
        "the transfer's instance was kept"
    );
    gate.send(true).unwrap();

    let labels = [("handler", "workflow_inputs")];
    held_not_poisoned(&p.js, || metrics.render(), HANDLER_RETRIES, &labels).await;
    held_for_at_least(|| metrics.render(), HANDLER_OLDEST_HELD, &labels, 1.0).await;
    assert_eq!(deposits.load(Ordering::SeqCst), 0, "the workflow went on");

    // The bucket answers again, with its records: the held result moves the workflow on.
    put_back(&p.js, taken).await;
    p.transfer_completed_once(&token, "t-1", &withdraws, &deposits)
        .await;
    assert_eq!(
        counter(&metrics.render(), HANDLER_OLDEST_HELD, &labels),
        0.0,
        "nothing is held once the workflow went on"
    );
}
