//! Operator verbs on workflow instances through the Gateway: pause holds an instance's commands
//! until resume; cancel runs the workflow's compensation; retry-now cuts a backoff short; every
//! verb is in the audit trail; refused verbs are problems and change nothing.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cloudlysis_actors::runner::{Effect, EffectContext, EffectError, RetryPolicy};
use cloudlysis_examples::transfer::{AccountMove, DepositEffect, Moved, Transfer, WithdrawEffect};
use cloudlysis_test_support::eventually;
use common::{Platform, body_json, query};
use futures::StreamExt;

/// The demo withdrawal; for accounts `gated-…` it waits for a permit first.
struct GatedWithdraw {
    inner: WithdrawEffect,
    gate: Arc<tokio::sync::Semaphore>,
    entered: Arc<AtomicU64>,
}

impl Effect for GatedWithdraw {
    const TYPE: &'static str = "withdraw";
    type Command = AccountMove;
    type Output = Moved;

    async fn execute(&self, cmd: AccountMove, ctx: &EffectContext) -> Result<Moved, EffectError> {
        if cmd.account.starts_with("gated") {
            self.entered.fetch_add(1, Ordering::SeqCst);
            self.gate.acquire().await.unwrap().forget();
        }
        self.inner.execute(cmd, ctx).await
    }
}

/// The demo deposit; `flaky-…` accounts always fail, `twice-…` fail their first attempt; a
/// failed attempt waits 30 s before the next.
struct SlowRetryDeposit(DepositEffect);

impl Effect for SlowRetryDeposit {
    const TYPE: &'static str = "deposit";
    type Command = AccountMove;
    type Output = Moved;

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
            multiplier: 1.0,
            jitter: 0.0,
            attempt_timeout: Duration::from_secs(5),
        }
    }

    async fn execute(&self, cmd: AccountMove, ctx: &EffectContext) -> Result<Moved, EffectError> {
        if cmd.account.starts_with("flaky")
            || (cmd.account.starts_with("twice") && ctx.attempt == 1)
        {
            return Err(EffectError::retryable("the bank is down"));
        }
        self.0.execute(cmd, ctx).await
    }
}

struct Setup {
    p: Platform,
    gate: Arc<tokio::sync::Semaphore>,
    entered: Arc<AtomicU64>,
    token: String,
}

async fn setup() -> Setup {
    let mut p = Platform::start().await;
    let client = p.command_client();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let entered = Arc::new(AtomicU64::new(0));
    let (g, e) = (gate.clone(), entered.clone());
    p.start_runner(move |b| {
        b.workflow::<Transfer>()
            .effect(GatedWithdraw {
                inner: WithdrawEffect(client.clone()),
                gate: g,
                entered: e,
            })
            .effect(SlowRetryDeposit(DepositEffect(client)))
    })
    .await;
    let token = p.token(
        "acme",
        &[
            "commands:*",
            "workflows:transfer",
            "workflows:transfer:operate",
        ],
    );
    for (account, funds) in [
        ("gated-a", 100),
        ("a", 100),
        ("b", 0),
        ("flaky-x", 0),
        ("twice-y", 0),
    ] {
        p.account_command(
            &token,
            account,
            &format!(r#"{{"type":"Open","payload":{{"owner":"{account}"}}}}"#),
        )
        .await;
        if funds > 0 {
            p.account_command(
                &token,
                account,
                &format!(r#"{{"type":"Deposit","payload":{{"amount":{funds}}}}}"#),
            )
            .await;
        }
    }
    Setup {
        p,
        gate,
        entered,
        token,
    }
}

async fn post(p: &Platform, token: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (s, resp) = p.command(path, Some(token), &[], body).await;
    (s, body_json(resp).await)
}

/// Waits until the instance's pending `label` command is waiting in backoff; its ledger record.
async fn waiting(p: &Platform, token: &str, id: &str, label: &str) -> serde_json::Value {
    let ok = eventually(Duration::from_secs(30), || async {
        let (_, w) = p.workflow(token, "transfer", id).await;
        w["pending"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|c| c["label"] == label && c["ledger_status"] == "waiting")
        })
    })
    .await;
    let (_, w) = p.workflow(token, "transfer", id).await;
    assert!(ok, "{w}");
    let pending = w["pending"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == label)
        .unwrap()
        .clone();
    assert_eq!(pending["attempts"], 1, "{pending}");
    assert_eq!(pending["last_error"], "the bank is down");
    let kv = p.js.get_key_value("cloudlysis_effects").await.unwrap();
    let key = format!("deposit.acme.{}", pending["command_id"].as_str().unwrap());
    serde_json::from_slice(&kv.get(&key).await.unwrap().unwrap()).unwrap()
}

