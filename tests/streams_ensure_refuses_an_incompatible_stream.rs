//! On an incompatible stream `cloudlysis streams ensure` exits non-zero with a one-line reason
//! naming the stream and every offending field, shows what the stream holds, and leaves it
//! unchanged.

use std::process::Command;
use std::time::Duration;

use cloudlysis_runtime::stream;
use cloudlysis_test_support::NatsServer;

#[tokio::test]
async fn an_incompatible_stream_fails_with_a_one_line_reason() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await;
    let mut cfg = stream::aggregate_events().stream_config();
    cfg.max_age = Duration::from_secs(24 * 3600);
    cfg.duplicate_window = Duration::from_secs(1);
    js.create_stream(cfg).await.unwrap();
    js.publish("tenant.t.aggregate.account.a", "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_cloudlysis"))
        .env(
            "CLOUDLYSIS_NODE_SECRET",
            cloudlysis_test_support::NODE_SECRET,
        )
        .args(["streams", "ensure", "--nats-url", &server.url()])
        .env_remove("CLOUDLYSIS_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("AGGREGATE_EVENTS"), "{stderr}");
    // Every offending field at once (before: only the first, max_age), and the table shows
    // what the stream is and holds (before: `-` for each).
    assert!(
        errors[0].contains("field `max_age`") && errors[0].contains("field `duplicate_window`"),
        "{stderr}"
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("AGGREGATE_EVENTS"))
        .unwrap();
    assert!(
        row.contains("incompatible (max_age, duplicate_window)"),
        "{stdout}"
    );
    assert!(
        row.contains("tenant.*.aggregate.*.*") && row.contains(" file "),
        "{row}"
    );
    assert!(
        row.split_whitespace().any(|w| w == "1"),
        "one message: {row}"
    );
    // The other streams were still ensured.
    assert!(stdout.contains("WORKFLOW_COMMANDS"), "{stdout}");

    let mut s = js.get_stream("AGGREGATE_EVENTS").await.unwrap();
    assert_eq!(
        s.info().await.unwrap().config.max_age,
        Duration::from_secs(24 * 3600),
        "left unchanged"
    );
}
