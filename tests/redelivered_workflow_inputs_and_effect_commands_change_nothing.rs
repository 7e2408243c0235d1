//! At-least-once delivery made exactly-once in effect: a result delivered again (republished
//! with a new message id, as after the duplicate window) reaches no `react`, and an effect
//! command delivered again executes nothing — its recorded result is re-published. Both are
//! counted.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use cloudlysis_test_support::eventually;
use common::Platform;
use common::observe::counter;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_results_and_commands_are_recognised_and_counted() {
    let metrics = cloudlysis_runtime::metrics::install().unwrap();
    let mut p = Platform::start().await;
    let runs = p
        .start_counted_transfer_runner(common::runner_settings())
        .await;
    let token = p.token("acme", &["commands:*", "workflows:*"]);
    for (account, funds) in [("a", 100), ("b", 0)] {
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
    p.start_transfer(&token, "t-1", "a", "b", 40).await;
    let done = p
        .finished_workflow(&token, "transfer", "t-1", Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let events_before = p.stream_messages("WORKFLOW_EVENTS").await.len();

    // Every result and every command once more, under new message ids: the stream keeps them.
    let results: Vec<_> = p
        .stream_messages("WORKFLOW_EVENTS")
        .await
        .into_iter()
        .filter(|(s, _, _)| s.contains(".effect_result."))
        .collect();
    let commands: Vec<_> = p
        .stream_messages("WORKFLOW_COMMANDS")
        .await
        .into_iter()
        .filter(|(s, _, _)| !s.ends_with("._timer"))
        .collect();
    assert_eq!((results.len(), commands.len()), (2, 2));
    for (subject, payload, headers) in results.iter().chain(commands.iter()) {
        let mut h = headers.clone();
        h.insert(
            "Nats-Msg-Id",
            format!("copy-{}", uuid::Uuid::new_v4()).as_str(),
        );
        let ack =
            p.js.publish_with_headers(
                subject.clone(),
                h,
                Bytes::from(serde_json::to_vec(payload).unwrap()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(!ack.duplicate);
    }

    let text = || metrics.render();
    let recognised = eventually(Duration::from_secs(20), || {
        let t = text();
        async move {
            counter(
                &t,
                "cloudlysis_workflow_inputs_total",
                &[
                    ("workflow", "transfer"),
                    ("input", "result"),
                    ("outcome", "duplicate"),
                ],
            ) >= 2.0
                && counter(&t, "cloudlysis_effects_total", &[("outcome", "replayed")]) >= 2.0
        }
    })
    .await;
    assert!(recognised, "{}", text());
    // Nothing ran again, nothing changed.
    assert_eq!(runs.load(Ordering::SeqCst), 2, "no effect executed twice");
    let (_, after) = p.workflow(&token, "transfer", "t-1").await;
    assert_eq!(after["step"], done["step"]);
    assert_eq!(p.balance("acme", "a").await, 60);
    assert_eq!(p.balance("acme", "b").await, 40);
    // The replayed results carry the first ids: the stream dropped them as duplicates.
    let events_after = p.stream_messages("WORKFLOW_EVENTS").await.len();
    assert_eq!(events_after, events_before + results.len());
}
