//! Drain as an operator runs it in a rolling deploy: two `cloudlysis runner` processes behind a
//! Gateway, a client starting transfers the whole time, one runner drained through the Gateway
//! and then SIGTERM'd. No start fails, no effect is lost or runs twice, the drained node says it
//! is not ready (HTTP `/ready` 503, gRPC health `NOT_SERVING`) as soon as the drain begins, and
//! it exits 0. Drain is idempotent and undrain serves again without a restart.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cloudlysis_test_support::{eventually, http_get};
use common::{Platform, RunnerProcess, gateway_call, spawn_runner};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const PAIRS: usize = 4;
const WORKFLOW_SERVICE: &str = "runner.gateway.v1.WorkflowService";

async fn health(grpc: &str, service: &str) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let r = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(r.status).unwrap()
}

/// The node id the Gateway lists for the runner at `grpc`.
async fn node_id(p: &Platform, token: &str, grpc: &str) -> String {
    let (st, body) = gateway_call(&p.gateway, "GET", "/admin/runner/nodes", token, "").await;
    assert_eq!(st, 200, "{body}");
    body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["address"] == format!("http://{grpc}"))
        .and_then(|n| n["node_id"].as_str())
        .unwrap_or_else(|| panic!("{grpc} not listed: {body}"))
        .to_string()
}

async fn drain_state(p: &Platform, token: &str, node: &str) -> serde_json::Value {
    let (st, body) = gateway_call(
        &p.gateway,
        "GET",
        &format!("/admin/runner/nodes/{node}"),
        token,
        "",
    )
    .await;
    assert_eq!(st, 200, "{body}");
    body
}

