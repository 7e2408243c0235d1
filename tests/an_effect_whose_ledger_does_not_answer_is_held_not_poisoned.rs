//! While the effects ledger does not answer (its KV bucket has no stream behind it, as for the
//! seconds of a leader election), an effect command is held and tried again, not failed
//! towards poison: once the ledger answers, the workflow completes, each effect ran once, and
//! no poison record was written; meanwhile `cloudlysis_handler_oldest_held_seconds` says how
//! long the command has waited. (Before: the ledger read failed the command, which was
//! quarantined after `max_deliver - 1` tries — the transfer never moved its money.)

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use cloudlysis_runtime::kv::EFFECTS_BUCKET;
use common::observe::{
    counter, held_for_at_least, poison_after_an_outage, poison_keys, remove_stream, restore_stream,
};
use common::{Platform, runner_settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effect_command_waits_out_its_ledger_and_runs_once() {
    let metrics = cloudlysis_runtime::metrics::install().unwrap();
    let mut p = Platform::start().await;
    let mut settings = runner_settings();
    // One failure short of poison after a single retry: an outage counted as failures would
    // quarantine the command at once.
    settings.consumer.max_deliver = 2;
    let runs = p.start_counted_transfer_runner(settings).await;
    let token = p.token("acme", &["commands:*", "workflows:*"]);
    p.account_command(&token, "a", r#"{"type":"Open","payload":{"owner":"a"}}"#)
        .await;
    p.account_command(
        &token,
        "a",
        r#"{"type":"Deposit","payload":{"amount":100}}"#,
    )
    .await;
    p.account_command(&token, "b", r#"{"type":"Open","payload":{"owner":"b"}}"#)
        .await;

    // The ledger goes away (kept to be put back).
    let ledger = format!("KV_{EFFECTS_BUCKET}");
    let config = remove_stream(&p.js, &ledger).await;

    p.start_transfer(&token, "t-1", "a", "b", 40).await;

    // Long enough for an outage counted as failures to show as poison records.
    let quarantined = poison_after_an_outage(
        &p.js,
        || metrics.render(),
        cloudlysis_runtime::metrics::names::HANDLER_RETRIES,
    )
    .await;
    assert_eq!(
        quarantined,
        Vec::<String>::new(),
        "a ledger outage quarantined the effect command"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "no effect ran without its ledger"
    );

    // How long the command has been held is in sight while the ledger stays away.
    let held = cloudlysis_runtime::metrics::names::HANDLER_OLDEST_HELD;
    held_for_at_least(
        || metrics.render(),
        held,
        &[("handler", "effect_worker")],
        1.0,
    )
    .await;

    // The ledger is back: the held command runs, once, and the transfer completes.
    restore_stream(&p.js, config).await;
    let done = p
        .finished_workflow(&token, "transfer", "t-1", Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "each effect ran once");
    assert_eq!(p.balance("acme", "a").await, 60);
    assert_eq!(p.balance("acme", "b").await, 40);
    assert_eq!(poison_keys(&p.js).await, Vec::<String>::new());
    assert_eq!(
        counter(&metrics.render(), held, &[("handler", "effect_worker")]),
        0.0,
        "nothing is held once the effects ran"
    );
}
