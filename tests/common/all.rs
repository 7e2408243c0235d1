//! `cloudlysis all` as its own process, for the tests of the deployment form: the binary with
//! the test secrets, a started `all` on ephemeral ports, the streams and a token prepared as an
//! operator does, and what its `/metrics` says.

use std::time::Duration;

use cloudlysis_test_support::http_get;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The Gateway's secret in these tests.
pub const JWT_SECRET: &str = "all-in-one-test-jwt-secret-0123456789";

/// The `cloudlysis` binary with the test secrets, no config file and static placement.
pub fn cloudlysis(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cloudlysis"));
    cmd.args(args)
        .env_remove("CLOUDLYSIS_CONFIG")
        .env_remove("CLOUDLYSIS_GATEWAY_PLACEMENT")
        .env(
            "CLOUDLYSIS_NODE_SECRET",
            cloudlysis_test_support::NODE_SECRET,
        )
        .env("CLOUDLYSIS_JWT_SECRET", JWT_SECRET)
        .kill_on_drop(true);
    cmd
}

/// `cloudlysis all` on ephemeral ports, with `env` besides: the child, its stderr lines, and
/// the Gateway's URL with the three gRPC addresses from its start line.
pub async fn spawn_all(
    nats: &str,
    env: &[(&str, &str)],
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    String,
    Vec<String>,
) {
    let mut child = cloudlysis(&["all", "--nats-url", nats, "--http-addr", "127.0.0.1:0"])
        .env("CLOUDLYSIS_GRPC_ADDR", "127.0.0.1:0")
        .env("CLOUDLYSIS_PROJECTION_GRPC_ADDR", "127.0.0.1:0")
        .env("CLOUDLYSIS_RUNNER_GRPC_ADDR", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap()).lines();
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = reader.next_line().await {
            let _ = tx.send(line);
        }
    });
    let start = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.recv().await {
            if line.contains("Gateway HTTP on ") {
                return line;
            }
        }
        panic!("cloudlysis all exited before serving");
    })
    .await
    .expect("cloudlysis all started");
    let after = |marker: &str| -> String {
        start
            .split(marker)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("{marker:?} in {start:?}"))
            .to_string()
    };
    let http = after("Gateway HTTP on ");
    let grpc = [
        "aggregate gRPC on ",
        "projection gRPC on ",
        "runner gRPC on ",
    ]
    .iter()
    .map(|m| after(m))
    .collect();
    (child, lines, http, grpc)
}

/// Runs `script` with `sh`, asserting it succeeds: its standard output.
pub async fn sh(script: &str) -> String {
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .await
        .expect("sh and curl run");
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The streams ensured and a user token of tenant `demo`, as an operator prepares a deployment.
pub async fn prepare(url: &str) -> String {
    let ensured = cloudlysis(&["streams", "ensure", "--nats-url", url])
        .output()
        .await
        .unwrap();
    assert!(
        ensured.status.success(),
        "{}",
        String::from_utf8_lossy(&ensured.stderr)
    );
    let minted = cloudlysis(&[
        "token",
        "--tenant",
        "demo",
        "--rights",
        "commands:*,queries:*,workflows:*",
    ])
    .output()
    .await
    .unwrap();
    assert!(minted.status.success());
    String::from_utf8_lossy(&minted.stdout).trim().to_string()
}

/// The sum of the series of `metric` whose labels contain `label`, on `/metrics` at `http`.
pub async fn metric(http: &str, metric: &str, label: &str) -> f64 {
    let (_, text) = http_get(&format!("{http}/metrics")).await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(metric) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