/// Asserts that `instance`'s pending deposit carries its ledger's view: one attempt, `status`
/// and `error`.
fn assert_ledger_seen(instance: &serde_json::Value, answer: &str, status: &str, error: &str) {
    let deposit = instance["pending"]
        .as_array()
        .and_then(|ps| ps.iter().find(|c| c["label"] == "deposit"))
        .unwrap_or_else(|| panic!("{answer}: no pending deposit in {instance}"));
    assert_eq!(deposit["attempts"], 1, "{answer}: {deposit}");
    assert_eq!(deposit["ledger_status"], status, "{answer}: {deposit}");
    assert_eq!(deposit["last_error"], error, "{answer}: {deposit}");
}

/// The ids `GET /v1/workflows/transfer?status=<status>` lists.
async fn listed(p: &Platform, token: &str, status: &str) -> Vec<String> {
    let path = format!("/v1/workflows/transfer?status={status}");
    let (st, list) = query(p, &path, token, &[]).await;
    assert_eq!(st, 200, "{list}");
    list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_the_commands_until_resume() {
    let s = setup().await;
    let (p, token) = (&s.p, &s.token);
    let (st, _) = post(
        p,
        token,
        "/v1/workflows/transfer/t-p",
        r#"{"from":"gated-a","to":"b","amount":10}"#,
    )
    .await;
    assert_eq!(st, 201);
    // The withdrawal runs (held at the gate) while the instance is paused.
    assert!(
        eventually(Duration::from_secs(10), || async {
            s.entered.load(Ordering::SeqCst) == 1
        })
        .await
    );
    let (st, w) = post(
        p,
        token,
        "/v1/workflows/transfer/t-p/pause",
        r#"{"reason":"checking"}"#,
    )
    .await;
    assert_eq!(st, 200, "{w}");
    assert_eq!(w["paused"], true);
    let (st, again) = post(p, token, "/v1/workflows/transfer/t-p/pause", "").await;
    assert_eq!(
        (st, &again["paused"]),
        (200, &serde_json::json!(true)),
        "pause is idempotent"
    );
    s.gate.add_permits(1);
    // The result is applied — the deposit decided — but not issued.
    let held = eventually(Duration::from_secs(10), || async {
        let (_, w) = p.workflow(token, "transfer", "t-p").await;
        w["state"]["stage"] == "depositing"
    })
    .await;
    assert!(held);
    let deposits = |msgs: Vec<(String, serde_json::Value, async_nats::HeaderMap)>| {
        msgs.into_iter()
            .filter(|(subj, c, _)| subj.ends_with(".effect.deposit") && c["instance"] == "t-p")
            .count()
    };
    assert_eq!(
        deposits(p.stream_messages("WORKFLOW_COMMANDS").await),
        0,
        "nothing issued while paused"
    );
    assert_eq!(p.balance("acme", "b").await, 0);
    // Operators find what is paused. (Found by using the platform: `status=paused`, which the
    // docs offer, was refused with 400.)
    assert_eq!(listed(p, token, "paused").await, ["t-p"]);
    let (st, w) = post(p, token, "/v1/workflows/transfer/t-p/resume", "").await;
    assert_eq!(st, 200, "{w}");
    assert_eq!(w["paused"], false);
    let done = p
        .finished_workflow(token, "transfer", "t-p", Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(deposits(p.stream_messages("WORKFLOW_COMMANDS").await), 1);
    assert_eq!(p.balance("acme", "b").await, 10);
    assert!(listed(p, token, "paused").await.is_empty(), "resumed");
    audit_has(
        p,
        &["workflow.pause", "workflow.pause", "workflow.resume"],
        "transfer/t-p",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_runs_the_compensation() {
    let s = setup().await;
    let (p, token) = (&s.p, &s.token);
    let (st, _) = post(
        p,
        token,
        "/v1/workflows/transfer/t-c",
        r#"{"from":"a","to":"flaky-x","amount":30,"timeout_ms":600000}"#,
    )
    .await;
    assert_eq!(st, 201);
    waiting(p, token, "t-c", "deposit").await;
    assert_eq!(p.balance("acme", "a").await, 70);
    // A list page shows what the ledger says about the waiting deposit, as a read does
    // (before: attempts 0, no status, no error).
    let (st, list) = query(p, "/v1/workflows/transfer?status=running", token, &[]).await;
    assert_eq!(st, 200, "{list}");
    let listed = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance"] == "t-c")
        .cloned()
        .unwrap();
    assert_ledger_seen(&listed, "a list page", "waiting", "the bank is down");
    let (st, w) = post(
        p,
        token,
        "/v1/workflows/transfer/t-c/cancel",
        r#"{"reason":"customer asked"}"#,
    )
    .await;
    assert_eq!(st, 200, "{w}");
    assert_eq!(w["cancel_requested"], true);
    // The verb's answer too, after the verb: the cancel settled the deposit's ledger record.
    assert_ledger_seen(&w, "the verb's answer", "done", "cancelled: customer asked");
    let done = p
        .finished_workflow(token, "transfer", "t-c", Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "failed", "{done}");
    let failure = done["failure"].as_str().unwrap();
    assert!(
        failure.contains("customer asked") && failure.ends_with("refunded"),
        "{failure}"
    );
    assert_eq!(p.balance("acme", "a").await, 100, "the money came back");
    // Cancelling again changes nothing; other verbs on an ended instance are refused.
    let (st, _) = post(p, token, "/v1/workflows/transfer/t-c/cancel", "").await;
    assert_eq!(st, 200);
    let (st, problem) = post(p, token, "/v1/workflows/transfer/t-c/pause", "").await;
    assert_eq!(st, 422, "{problem}");
    audit_has(
        p,
        &["workflow.cancel", "workflow.cancel", "workflow.pause"],
        "transfer/t-c",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_now_retries_at_once() {
    let s = setup().await;
    let (p, token) = (&s.p, &s.token);
    let (st, _) = post(
        p,
        token,
        "/v1/workflows/transfer/t-r",
        r#"{"from":"a","to":"twice-y","amount":5,"timeout_ms":600000}"#,
    )
    .await;
    assert_eq!(st, 201);
    let ledger = waiting(p, token, "t-r", "deposit").await;
    // Without retry-now, attempt 2 would start when the 30 s backoff ends.
    let backoff_ends = ledger["until_ms"].as_u64().unwrap()
        - cloudlysis_actors::runner::LEASE_MARGIN.as_millis() as u64;
    let (st, w) = post(p, token, "/v1/workflows/transfer/t-r/retry-now", "").await;
    assert_eq!(st, 200, "{w}");
    let done = p
        .finished_workflow(token, "transfer", "t-r", Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(
        done["updated_at_ms"].as_u64().unwrap() < backoff_ends,
        "completed before the backoff would have ended"
    );
    assert_eq!(p.balance("acme", "twice-y").await, 5);
    audit_has(p, &["workflow.retry_now"], "transfer/t-r").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_verbs_are_problems_and_change_nothing() {
    let s = setup().await;
    let (p, token) = (&s.p, &s.token);
    let (st, _) = post(
        p,
        token,
        "/v1/workflows/transfer/t-x",
        r#"{"from":"a","to":"b","amount":1}"#,
    )
    .await;
    assert_eq!(st, 201);
    let done = p
        .finished_workflow(token, "transfer", "t-x", Duration::from_secs(30))
        .await;
    let read_only = p.token("acme", &["workflows:transfer"]);
    let globex = p.token(
        "globex",
        &["workflows:transfer", "workflows:transfer:operate"],
    );
    // (bearer, extra headers, path, expected status)
    type Case<'a> = (Option<&'a str>, Vec<(&'a str, &'a str)>, &'a str, u16);
    let cases: Vec<Case> = vec![
        (None, vec![], "/v1/workflows/transfer/t-x/pause", 401),
        (
            Some(&read_only),
            vec![],
            "/v1/workflows/transfer/t-x/pause",
            403,
        ),
        (
            Some(token),
            vec![("x-tenant-id", "globex")],
            "/v1/workflows/transfer/t-x/pause",
            403,
        ),
        (
            Some(&globex),
            vec![],
            "/v1/workflows/transfer/t-x/pause",
            404,
        ),
        (
            Some(token),
            vec![],
            "/v1/workflows/transfer/t-x/explode",
            400,
        ),
        (Some(token), vec![], "/v1/workflows/transfer/t-x/pause", 422),
    ];
    for (t, headers, path, status) in cases {
        let (s, resp) = p.command(path, t, &headers, "").await;
        let body = body_json(resp).await;
        assert_eq!(s, status, "{path}: {body}");
        assert!(
            body["type"]
                .as_str()
                .unwrap()
                .starts_with("urn:cloudlysis:problem:")
        );
    }
    let (_, after) = p.workflow(token, "transfer", "t-x").await;
    assert_eq!(after["step"], done["step"]);
    assert_eq!(after["paused"], false);
    // Runner administration needs runner:admin; an unknown node is 404.
    let admin = p.token("acme", &["runner:admin"]);
    let (s, _) = p
        .command("/admin/runner/nodes/nope/drain", Some(token), &[], "")
        .await;
    assert_eq!(s, 403);
    let (s, resp) = p
        .command("/admin/runner/nodes/nope/drain", Some(&admin), &[], "")
        .await;
    assert_eq!(s, 404, "{}", body_json(resp).await);
    let (s, nodes) = query(p, "/admin/runner/nodes", &admin, &[]).await;
    assert_eq!(s, 200, "{nodes}");
    assert_eq!(nodes["nodes"][0]["drain_state"], "serving", "{nodes}");
    // The list shows the tenant's instances only.
    let (s, list) = query(p, "/v1/workflows/transfer?status=completed", token, &[]).await;
    assert_eq!(s, 200, "{list}");
    assert!(
        list["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["instance"] == "t-x")
    );
    let (_, theirs) = query(p, "/v1/workflows/transfer", &globex, &[]).await;
    assert_eq!(theirs["instances"].as_array().unwrap().len(), 0);
}

/// The audit trail holds `actions` on `target` by the test's token subject.
async fn audit_has(p: &Platform, actions: &[&str], target: &str) {
    let kv = p.js.get_key_value("cloudlysis_audit").await.unwrap();
    let mut keys: Vec<String> = kv
        .keys()
        .await
        .unwrap()
        .filter_map(|k| async move { k.ok() })
        .collect()
        .await;
    keys.sort();
    let mut seen = Vec::new();
    for k in keys {
        let r: serde_json::Value =
            serde_json::from_slice(&kv.get(&k).await.unwrap().unwrap()).unwrap();
        if r["target"] == target {
            assert_eq!(r["actor"], "test", "{r}");
            assert_eq!(r["tenant"], "acme", "{r}");
            seen.push(r["action"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(seen, actions, "audit trail of {target}");
}
