//! The Control UI in a real browser (Debian's Chromium, driven by playwright-core through
//! `npm run e2e` in `control/ui`), against real Gateways, nodes and nats-servers:
//!
//! 1. `cloudlysis dev` as a user runs it: sign in from the printed console URL, see every node
//!    and a supervision tree, rebuild a view and watch it finish, list the workflows.
//! 2. A platform with a view that fails on an event: the console lists the poison record,
//!    inspects its original payload, redrives it after the view was fixed, and finds the
//!    redrive in the audit trail.
//!
//! Screenshots of every screen are written to `control/ui/artifacts/`. Needs `npm ci` and
//! `npm run build` in `control/ui` and `/usr/bin/chromium` (or `CHROMIUM_BIN`); `./x test` sees
//! to all three. Slow (two browser runs and a view rebuild): about a minute.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cloudlysis_actors::projection::ProjectionNode;
use cloudlysis_actors::projection::view::View;
use cloudlysis_examples::balances::Balances;
use cloudlysis_runtime::consumer::{ConsumerSettings, NakBackoff};
use cloudlysis_runtime::envelope::EventEnvelope;
use common::{Platform, gateway_call};
use serde::{Deserialize, Serialize};

const OPERATOR_RIGHTS: &[&str] = &[
    "commands:*",
    "queries:*",
    "workflows:*",
    "workflows:*:operate",
    "runner:admin",
    "admin:read",
    "admin:operate",
];

static BROKEN: AtomicBool = AtomicBool::new(true);

#[derive(Default, Serialize, Deserialize)]
struct Doc {
    sum: i64,
}

/// Refuses deposits of 13 while broken.
struct Picky;

impl View for Picky {
    const NAME: &'static str = "picky";
    const SCHEMA_VERSION: u32 = 1;
    type Document = Doc;
    fn aggregate_types() -> &'static [&'static str] {
        &["account"]
    }
    fn key(e: &EventEnvelope) -> Option<String> {
        Some(e.aggregate_id.clone())
    }
    fn apply(doc: &mut Doc, e: &EventEnvelope) -> Result<(), String> {
        if e.event_type == "Deposited" {
            let amount = e.payload["amount"].as_i64().ok_or("no amount")?;
            if amount == 13 && BROKEN.load(Ordering::SeqCst) {
                return Err("13 is unlucky".into());
            }
            doc.sum += amount;
        }
        Ok(())
    }
}

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("control/ui")
}

/// Fails clearly when the UI's packages, build or the browser are missing.
fn check_prerequisites() {
    let ui = ui_dir();
    assert!(
        ui.join("node_modules/playwright-core").is_dir(),
        "control/ui has no node_modules: run `npm ci` there (./x test does)"
    );
    assert!(
        ui.join("dist/index.html").is_file(),
        "the Control UI is not built: run `npm run build` in control/ui (./x test does)"
    );
    let chromium = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "no Chromium at {chromium}: install Debian's `chromium` (./x test does) or set CHROMIUM_BIN"
    );
}

/// Runs the console's browser test against `url` signed in with `token`.
async fn run_e2e(url: &str, token: &str, expect_poison: bool) {
    let mut cmd = tokio::process::Command::new("npm");
    cmd.args(["run", "--silent", "e2e"])
        .current_dir(ui_dir())
        .env("CLOUDLYSIS_UI_URL", url)
        .env("CLOUDLYSIS_UI_TOKEN", token)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if expect_poison {
        cmd.env("CLOUDLYSIS_UI_EXPECT_POISON", "1");
    }
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("the browser test finished within 5 minutes")
        .expect("npm runs");
    assert!(
        out.status.success(),
        "the browser test failed against {url}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cloudlysis dev` as a user runs it; the console URL and operator token it prints.
async fn against_dev() {
    let dir = tempfile::tempdir().unwrap();
    let ui = ui_dir().join("dist");
    let mut dev = cloudlysis_test_support::Dev::start(
        env!("CARGO_BIN_EXE_cloudlysis"),
        &dir.path().join("data"),
        &[("CLOUDLYSIS_UI_DIR", ui.to_str().expect("a UTF-8 path"))],
    )
    .await;
    let token = dev
        .operator
        .clone()
        .expect("dev printed the console URL with the operator's token");
    let (base, token) = (dev.http.as_str(), token.as_str());
    run_e2e(base, token, false).await;
    let _ = dev.child.kill().await;
}

/// A platform whose `picky` view failed on an event that a fix now lets through.
async fn against_a_poisoned_view() {
    let mut p = Platform::start().await;
    p.start_transfer_runner().await;
    // The settings of the platform's own projection node: both bind the `balances` durable.
    let settings = ConsumerSettings {
        nak_backoff: NakBackoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
            multiplier: 2,
        },
        ..ConsumerSettings::default()
    };
    let node = ProjectionNode::builder(p.js.clone(), settings)
        .retire_grace(Duration::from_millis(500))
        .register::<Balances>()
        .register::<Picky>()
        .build()
        .await
        .unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node_addr = grpc.local_addr().unwrap();
    tokio::spawn(node.serve_grpc(
        grpc,
        cloudlysis_test_support::node_keys(),
        std::future::pending(),
    ));
    let gw = p.gateway_with(|s| {
        s.projection_addr = format!("http://{node_addr}");
        s.ui_dir = ui_dir().join("dist");
    });

    let writer = p.token("acme", &["commands:account"]);
    p.account_command(&writer, "acc", r#"{"type":"Open","payload":{"owner":"o"}}"#)
        .await;
    p.account_command(
        &writer,
        "acc",
        r#"{"type":"Deposit","payload":{"amount":13}}"#,
    )
    .await;
    let operator = p.token("acme", OPERATOR_RIGHTS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = gateway_call(&gw, "GET", "/admin/poison", &operator, "").await;
        if body["records"].as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no poison record: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The cause is fixed; the record stays until an operator redrives it.
    BROKEN.store(false, Ordering::SeqCst);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, gw.router()).await });
    run_e2e(&format!("http://{http}"), &operator, true).await;
    assert_eq!(
        cloudlysis_test_support::view_document(&p.js, "picky", "acme", "acc").await["sum"],
        13,
        "the redriven event was applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_work_the_console_in_a_real_browser() {
    check_prerequisites();
    against_dev().await;
    against_a_poisoned_view().await;
}
