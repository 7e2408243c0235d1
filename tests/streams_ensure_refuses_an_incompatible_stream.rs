//! On an incompatible stream `cloudlysis streams ensure` exits non-zero with a one-line reason
//! naming the stream and the field, and leaves the stream unchanged.

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
    js.create_stream(cfg).await.unwrap();

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
    assert!(errors[0].contains("max_age"), "{stderr}");
    assert!(stdout.contains("incompatible (max_age)"), "{stdout}");
    // The other streams were still ensured.
    assert!(stdout.contains("WORKFLOW_COMMANDS"), "{stdout}");

    let mut s = js.get_stream("AGGREGATE_EVENTS").await.unwrap();
    assert_eq!(
        s.info().await.unwrap().config.max_age,
        Duration::from_secs(24 * 3600),
        "left unchanged"
    );
}