async fn sigterm(r: &mut RunnerProcess) -> std::process::ExitStatus {
    let pid = rustix::process::Pid::from_raw(r.child.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    tokio::time::timeout(Duration::from_secs(60), r.child.wait())
        .await
        .expect("the runner exits after SIGTERM")
        .unwrap()
}

async fn two_runners() -> (Platform, RunnerProcess, RunnerProcess, String) {
    let mut p = Platform::start().await;
    let aggregate = format!("http://{}", p.grpc_addr);
    let a = spawn_runner(&p.server.url(), &aggregate, &[]).await;
    let b = spawn_runner(&p.server.url(), &aggregate, &[]).await;
    p.route_runners(&[&a.grpc, &b.grpc]);
    let token = p.token("acme", &["commands:*", "workflows:*", "runner:admin"]);
    for j in 0..PAIRS {
        for account in [format!("src-{j}"), format!("dst-{j}")] {
            p.account_command(
                &token,
                &account,
                &format!(r#"{{"type":"Open","payload":{{"owner":"{account}"}}}}"#),
            )
            .await;
        }
        p.account_command(
            &token,
            &format!("src-{j}"),
            r#"{"type":"Deposit","payload":{"amount":100000}}"#,
        )
        .await;
    }
    (p, a, b, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_one_of_two_runners_under_load_fails_no_start_and_loses_no_effect() {
    let (p, mut a, mut b, token) = two_runners().await;

    // A client starts transfers through the Gateway until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let load = {
        let (gw, token, stop, started) = (
            p.gateway.clone(),
            token.clone(),
            stop.clone(),
            started.clone(),
        );
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut k = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let j = k % PAIRS;
                let (st, body) = gateway_call(
                    &gw,
                    "POST",
                    &format!("/v1/workflows/transfer/t-{k}"),
                    &token,
                    &format!(r#"{{"from":"src-{j}","to":"dst-{j}","amount":1}}"#),
                )
                .await;
                if st != 201 {
                    failures.push(format!("t-{k}: {st} {body}"));
                }
                k += 1;
                started.store(k, Ordering::SeqCst);
            }
            (k, failures)
        })
    };
    let progressed = |n: usize| {
        let started = started.clone();
        async move {
            eventually(Duration::from_secs(60), || {
                let started = started.clone();
                async move { started.load(Ordering::SeqCst) >= n }
            })
            .await
        }
    };
    assert!(progressed(20).await, "transfers are being started");

    // Drain runner A through the Gateway, without waiting.
    let node = node_id(&p, &token, &a.grpc).await;
    let (st, body) = gateway_call(
        &p.gateway,
        "POST",
        &format!("/admin/runner/nodes/{node}/drain"),
        &token,
        "",
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_ne!(body["state"], "serving", "{body}");
    // From the first state on, A tells load balancers and probes to stop sending work.
    let (st, ready) = http_get(&format!("{}/ready", a.http)).await.unwrap();
    assert_eq!(st, 503, "{ready}");
    assert!(ready.contains("intake"), "{ready}");
    assert_eq!(health(&a.grpc, "").await, ServingStatus::NotServing);
    assert_eq!(
        health(&a.grpc, WORKFLOW_SERVICE).await,
        ServingStatus::NotServing
    );
    // B still serves.
    assert_eq!(health(&b.grpc, "").await, ServingStatus::Serving);

    // The drain runs to its end while the client keeps starting transfers.
    let at_drain = started.load(Ordering::SeqCst);
    assert!(
        progressed(at_drain + 20).await,
        "starts go on during the drain"
    );
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    let last = loop {
        let last = drain_state(&p, &token, &node).await;
        if last["drain_state"] == "drained" {
            break last;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "runner A did not drain: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(last["in_flight"], 0, "{last}");

    // A second drain reports the same state and starts nothing new.
    let (st, again) = gateway_call(
        &p.gateway,
        "POST",
        &format!("/admin/runner/nodes/{node}/drain"),
        &token,
        "",
    )
    .await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["state"], "drained", "{again}");

    // SIGTERM: the drained process exits 0; the client goes on with B alone.
    let status = sigterm(&mut a).await;
    assert!(status.success(), "runner A exited with {status}");
    let at_exit = started.load(Ordering::SeqCst);
    assert!(progressed(at_exit + 20).await, "starts go on after A left");
    stop.store(true, Ordering::SeqCst);
    let (total, failures) = load.await.unwrap();
    assert!(failures.is_empty(), "failed starts: {failures:#?}");

    // Every transfer completed once: each effect ran once, and the balances say so.
    for k in 0..total {
        let done = p
            .finished_workflow(
                &token,
                "transfer",
                &format!("t-{k}"),
                Duration::from_secs(120),
            )
            .await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    for j in 0..PAIRS {
        let n = (0..total).filter(|k| k % PAIRS == j).count() as i64;
        assert_eq!(p.balance("acme", &format!("src-{j}")).await, 100_000 - n);
        assert_eq!(p.balance("acme", &format!("dst-{j}")).await, n);
    }
    let ledger = p.js.get_key_value("cloudlysis_effects").await.unwrap();
    let mut keys = ledger.keys().await.unwrap();
    let mut records = 0;
    use futures::StreamExt;
    while let Some(key) = keys.next().await {
        let key = key.unwrap();
        let bytes = ledger.get(&key).await.unwrap().unwrap();
        let record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(record["status"], "done", "{key}: {record}");
        assert_eq!(record["attempts"], 1, "{key} ran once: {record}");
        records += 1;
    }
    assert_eq!(records, 2 * total, "one withdrawal and one deposit each");
    let status = sigterm(&mut b).await;
    assert!(status.success(), "runner B exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_is_idempotent_and_undrain_serves_again_without_a_restart() {
    let (p, a, _b, token) = two_runners().await;
    let node = node_id(&p, &token, &a.grpc).await;
    let verb = |v: &'static str, query: &'static str| {
        let (p, token, node) = (&p, &token, &node);
        async move {
            gateway_call(
                &p.gateway,
                "POST",
                &format!("/admin/runner/nodes/{node}/{v}{query}"),
                token,
                "",
            )
            .await
        }
    };
    let (st, first) = verb("drain", "?wait=true").await;
    assert_eq!(st, 200, "{first}");
    assert_eq!(first["state"], "drained", "{first}");
    assert_eq!(first["drained"], true, "{first}");
    let (st, second) = verb("drain", "?wait=true").await;
    assert_eq!(st, 200, "{second}");
    assert_eq!(second["state"], first["state"], "{second}");
    assert_eq!(
        second["detail"], first["detail"],
        "the same drain: {second}"
    );
    assert_eq!(http_get(&format!("{}/ready", a.http)).await.unwrap().0, 503);
    // A start sent straight to the drained node is refused at its door, naming the drain.
    let refused = a
        .start_workflow(
            "acme",
            "transfer",
            "direct-1",
            serde_json::json!({"from": "src-0", "to": "dst-0", "amount": 1}),
        )
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("draining"), "{refused:?}");

    // Undrain: the same process serves again.
    let pid = a.child.id();
    let (st, back) = verb("undrain", "").await;
    assert_eq!(st, 200, "{back}");
    assert_eq!(back["state"], "serving", "{back}");
    assert_eq!(a.child.id(), pid, "no restart");
    let (st, ready) = http_get(&format!("{}/ready", a.http)).await.unwrap();
    assert_eq!(st, 200, "{ready}");
    assert_eq!(health(&a.grpc, "").await, ServingStatus::Serving);
    assert_eq!(
        health(&a.grpc, WORKFLOW_SERVICE).await,
        ServingStatus::Serving
    );
    let started = a
        .start_workflow(
            "acme",
            "transfer",
            "direct-2",
            serde_json::json!({"from": "src-0", "to": "dst-0", "amount": 1}),
        )
        .await
        .unwrap()
        .expect("the undrained node takes starts");
    assert_eq!(started.instance, "direct-2");
    let done = p
        .finished_workflow(&token, "transfer", "direct-2", Duration::from_secs(60))
        .await;
    assert_eq!(done["status"], "completed", "{done}");

    // Every node verb is in the audit trail, with who asked.
    let audit = p.js.get_key_value("cloudlysis_audit").await.unwrap();
    let mut keys = audit.keys().await.unwrap();
    let mut actions = Vec::new();
    use futures::StreamExt;
    while let Some(key) = keys.next().await {
        let bytes = audit.get(key.unwrap()).await.unwrap().unwrap();
        let record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        if record["target"] == node.as_str() {
            assert_eq!(record["actor"], "test", "who asked: {record}");
            actions.push(record["action"].as_str().unwrap().to_string());
        }
    }
    actions.sort();
    assert_eq!(
        actions,
        ["runner.drain", "runner.drain", "runner.undrain"],
        "{actions:?}"
    );
}
