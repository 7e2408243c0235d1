//! The shop's own binary, built from this crate with `cloudlysis::App`, runs the whole
//! platform (`shop dev` against a real nats-server) and serves its behaviours through its
//! Gateway: an order is placed and paid over HTTP, its `Paid` event starts the fulfilment
//! workflow, whose `ship` effect ships it; the `order_summary` view shows each step.

use std::process::Stdio;
use std::time::Duration;

use cloudlysis_test_support::{NatsServer, eventually};
use tokio::io::{AsyncBufReadExt, BufReader};

/// `curl` an URL: (status, body).
async fn curl(args: &[&str]) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test]
async fn an_order_is_placed_paid_and_shipped_by_its_workflow() {
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shop"))
        .env(
            "CLOUDLYSIS_NODE_SECRET",
            cloudlysis_test_support::NODE_SECRET,
        )
        .env_remove("CLOUDLYSIS_CONFIG")
        .args(["dev", "--http-addr", "127.0.0.1:0", "--nats-url"])
        .arg(nats.url())
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut http, mut token, mut printed) = (None, None, Vec::new());
    let read = async {
        let mut token_next = false;
        while let Some(line) = lines.next_line().await.unwrap() {
            if token_next {
                token = Some(line.trim().to_string());
                token_next = false;
            }
            if line.starts_with("Dev token") {
                token_next = true;
            }
            if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
                http.get_or_insert(url.to_string());
            }
            if line.starts_with("Press Ctrl-C") {
                break;
            }
            printed.push(line);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("shop dev printed its URLs");
    let http = http.expect("the Gateway URL printed");
    let token = token.expect("the dev token printed");
    let printed = printed.join("\n");
    // It runs the shop's behaviours, and only those.
    assert!(printed.contains("(aggregates: order)"), "{printed}");
    assert!(printed.contains("(views: order_summary)"), "{printed}");
    assert!(
        printed.contains("(workflows: fulfilment; effects: ship)"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("{http}/v1/commands/order/<id>")),
        "{printed}"
    );
    let auth = format!("Authorization: Bearer {token}");
    let post = |path: String, body: &'static str| {
        let auth = auth.clone();
        let url = format!("{http}{path}");
        async move {
            curl(&[
                "-X",
                "POST",
                &url,
                "-H",
                &auth,
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
            ])
            .await
        }
    };
    let get = |path: String| {
        let auth = auth.clone();
        let url = format!("{http}{path}");
        async move { curl(&[&url, "-H", &auth]).await }
    };

    let (status, body) = post(
        "/v1/commands/order/o-1".into(),
        r#"{"type":"Place","payload":{"customer":"ada","lines":[{"sku":"tea","quantity":2,"price":450}]}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // A domain rejection is the client's 422, with the aggregate's reason.
    let (status, body) = post(
        "/v1/commands/order/o-1".into(),
        r#"{"type":"Pay","payload":{"amount":100}}"#,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("the amount must be the total: 900"), "{body}");
    let (status, body) = post(
        "/v1/commands/order/o-1".into(),
        r#"{"type":"Pay","payload":{"amount":900}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // `Paid` starts the fulfilment; its `ship` effect records `Ship` on the order.
    let completed = eventually(Duration::from_secs(30), || async move {
        let (_, body) = get("/v1/workflows/fulfilment/o-1".into()).await;
        body.contains(r#""status":"completed""#)
    })
    .await;
    let (_, body) = get("/v1/workflows/fulfilment/o-1".into()).await;
    assert!(completed, "the fulfilment completed: {body}");
    let shipped = eventually(Duration::from_secs(30), || async move {
        let (_, body) = get("/v1/query/order_summary/o-1".into()).await;
        body.contains(r#""status":"shipped""#)
    })
    .await;
    let (status, body) = get("/v1/query/order_summary/o-1".into()).await;
    assert!(shipped, "the view shows the shipment: {status} {body}");
    assert!(body.contains(r#""carrier":"cloudlysis-post""#), "{body}");
    assert!(body.contains(r#""total":900"#), "{body}");
    assert!(body.contains(r#""customer":"ada""#), "{body}");

    // The demo's behaviours are not part of this application.
    let (status, body) = post(
        "/v1/commands/account/a-1".into(),
        r#"{"type":"Open","payload":{"owner":"x"}}"#,
    )
    .await;
    assert_eq!(status, 404, "{body}");

    let pid = rustix::process::Pid::from_raw(child.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("shop dev exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}
