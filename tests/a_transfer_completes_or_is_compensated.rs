//! The `transfer` saga end to end (Gateway → runner → effects → aggregate node → JetStream):
//! it completes; a transfer to a closed or missing account is refunded; a deposit that keeps
//! failing is refunded after its retries; one that outlives the transfer's timeout is refunded
//! when the timer fires.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cloudlysis_actors::runner::{CommandClient, Effect, EffectContext, EffectError, RetryPolicy};
use cloudlysis_examples::transfer::{AccountMove, DepositEffect, Moved, Transfer, WithdrawEffect};
use common::{Platform, body_json};

/// The demo deposit, except that accounts named `flaky-…` always fail retryably.
pub struct FlakyDeposit {
    inner: DepositEffect,
    failures: Arc<AtomicU64>,
}

impl Effect for FlakyDeposit {
    const TYPE: &'static str = "deposit";
    type Command = AccountMove;
    type Output = Moved;

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(300),
            max_backoff: Duration::from_secs(10),
            multiplier: 10.0,
            jitter: 0.0,
            attempt_timeout: Duration::from_secs(5),
        }
    }

    async fn execute(&self, cmd: AccountMove, ctx: &EffectContext) -> Result<Moved, EffectError> {
        if cmd.account.starts_with("flaky") {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(EffectError::retryable("the bank is down"));
        }
        self.inner.execute(cmd, ctx).await
    }
}

async fn platform() -> (Platform, Arc<AtomicU64>) {
    let mut p = Platform::start().await;
    let client: CommandClient = p.command_client();
    let failures = Arc::new(AtomicU64::new(0));
    let f = failures.clone();
    p.start_runner(move |b| {
        b.workflow::<Transfer>()
            .effect(WithdrawEffect(client.clone()))
            .effect(FlakyDeposit {
                inner: DepositEffect(client),
                failures: f,
            })
    })
    .await;
    (p, failures)
}

