//! A durable timer survives kill -9 of the runner that armed it: a transfer whose withdrawal
//! cannot happen (no aggregate node listens) arms its timeout, the runner is killed before the
//! timeout is due, and the restarted runner fires it — once — and fails the transfer cleanly.

mod common;

use std::time::Duration;

use cloudlysis_test_support::{NatsServer, eventually};
use common::{instance_record, spawn_runner};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timer_fires_once_after_the_restart() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    // An address nothing listens on: every withdrawal attempt is refused before it is sent.
    let nowhere = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let env = [("RUNNER_ACK_TIMEOUT_MS", "1000")];
    let mut first = spawn_runner(&server.url(), &nowhere, &env).await;
    let started = first
        .start_workflow(
            "acme",
            "transfer",
            "t-1",
            serde_json::json!({"from": "a", "to": "b", "amount": 5, "timeout_ms": 4000}),
        )
        .await
        .unwrap()
        .expect("started");
    assert_eq!(started.timers.len(), 1);
    let fire_at = started.timers[0].fire_at_ms;
    let armed = eventually(Duration::from_secs(10), || async {
        instance_record(&js, "transfer", "acme", "t-1")
            .await
            .is_some_and(|r| r["outbox"].as_array().is_some_and(|o| o.is_empty()))
    })
    .await;
    assert!(armed, "the timer command was published");
    first.kill9().await;
    let killed_at = cloudlysis_runtime::workflow::now_ms();
    assert!(killed_at < fire_at, "killed before the timer was due");

    let _second = spawn_runner(&server.url(), &nowhere, &env).await;
    let fired = eventually(Duration::from_secs(30), || async {
        instance_record(&js, "transfer", "acme", "t-1")
            .await
            .is_some_and(|r| r["state"]["timed_out"] == true)
    })
    .await;
    let record = instance_record(&js, "transfer", "acme", "t-1")
        .await
        .unwrap();
    assert!(fired, "{record}");
    let mut events = js.get_stream("WORKFLOW_EVENTS").await.unwrap();
    let last = events.info().await.unwrap().state.last_sequence;
    let mut firings = Vec::new();
    for seq in 1..=last {
        let m = events.get_raw_message(seq).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        if v["event_type"] == "timer_fired" && v["instance"] == "t-1" {
            firings.push(v["occurred_at_ms"].as_u64().unwrap());
        }
    }
    assert_eq!(firings.len(), 1, "the timer fired once");
    assert!(firings[0] >= fire_at, "not before it was due");
    // The withdrawal never happened, so nothing needs compensating: the transfer fails once
    // its withdrawal's deadline has passed.
    let failed = eventually(Duration::from_secs(40), || async {
        instance_record(&js, "transfer", "acme", "t-1")
            .await
            .is_some_and(|r| r["status"] == "failed")
    })
    .await;
    let record = instance_record(&js, "transfer", "acme", "t-1")
        .await
        .unwrap();
    assert!(failed, "{record}");
    let failure = record["failure"].as_str().unwrap();
    assert!(failure.starts_with("timed out"), "{failure}");
}
