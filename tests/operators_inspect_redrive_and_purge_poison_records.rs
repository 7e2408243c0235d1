//! Poison operations through the Gateway: a view event that fails is announced on
//! `cloudlysis.poison.>`, listed, inspected with its original payload, redriven after the view
//! is fixed (the document then equals the fold), and a purge removes a record; both verbs are
//! idempotent and audited with the caller's name; a caller without the admin rights gets 403
//! for all of it and changes nothing.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cloudlysis_actors::projection::ProjectionNode;
use cloudlysis_actors::projection::view::View;
use cloudlysis_runtime::consumer::{ConsumerSettings, NakBackoff};
use cloudlysis_runtime::envelope::EventEnvelope;
use cloudlysis_test_support::view_document;
use common::{Platform, gateway_call};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

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

/// Polls `path` until it lists exactly one record (30 s at most); its answer.
async fn records(gw: &cloudlysis_gateway::Gateway, token: &str, path: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (s, body) = gateway_call(gw, "GET", path, token, "").await;
        assert_eq!(s, 200, "{body}");
        if body["records"].as_array().is_some_and(|r| r.len() == 1) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "no record: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_event_is_inspected_redriven_after_the_fix_and_purged() {
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
    let picky = ProjectionNode::builder(p.js.clone(), settings)
        .register::<Picky>()
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(picky.clone().serve_grpc(
        listener,
        cloudlysis_test_support::node_keys(),
        std::future::pending(),
    ));
    let gw = p.gateway_with(|s| s.projection_addr = format!("http://{addr}"));
    let mut announced = p
        .server
        .client()
        .await
        .subscribe("cloudlysis.poison.>")
        .await
        .unwrap();

    let writer = p.token("acme", &["commands:account"]);
    let admin = p.token("acme", &["admin:read", "admin:operate"]);
    let reader = p.token("acme", &["admin:read"]);
    p.account_command(&writer, "acc", r#"{"type":"Open","payload":{"owner":"o"}}"#)
        .await;
    for amount in [5, 13, 7] {
        p.account_command(
            &writer,
            "acc",
            &format!(r#"{{"type":"Deposit","payload":{{"amount":{amount}}}}}"#),
        )
        .await;
    }

    // Announced as it happens.
    let note = tokio::time::timeout(Duration::from_secs(30), announced.next())
        .await
        .expect("a poison announcement")
        .unwrap();
    assert_eq!(
        note.subject.as_str(),
        "cloudlysis.poison.cloudlysis-projection-view-picky"
    );

    // Listed, with its source.
    let list = records(&gw, &admin, "/admin/poison?source=picky").await;
    let record = &list["records"][0];
    assert_eq!(record["source"]["kind"], "view");
    assert_eq!(record["source"]["name"], "picky");
    assert_eq!(record["error"], "13 is unlucky");
    let id = record["id"].as_str().unwrap().to_string();

    // Inspected, with the original message read back from the stream.
    let (s, detail) = gateway_call(&gw, "GET", &format!("/admin/poison/{id}"), &reader, "").await;
    assert_eq!(s, 200, "{detail}");
    assert_eq!(detail["message"]["available"], true);
    assert_eq!(
        detail["message"]["payload"]["events"][0]["payload"]["amount"],
        13
    );
    assert_eq!(detail["headers"]["tenant-id"][0], "acme");

    // Without the rights: 403 for every verb, nothing changes.
    let nobody = p.token("acme", &["queries:*"]);
    for (method, path, token) in [
        ("GET", "/admin/poison".to_string(), &nobody),
        ("GET", format!("/admin/poison/{id}"), &nobody),
        ("POST", format!("/admin/poison/{id}/redrive"), &nobody),
        ("DELETE", format!("/admin/poison/{id}"), &nobody),
        ("GET", "/admin/audit".to_string(), &nobody),
        ("POST", format!("/admin/poison/{id}/redrive"), &reader),
        ("DELETE", format!("/admin/poison/{id}"), &reader),
    ] {
        let (s, body) = gateway_call(&gw, method, &path, token, "").await;
        assert_eq!(s, 403, "{method} {path}: {body}");
    }

    // A redrive before the fix fails and keeps the record; after the fix it applies.
    let redrive_path = format!("/admin/poison/{id}/redrive");
    let redrive = || gateway_call(&gw, "POST", &redrive_path, &admin, "");
    let (s, r) = redrive().await;
    assert_eq!((s, r["outcome"].as_str()), (200, Some("failed")), "{r}");
    BROKEN.store(false, Ordering::SeqCst);
    let (s, r) = redrive().await;
    assert_eq!((s, r["outcome"].as_str()), (200, Some("applied")), "{r}");
    assert_eq!(
        view_document(&p.js, "picky", "acme", "acc").await["sum"],
        25,
        "the fold"
    );
    let (s, r) = redrive().await;
    assert_eq!(
        (s, r["outcome"].as_str()),
        (200, Some("already_gone")),
        "{r}"
    );
    assert_eq!(
        view_document(&p.js, "picky", "acme", "acc").await["sum"],
        25,
        "once"
    );

    // Another poison, purged: its event is never applied.
    BROKEN.store(true, Ordering::SeqCst);
    p.account_command(
        &writer,
        "acc",
        r#"{"type":"Deposit","payload":{"amount":13}}"#,
    )
    .await;
    let second = records(&gw, &admin, "/admin/poison").await["records"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for expected in ["purged", "already_gone"] {
        let (s, r) = gateway_call(
            &gw,
            "DELETE",
            &format!("/admin/poison/{second}"),
            &admin,
            "",
        )
        .await;
        assert_eq!((s, r["outcome"].as_str()), (200, Some(expected)), "{r}");
    }
    let (_, body) = gateway_call(&gw, "GET", "/admin/poison", &admin, "").await;
    assert_eq!(body["records"].as_array().unwrap().len(), 0, "{body}");

    // The audit trail names who did what, newest first.
    let (s, audit) = gateway_call(&gw, "GET", "/admin/audit", &reader, "").await;
    assert_eq!(s, 200, "{audit}");
    let actions: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("poison.purge", second.as_str()),
            ("poison.purge", second.as_str()),
            ("poison.redrive", id.as_str()),
            ("poison.redrive", id.as_str()),
            ("poison.redrive", id.as_str()),
        ]
    );
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"] == "test")
    );
    // Each entry's outcome is the verb's, as its caller was answered, with the detail beside it
    // (before: a failure's reason in `outcome` with no detail, and `already_gone` as `ok`).
    let outcomes: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            "already_gone",
            "purged",
            "already_gone",
            "applied",
            "failed"
        ]
    );
    let failed = &audit["entries"][4];
    assert!(
        failed["detail"].as_str().unwrap().contains("13 is unlucky"),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effect_command_that_does_not_decode_is_not_published_again_and_keeps_its_record() {
    let mut p = Platform::start().await;
    p.start_transfer_runner().await;
    let admin = p.token("acme", &["admin:read", "admin:operate"]);
    // Not an effect command: the withdraw worker quarantines it as undecodable.
    p.js.publish("tenant.acme.effect.withdraw", r#"{"garbage":1}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let gw = p.gateway.clone();
    let list = records(&gw, &admin, "/admin/poison?source=withdraw").await;
    let id = list["records"][0]["id"].as_str().unwrap().to_string();
    assert!(
        list["records"][0]["error"]
            .as_str()
            .unwrap()
            .contains("undecodable payload"),
        "{list}"
    );

    // Publishing it again would only quarantine it again: the redrive fails, says why, and
    // keeps the record (before: "applied", and a second record appeared at once).
    let (s, r) = gateway_call(
        &gw,
        "POST",
        &format!("/admin/poison/{id}/redrive"),
        &admin,
        "",
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["outcome"], "failed", "{r}");
    assert!(
        r["detail"].as_str().unwrap().contains("does not decode"),
        "{r}"
    );
    let (s, after) = gateway_call(&gw, "GET", "/admin/poison", &admin, "").await;
    assert_eq!(s, 200, "{after}");
    let ids: Vec<&str> = after["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [id.as_str()],
        "the record is kept, and no other appeared"
    );
    let stream =
        p.js.get_stream("WORKFLOW_COMMANDS")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages;
    assert_eq!(stream, 1, "nothing was published again");
}
