//! `cloudlysis dev` keeps the nats-server it started: when that server dies while dev runs, dev
//! starts it again on the same port and store, the platform reconnects and is ready again, and
//! what was committed before is still there. On SIGTERM the server it started last is stopped.
//!
//! Before: dev kept running, not ready, with its clients retrying a dead port for good.

use std::time::Duration;

use cloudlysis_test_support::{eventually, http_get};

/// The pids of nats-server processes whose command line names `dir` (the test's data dir).
fn nats_pids_under(dir: &std::path::Path) -> Vec<i32> {
    let dir = dir.to_string_lossy().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("nats-server") && cmdline.contains(&dir) {
            pids.push(pid);
        }
    }
    pids
}

/// `curl` a command (with an `Idempotency-Key`: retrying it is safe) to the dev Gateway; its
/// HTTP status and body.
async fn command(http: &str, token: &str, id: &str, key: &str, body: &str) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-m", "10", "-w", "\n%{http_code}", "-X", "POST"])
        .arg(format!("{http}/v1/commands/account/{id}"))
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg("-H")
        .arg(format!("Idempotency-Key: {key}"))
        .args(["-H", "Content-Type: application/json", "-d", body])
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test]
async fn a_nats_server_that_dies_under_dev_is_started_again_and_nothing_committed_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut dev =
        cloudlysis_test_support::Dev::start(env!("CARGO_BIN_EXE_cloudlysis"), &data, &[]).await;
    let http = dev.http.clone();
    let token = dev.token.clone().expect("the dev token printed");
    let (status, body) = command(
        &http,
        &token,
        "acc-1",
        "open-1",
        r#"{"type":"Open","payload":{"owner":"ann"}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let first = nats_pids_under(&data);
    assert_eq!(first.len(), 1, "one nats-server under {}", data.display());
    let pid = rustix::process::Pid::from_raw(first[0]).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();

    // Dev notices, starts it again, and the platform is ready again.
    let dead = first[0];
    let back = eventually(Duration::from_secs(60), || {
        let (http, data) = (http.clone(), data.clone());
        async move {
            matches!(http_get(&format!("{http}/ready")).await, Ok((200, _)))
                && nats_pids_under(&data).iter().all(|p| *p != dead)
        }
    })
    .await;
    assert!(back, "dev is not ready again after its nats-server died");
    let again = nats_pids_under(&data);
    assert_eq!(again.len(), 1, "one nats-server again: {again:?}");
    // Counted, for a dashboard or an alert.
    let (_, metrics) = http_get(&format!("{http}/metrics")).await.unwrap();
    assert!(
        metrics.contains("cloudlysis_dev_nats_restarts_total 1\n"),
        "{metrics}"
    );

    // The store survived: the account opened before is at version 2 after a deposit.
    let deposited = eventually(Duration::from_secs(30), || {
        let (http, token) = (http.clone(), token.clone());
        async move {
            let (s, b) = command(
                &http,
                &token,
                "acc-1",
                "deposit-1",
                r#"{"type":"Deposit","payload":{"amount":5}}"#,
            )
            .await;
            s == 200 && b.contains(r#""version":2"#)
        }
    })
    .await;
    assert!(
        deposited,
        "the deposit after the restart did not land at version 2"
    );

    // SIGTERM stops dev and the server it started last.
    let status = dev.terminate().await;
    assert!(status.success(), "{status}");
    let gone = eventually(Duration::from_secs(10), || {
        let data = data.clone();
        async move { nats_pids_under(&data).is_empty() }
    })
    .await;
    assert!(gone, "a nats-server is left under {}", data.display());
}

#[tokio::test]
async fn a_nats_server_that_keeps_dying_stops_dev_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut dev =
        cloudlysis_test_support::Dev::start(env!("CARGO_BIN_EXE_cloudlysis"), &data, &[]).await;
    // Killed as soon as each one is up: five restarts are allowed within a minute, not six.
    let mut seen = Vec::new();
    for _ in 0..6 {
        let mut current = Vec::new();
        let up = eventually(Duration::from_secs(30), || {
            let data = data.clone();
            let seen = seen.clone();
            let found = nats_pids_under(&data);
            current = found.clone();
            async move { found.len() == 1 && !seen.contains(&found[0]) }
        })
        .await;
        assert!(up, "no new nats-server under {}", data.display());
        let pid = rustix::process::Pid::from_raw(current[0]).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
        seen.push(current[0]);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), dev.child.wait())
        .await
        .expect("dev stops once its nats-server cannot be kept running")
        .unwrap();
    assert!(!status.success(), "{status}");
    assert!(nats_pids_under(&data).is_empty());
}
