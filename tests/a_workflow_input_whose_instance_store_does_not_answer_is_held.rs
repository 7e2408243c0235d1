//! While the workflow instances bucket does not answer (its KV stream is away, as for the
//! seconds of a leader election), an effect's result reaching its workflow is held and handed to
//! the workflow again, not failed towards poison: once the bucket answers, the workflow goes on
//! from where it was, each effect ran once, the transfer completes, and no poison record was
//! written. The result arrives during the outage: the withdraw effect waits at a gate, the
//! bucket is taken away (its records kept and put back afterwards, as a leader election keeps
//! them), then the gate opens.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cloudlysis_actors::runner::{Effect, EffectContext, EffectError};
use cloudlysis_examples::transfer::{AccountMove, DepositEffect, Moved, Transfer, WithdrawEffect};
use cloudlysis_runtime::kv::WORKFLOWS_BUCKET;
use cloudlysis_runtime::metrics::names::{HANDLER_OLDEST_HELD, HANDLER_RETRIES};
use cloudlysis_test_support::eventually;
use common::observe::{
    Counted, counter, held_for_at_least, poison_keys, remove_stream, restore_stream,
};
use common::{Platform, runner_settings};
use futures::StreamExt;
use tokio::sync::watch;

/// Runs the effect it wraps once `open` says so, counting executions.
struct Gated<E> {
    inner: E,
    open: watch::Receiver<bool>,
    runs: Arc<AtomicU64>,
}

impl<E: Effect<Command = AccountMove, Output = Moved>> Effect for Gated<E> {
    const TYPE: &'static str = E::TYPE;
    type Command = AccountMove;
    type Output = Moved;

    async fn execute(&self, cmd: AccountMove, ctx: &EffectContext) -> Result<Moved, EffectError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.clone();
        let _ = open.wait_for(|o| *o).await;
        self.inner.execute(cmd, ctx).await
    }
}

/// Every key and value of KV bucket `bucket`.
async fn records(js: &async_nats::jetstream::Context, bucket: &str) -> BTreeMap<String, Bytes> {
    let kv = js.get_key_value(bucket).await.unwrap();
    let keys: Vec<String> = kv.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
    let mut all = BTreeMap::new();
    for key in keys {
        if let Some(value) = kv.get(&key).await.unwrap() {
            all.insert(key, value);
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effect_result_waits_out_the_instances_bucket_and_the_workflow_goes_on() {
    let metrics = cloudlysis_runtime::metrics::install().unwrap();
    let mut p = Platform::start().await;
    let mut settings = runner_settings();
    // One failure short of poison after a single retry: an outage counted as failures would
    // quarantine the result at once.
    settings.consumer.max_deliver = 2;
    let client = p.command_client();
    let (gate, open) = watch::channel(false);
    let (withdraws, deposits) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (w, d) = (withdraws.clone(), deposits.clone());
    p.start_runner_with(settings, move |b| {
        b.workflow::<Transfer>()
            .effect(Gated {
                inner: WithdrawEffect(client.clone()),
                open,
                runs: w,
            })
            .effect(Counted {
                inner: DepositEffect(client),
                runs: d,
            })
    })
    .await;
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

    p.start_transfer(&token, "t-1", "a", "b", 40).await;
    let w = withdraws.clone();
    assert!(
        eventually(Duration::from_secs(30), move || {
            let w = w.clone();
            async move { w.load(Ordering::SeqCst) == 1 }
        })
        .await,
        "the withdraw effect did not start"
    );

    // The instances bucket goes away (its records and config kept to be put back), then the
    // withdraw's result is let through to the workflow.
    let kept = records(&p.js, WORKFLOWS_BUCKET).await;
    assert!(!kept.is_empty(), "the transfer's instance is in the bucket");
    let config = remove_stream(&p.js, &format!("KV_{WORKFLOWS_BUCKET}")).await;
    gate.send(true).unwrap();

    // Long enough for an outage counted as failures to show as poison records.
    let labels = [("handler", "workflow_inputs")];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while counter(&metrics.render(), HANDLER_RETRIES, &labels) < 3.0 {
        assert!(
            poison_keys(&p.js).await.is_empty(),
            "the instance outage quarantined the result"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the workflow input was never tried again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    held_for_at_least(|| metrics.render(), HANDLER_OLDEST_HELD, 1.0).await;
    assert_eq!(poison_keys(&p.js).await, Vec::<String>::new());
    assert_eq!(deposits.load(Ordering::SeqCst), 0, "the workflow went on");

    // The bucket answers again, with its records: the held result moves the workflow on.
    restore_stream(&p.js, config).await;
    let kv = p.js.get_key_value(WORKFLOWS_BUCKET).await.unwrap();
    for (key, value) in kept {
        kv.put(&key, value).await.unwrap();
    }
    let done = p
        .finished_workflow(&token, "transfer", "t-1", Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(withdraws.load(Ordering::SeqCst), 1, "withdrawn once");
    assert_eq!(deposits.load(Ordering::SeqCst), 1, "deposited once");
    assert_eq!(p.balance("acme", "a").await, 60);
    assert_eq!(p.balance("acme", "b").await, 40);
    assert_eq!(poison_keys(&p.js).await, Vec::<String>::new());
    assert_eq!(
        counter(&metrics.render(), HANDLER_OLDEST_HELD, &labels),
        0.0,
        "nothing is held once the workflow went on"
    );
}
