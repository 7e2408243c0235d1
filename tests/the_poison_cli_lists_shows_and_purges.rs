//! `cloudlysis poison list|show|redrive|purge` against a projection node: the same operations as
//! the console, from a shell, audited with `--actor`.

mod common;

use std::time::Duration;

use cloudlysis_actors::projection::ProjectionNode;
use cloudlysis_actors::projection::view::View;
use cloudlysis_runtime::consumer::{ConsumerSettings, NakBackoff};
use cloudlysis_runtime::envelope::EventEnvelope;
use common::{Platform, gateway_call};

/// Always refuses deposits of 13.
struct Thirteen;

impl View for Thirteen {
    const NAME: &'static str = "thirteen";
    const SCHEMA_VERSION: u32 = 1;
    type Document = serde_json::Value;
    fn aggregate_types() -> &'static [&'static str] {
        &["account"]
    }
    fn key(e: &EventEnvelope) -> Option<String> {
        Some(e.aggregate_id.clone())
    }
    fn apply(_: &mut serde_json::Value, e: &EventEnvelope) -> Result<(), String> {
        if e.payload["amount"] == 13 {
            return Err("13 is unlucky".into());
        }
        Ok(())
    }
}

async fn cli(args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cloudlysis"))
        .env(
            "CLOUDLYSIS_NODE_SECRET",
            cloudlysis_test_support::NODE_SECRET,
        )
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_shows_redrives_and_purges_poison() {
    let p = Platform::start().await;
    let settings = ConsumerSettings {
        max_deliver: 2,
        nak_backoff: NakBackoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            multiplier: 2,
        },
        ..ConsumerSettings::default()
    };
    let node = ProjectionNode::builder(p.js.clone(), settings)
        .register::<Thirteen>()
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(node.serve_grpc(
        listener,
        cloudlysis_test_support::node_keys(),
        std::future::pending(),
    ));
    let writer = p.token("acme", &["commands:account"]);
    p.account_command(&writer, "a", r#"{"type":"Open","payload":{"owner":"o"}}"#)
        .await;
    p.account_command(
        &writer,
        "a",
        r#"{"type":"Deposit","payload":{"amount":13}}"#,
    )
    .await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let line = loop {
        let (ok, out) = cli(&["poison", "list", "--node-addr", &addr]).await;
        assert!(ok, "{out}");
        if let Some(line) = out.lines().next() {
            break line.to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "no record listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let record: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["source"]["name"], "thirteen", "{record}");
    let id = record["id"].as_str().unwrap();

    let (ok, shown) = cli(&["poison", "show", id, "--node-addr", &addr]).await;
    assert!(ok, "{shown}");
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        shown["message"]["payload"]["events"][0]["payload"]["amount"],
        13
    );

    // The view still refuses it: the redrive fails (exit 1) and the record stays.
    let (ok, out) = cli(&[
        "poison",
        "redrive",
        id,
        "--node-addr",
        &addr,
        "--actor",
        "ops",
    ])
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("\"failed\""), "{out}");
    let (ok, out) = cli(&[
        "poison",
        "purge",
        id,
        "--node-addr",
        &addr,
        "--actor",
        "ops",
    ])
    .await;
    assert!(ok && out.contains("\"purged\""), "{out}");
    let (ok, out) = cli(&["poison", "list", "--node-addr", &addr]).await;
    assert!(ok && out.trim().is_empty(), "{out}");

    // Both verbs are in the audit trail, by the named actor.
    let gw = p.gateway_with(|s| s.projection_addr = addr.clone());
    let (_, audit) = gateway_call(
        &gw,
        "GET",
        "/admin/audit",
        &p.token("acme", &["admin:read"]),
        "",
    )
    .await;
    let actions: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [("poison.purge", "ops"), ("poison.redrive", "ops")]
    );
    let (ok, out) = cli(&["poison", "list", "--node-addr", "http://127.0.0.1:1"]).await;
    assert!(!ok && out.contains("--node-addr"), "{out}");
}
