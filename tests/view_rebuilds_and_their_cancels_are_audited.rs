//! An operator's view rebuild and its cancel through the Gateway are written to the audit trail
//! — who, whose tenant, which view, what came of it — as the other operator verbs are, also when
//! refused. (Found by using the platform: `view.rebuild` and `view.rebuild_cancel`, which the
//! control API lists, were never written.)

mod common;

use std::time::Duration;

use common::{Platform, gateway_call};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_and_a_cancel_show_in_the_audit_trail() {
    let p = Platform::start().await;
    let token = p.token("acme", &["admin:read", "admin:operate"]);
    let (s, body) = gateway_call(
        &p.gateway,
        "POST",
        "/admin/views/balances/rebuild",
        &token,
        "",
    )
    .await;
    assert_eq!(s, 202, "{body}");
    // The cancel is refused when the rebuild (of an empty stream) has finished already: audited
    // either way.
    let (s, body) = gateway_call(
        &p.gateway,
        "POST",
        "/admin/views/balances/rebuild/cancel",
        &token,
        "",
    )
    .await;
    assert!(s == 200 || s == 422, "{s} {body}");

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let entries = loop {
        let (s, body) = gateway_call(&p.gateway, "GET", "/admin/audit?limit=100", &token, "").await;
        assert_eq!(s, 200, "{body}");
        let entries: Vec<serde_json::Value> = body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["target"] == "balances")
            .cloned()
            .collect();
        if entries.len() >= 2 || std::time::Instant::now() > deadline {
            break entries;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // (Newest first by millisecond; two records of one millisecond may come in either order.)
    let mut actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    actions.sort_unstable();
    assert_eq!(
        actions,
        ["view.rebuild", "view.rebuild_cancel"],
        "{entries:?}"
    );
    for e in &entries {
        assert_eq!(e["actor"], "test", "{e}");
        assert_eq!(e["tenant"], "acme", "{e}");
    }
    let rebuild = entries
        .iter()
        .find(|e| e["action"] == "view.rebuild")
        .unwrap();
    assert_eq!(rebuild["outcome"], "ok", "{rebuild}");
    assert!(
        rebuild["detail"].as_str().unwrap().contains("generation"),
        "{rebuild}"
    );
}
