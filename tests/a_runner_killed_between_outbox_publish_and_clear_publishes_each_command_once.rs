//! kill -9 of the runner (the real binary) after an outbox publish and before the clear, then a
//! restart: the restarted runner publishes the outbox again, the stream drops the copies, every
//! command is on `WORKFLOW_COMMANDS` exactly once, every effect runs once, and the money adds up.

mod common;

use std::time::Duration;

use cloudlysis_test_support::{eventually, http_get};
use common::{Platform, instance_record, spawn_runner};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_is_published_and_executed_exactly_once() {
    let p = Platform::start().await;
    let token = p.token("acme", &["commands:*"]);
    for (account, funds) in [("a", 1000), ("b", 0)] {
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
    let aggregate = format!("http://{}", p.grpc_addr);
    let url = p.server.url();

    // The first runner hangs right after its first outbox publish is acknowledged ...
    // Messages the killed runner held come back after the ack wait.
    let ack_wait = ("RUNNER_ACK_TIMEOUT_MS", "1000");
    let mut first = spawn_runner(
        &url,
        &aggregate,
        &[
            ("CLOUDLYSIS_TEST_FAULT", "hang-after-outbox-publish"),
            ack_wait,
        ],
    )
    .await;
    let _start = first.start_workflow(
        "acme",
        "transfer",
        "t-1",
        serde_json::json!({"from": "a", "to": "b", "amount": 250, "timeout_ms": 120000}),
    );
    first
        .wait_for_line(
            "fault: hanging after outbox publish",
            Duration::from_secs(30),
        )
        .await;
    // ... and dies there: published, not cleared.
    first.kill9().await;
    let record = instance_record(&p.js, "transfer", "acme", "t-1")
        .await
        .unwrap();
    assert!(
        !record["outbox"].as_array().unwrap().is_empty(),
        "the outbox was not cleared before the kill: {record}"
    );
    let published_before = p.stream_messages("WORKFLOW_COMMANDS").await.len();
    assert!(published_before >= 1);

    // A new runner finds the pending step through the outbox index and finishes the transfer.
    let second = spawn_runner(&url, &aggregate, &[ack_wait]).await;
    let completed = eventually(Duration::from_secs(60), || async {
        instance_record(&p.js, "transfer", "acme", "t-1")
            .await
            .is_some_and(|r| r["status"] == "completed")
    })
    .await;
    let record = instance_record(&p.js, "transfer", "acme", "t-1")
        .await
        .unwrap();
    assert!(completed, "{record}\n{}", p.diagnose("t-1").await);
    assert!(record["outbox"].as_array().unwrap().is_empty());

    // Each command once on the stream: withdraw, deposit and the timeout timer.
    let commands = p.stream_messages("WORKFLOW_COMMANDS").await;
    let mut ids: Vec<String> = commands
        .iter()
        .map(|(_, c, _)| c["command_id"].as_str().unwrap().to_string())
        .collect();
    let mut types: Vec<String> = commands
        .iter()
        .map(|(_, c, _)| c["effect_type"].as_str().unwrap().to_string())
        .collect();
    types.sort();
    assert_eq!(types, ["_timer", "deposit", "withdraw"]);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), commands.len(), "no command twice on the stream");

    // Each effect took effect once: one commit on each account. The killed runner may have
    // started an attempt of the withdrawal before it died (its claim then expires and the new
    // runner makes attempt 2 with the same idempotency key), so a ledger shows one or two.
    let ledger = p.js.get_key_value("cloudlysis_effects").await.unwrap();
    for (_, c, _) in commands
        .iter()
        .filter(|(_, c, _)| c["effect_type"] != "_timer")
    {
        let key = format!(
            "{}.acme.{}",
            c["effect_type"].as_str().unwrap(),
            c["command_id"].as_str().unwrap()
        );
        let entry: serde_json::Value =
            serde_json::from_slice(&ledger.get(&key).await.unwrap().unwrap()).unwrap();
        assert_eq!(entry["status"], "done", "{entry}");
        let attempts = entry["attempts"].as_u64().unwrap();
        assert!((1..=2).contains(&attempts), "{entry}");
    }
    let withdrawals = p
        .commits()
        .await
        .into_iter()
        .flat_map(|(_, c, _, _)| c.events)
        .filter(|e| e.event_type == "Withdrew")
        .count();
    assert_eq!(withdrawals, 1);
    assert_eq!(p.balance("acme", "a").await, 750);
    assert_eq!(p.balance("acme", "b").await, 250);

    // The restarted runner republished what it found, and the stream dropped the copies.
    let (status, metrics) = http_get(&format!("{}/metrics", second.http)).await.unwrap();
    assert_eq!(status, 200);
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(value("cloudlysis_outbox_swept_total") >= 1.0, "{metrics}");
    assert!(
        value("cloudlysis_outbox_duplicates_total") >= 1.0,
        "{metrics}"
    );
}
