//! The Grafana dashboards in `docs/dashboards/` are checked against the real thing: every panel
//! query passes `promtool check rules`, and a real Prometheus (Debian's `prometheus`) scraping
//! `cloudlysis dev` after a little traffic (a command, a query, a transfer saga) returns data for
//! every one of them. Needs `prometheus` and `promtool` (`./x test` installs them).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cloudlysis_test_support::http_get;

fn tool(env: &str, name: &str) -> String {
    std::env::var(env).unwrap_or_else(|_| name.to_string())
}

/// Every (dashboard, panel, expression) of the dashboards.
fn panel_queries() -> Vec<(String, String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboards");
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "the five dashboards: {files:?}");
    for file in files {
        let board: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        for panel in board["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                out.push((
                    name.clone(),
                    panel["title"].as_str().unwrap().to_string(),
                    target["expr"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    out
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_is_valid_and_returns_data() {
    let queries = panel_queries();
    let dir = tempfile::tempdir().unwrap();

    // Every query is valid PromQL, as promtool checks rules.
    let rules: String = queries
        .iter()
        .enumerate()
        .map(|(i, (_, _, expr))| {
            format!(
                "      - record: panel:{i}\n        expr: {}\n",
                serde_json::to_string(expr).unwrap()
            )
        })
        .collect();
    let rules_file = dir.path().join("panels.rules.yml");
    std::fs::write(
        &rules_file,
        format!("groups:\n  - name: panels\n    rules:\n{rules}"),
    )
    .unwrap();
    let check = tokio::process::Command::new(tool("PROMTOOL_BIN", "promtool"))
        .args(["check", "rules"])
        .arg(&rules_file)
        .output()
        .await
        .expect("promtool (Debian package `prometheus`; ./x test installs it)");
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // cloudlysis dev, with a little traffic: the printed examples.
    let mut dev = cloudlysis_test_support::Dev::start(
        env!("CARGO_BIN_EXE_cloudlysis"),
        &dir.path().join("data"),
        &[],
    )
    .await;
    let (http, curls) = (dev.http.clone(), dev.curls.clone());
    for curl in &curls {
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(curl)
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{curl}");
    }

    // A real Prometheus scraping it every second.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = http.trim_start_matches("http://");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: cloudlysis\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .unwrap();
    let _prometheus = tokio::process::Command::new(tool("PROMETHEUS_BIN", "prometheus"))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus (Debian package `prometheus`; ./x test installs it)");
    let api = format!("http://127.0.0.1:{port}");

    // Poll until every panel has data (a rate needs two scrapes), for at most a minute.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut missing = queries.clone();
    while !missing.is_empty() && tokio::time::Instant::now() < deadline {
        let mut still = Vec::new();
        for q in missing {
            let url = format!("{api}/api/v1/query?query={}", encode(&q.2));
            let has_data = match http_get(&url).await {
                Ok((200, body)) => {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    v["data"]["result"]
                        .as_array()
                        .is_some_and(|r| !r.is_empty())
                }
                _ => false,
            };
            if !has_data {
                still.push(q);
            }
        }
        missing = still;
        if !missing.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert!(
        missing.is_empty(),
        "panels without data:\n{}",
        missing
            .iter()
            .map(|(d, t, e)| format!("  {d} / {t}: {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let _ = dev.child.kill().await;
}