async fn open(p: &Platform, token: &str, account: &str, funds: u64) {
    p.account_command(
        token,
        account,
        &format!(r#"{{"type":"Open","payload":{{"owner":"{account}"}}}}"#),
    )
    .await;
    if funds > 0 {
        p.account_command(
            token,
            account,
            &format!(r#"{{"type":"Deposit","payload":{{"amount":{funds}}}}}"#),
        )
        .await;
    }
}

async fn start(p: &Platform, token: &str, id: &str, body: &str) -> serde_json::Value {
    let (status, resp) = p
        .command(
            &format!("/v1/workflows/transfer/{id}"),
            Some(token),
            &[],
            body,
        )
        .await;
    let json = body_json(resp).await;
    assert_eq!(status, 201, "{json}");
    json
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_moves_the_money_once() {
    let (p, _) = platform().await;
    let token = p.token("acme", &["commands:*", "workflows:transfer"]);
    open(&p, &token, "a", 1000).await;
    open(&p, &token, "b", 0).await;
    let started = start(&p, &token, "t-1", r#"{"from":"a","to":"b","amount":250}"#).await;
    assert_eq!(started["status"], "running");
    assert_eq!(started["step"], 1);
    assert_eq!(started["pending"][0]["effect_type"], "withdraw");
    assert_eq!(started["timers"][0]["name"], "timeout");

    let done = p.finished_workflow(&token, "transfer", "t-1", WAIT).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["state"]["stage"], "completed");
    assert_eq!(done["pending"].as_array().unwrap().len(), 0);
    assert_eq!(done["timers"].as_array().unwrap().len(), 0);
    assert_eq!(p.balance("acme", "a").await, 750);
    assert_eq!(p.balance("acme", "b").await, 250);

    // The history: started, withdraw issued, result, deposit issued, result, completed.
    let events: Vec<String> = p
        .stream_messages("WORKFLOW_EVENTS")
        .await
        .into_iter()
        .filter(|(s, _, _)| s == "tenant.acme.workflow.transfer.t-1")
        .map(|(_, v, _)| v["event_type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        events,
        [
            "started",
            "effect_issued",
            "result_received",
            "effect_issued",
            "result_received",
            "completed"
        ]
    );
    // Every command carries the required headers, and its id is its Nats-Msg-Id.
    for (subject, cmd, headers) in p.stream_messages("WORKFLOW_COMMANDS").await {
        assert!(subject.starts_with("tenant.acme.effect."), "{subject}");
        assert_eq!(headers.get("tenant-id").unwrap().as_str(), "acme");
        assert_eq!(
            headers.get("Nats-Msg-Id").unwrap().as_str(),
            cmd["command_id"].as_str().unwrap()
        );
        assert!(headers.get("traceparent").is_some());
        assert!(headers.get("x-correlation-id").is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_a_closed_or_missing_account_is_refunded() {
    let (p, _) = platform().await;
    let token = p.token("acme", &["commands:*", "workflows:*"]);
    open(&p, &token, "a", 1000).await;
    open(&p, &token, "closed", 0).await;
    p.account_command(&token, "closed", r#"{"type":"Close"}"#)
        .await;

    start(
        &p,
        &token,
        "to-closed",
        r#"{"from":"a","to":"closed","amount":100}"#,
    )
    .await;
    start(
        &p,
        &token,
        "to-nobody",
        r#"{"from":"a","to":"nobody","amount":200}"#,
    )
    .await;
    for id in ["to-closed", "to-nobody"] {
        let done = p.finished_workflow(&token, "transfer", id, WAIT).await;
        assert_eq!(done["status"], "failed", "{done}");
        let failure = done["failure"].as_str().unwrap();
        assert!(failure.contains("deposit failed"), "{failure}");
        assert!(failure.ends_with("refunded"), "{failure}");
    }
    assert_eq!(p.balance("acme", "a").await, 1000);
    assert_eq!(p.balance("acme", "closed").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_that_keeps_failing_is_refunded_after_its_retries() {
    let (p, failures) = platform().await;
    let token = p.token("acme", &["commands:*", "workflows:*"]);
    open(&p, &token, "a", 1000).await;
    open(&p, &token, "flaky-b", 0).await;
    start(
        &p,
        &token,
        "t-flaky",
        r#"{"from":"a","to":"flaky-b","amount":100}"#,
    )
    .await;
    let done = p
        .finished_workflow(&token, "transfer", "t-flaky", WAIT)
        .await;
    assert_eq!(done["status"], "failed", "{done}");
    let failure = done["failure"].as_str().unwrap();
    assert!(failure.contains("3 attempts failed"), "{failure}");
    assert!(failure.ends_with("refunded"), "{failure}");
    assert_eq!(
        failures.load(Ordering::SeqCst),
        3,
        "one execution per attempt"
    );
    assert_eq!(p.balance("acme", "a").await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_that_times_out_is_refunded_when_its_timer_fires() {
    let (p, _) = platform().await;
    let token = p.token("acme", &["commands:*", "workflows:*"]);
    open(&p, &token, "a", 1000).await;
    open(&p, &token, "flaky-slow", 0).await;
    start(
        &p,
        &token,
        "t-slow",
        r#"{"from":"a","to":"flaky-slow","amount":100,"timeout_ms":1000}"#,
    )
    .await;
    let done = p
        .finished_workflow(&token, "transfer", "t-slow", WAIT)
        .await;
    assert_eq!(done["status"], "failed", "{done}");
    let failure = done["failure"].as_str().unwrap();
    assert!(failure.starts_with("timed out"), "{failure}");
    assert!(failure.ends_with("refunded"), "{failure}");
    assert_eq!(done["state"]["timed_out"], true);
    assert_eq!(p.balance("acme", "a").await, 1000);
    let fired = p
        .stream_messages("WORKFLOW_EVENTS")
        .await
        .into_iter()
        .filter(|(s, v, _)| {
            s == "tenant.acme.workflow.transfer.t-slow" && v["event_type"] == "timer_fired"
        })
        .count();
    assert_eq!(fired, 1, "the timeout fired once");
}
