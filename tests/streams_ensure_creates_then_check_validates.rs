//! `cloudlysis streams ensure` creates the three streams and prints the table; `check`
//! validates them; both exit 0.

use std::process::Command;

use cloudlysis_test_support::NatsServer;

fn cloudlysis(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cloudlysis"))
        .env(
            "CLOUDLYSIS_NODE_SECRET",
            cloudlysis_test_support::NODE_SECRET,
        )
        .args(args)
        .env_remove("CLOUDLYSIS_NATS_URL")
        .env_remove("CLOUDLYSIS_CONFIG")
        .output()
        .expect("run cloudlysis")
}

#[tokio::test]
async fn ensure_creates_the_streams_and_check_validates_them() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();

    let out = cloudlysis(&["streams", "ensure", "--nats-url", &url]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    for col in ["STREAM", "SUBJECTS", "STORAGE", "MESSAGES", "STATUS"] {
        assert!(lines[0].contains(col), "{stdout}");
    }
    for (line, name) in
        lines[1..]
            .iter()
            .zip(["AGGREGATE_EVENTS", "WORKFLOW_COMMANDS", "WORKFLOW_EVENTS"])
    {
        assert!(line.starts_with(name), "{line}");
        assert!(line.contains(" file "), "{line}");
        assert!(line.ends_with("created"), "{line}");
    }
    assert!(lines[1].contains("tenant.*.aggregate.*.*"));

    let again = cloudlysis(&["streams", "ensure", "--nats-url", &url]);
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout)
            .lines()
            .skip(1)
            .all(|l| l.ends_with(" ok"))
    );

    let check = cloudlysis(&["streams", "check", "--nats-url", &url]);
    assert!(check.status.success());

    let js = server.jetstream().await;
    for name in ["AGGREGATE_EVENTS", "WORKFLOW_COMMANDS", "WORKFLOW_EVENTS"] {
        js.get_stream(name).await.unwrap();
    }
}

#[tokio::test]
async fn check_reports_missing_streams_and_creates_nothing() {
    let server = NatsServer::start().await.unwrap();
    let out = cloudlysis(&["streams", "check", "--nats-url", &server.url()]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.lines().skip(1).all(|l| l.ends_with("missing")),
        "{stdout}"
    );
    assert!(
        stderr.contains("stream AGGREGATE_EVENTS does not exist"),
        "{stderr}"
    );
    assert!(
        server
            .jetstream()
            .await
            .get_stream("AGGREGATE_EVENTS")
            .await
            .is_err()
    );
}
