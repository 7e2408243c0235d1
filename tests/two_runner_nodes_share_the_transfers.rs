//! Two runner nodes on one NATS share the work: both execute effects, and every transfer
//! completes exactly once (each effect command executed once, balances add up).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use cloudlysis_actors::runner::RunnerSettings;
use common::{Platform, body_json};

const TRANSFERS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_nodes_work_and_each_transfer_completes_once() {
    let mut p = Platform::start().await;
    let mut counters = Vec::new();
    for _ in 0..2 {
        // Small fetches, so the two nodes' pull requests take turns.
        let mut settings: RunnerSettings = common::runner_settings();
        settings.consumer.max_in_flight = 2;
        counters.push(p.start_counted_transfer_runner(settings).await);
    }
    let token = p.token("acme", &["commands:*", "workflows:*"]);
    for i in 0..TRANSFERS {
        for account in [format!("from-{i}"), format!("to-{i}")] {
            p.account_command(
                &token,
                &account,
                &format!(r#"{{"type":"Open","payload":{{"owner":"{account}"}}}}"#),
            )
            .await;
        }
        p.account_command(
            &token,
            &format!("from-{i}"),
            r#"{"type":"Deposit","payload":{"amount":100}}"#,
        )
        .await;
    }
    for i in 0..TRANSFERS {
        let (s, resp) = p
            .command(
                &format!("/v1/workflows/transfer/t-{i}"),
                Some(&token),
                &[],
                &format!(r#"{{"from":"from-{i}","to":"to-{i}","amount":{}}}"#, i + 1),
            )
            .await;
        assert_eq!(s, 201, "{}", body_json(resp).await);
    }
    for i in 0..TRANSFERS {
        let done = p
            .finished_workflow(
                &token,
                "transfer",
                &format!("t-{i}"),
                Duration::from_secs(60),
            )
            .await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(
            p.balance("acme", &format!("from-{i}")).await,
            100 - (i as i64 + 1)
        );
        assert_eq!(p.balance("acme", &format!("to-{i}")).await, i as i64 + 1);
    }
    let per_node: Vec<u64> = counters.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert_eq!(
        per_node.iter().sum::<u64>(),
        2 * TRANSFERS as u64,
        "each effect command ran once: {per_node:?}"
    );
    assert!(
        per_node.iter().all(|n| *n > 0),
        "both nodes worked: {per_node:?}"
    );
    // Each command is on the stream once.
    let mut ids: Vec<String> = p
        .stream_messages("WORKFLOW_COMMANDS")
        .await
        .into_iter()
        .map(|(_, c, _)| c["command_id"].as_str().unwrap().to_string())
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
}
