//! The shop in process, with `cloudlysis::harness`: a private nats-server and every node and
//! the Gateway of the application in the test's own process — what a user's integration tests
//! start from.

use std::time::Duration;

use cloudlysis::harness::Harness;
use cloudlysis_test_support::eventually;

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
async fn a_placed_order_is_summarised() {
    let platform = Harness::start(&cloudlysis_shop::app()).await.unwrap();
    let auth = format!("Authorization: Bearer {}", platform.token);
    let (status, body) = curl(&[
        "-X",
        "POST",
        &format!("{}/v1/commands/order/o-9", platform.http),
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"type":"Place","payload":{"customer":"lin","lines":[{"sku":"pen","quantity":3,"price":100}]}}"#,
    ])
    .await;
    assert_eq!(status, 200, "{body}");
    let url = format!("{}/v1/query/order_summary/o-9", platform.http);
    let placed = eventually(Duration::from_secs(30), || async {
        curl(&[&url, "-H", &auth])
            .await
            .1
            .contains(r#""status":"placed""#)
    })
    .await;
    let (_, body) = curl(&[&url, "-H", &auth]).await;
    assert!(placed, "{body}");
    assert!(body.contains(r#""total":300"#), "{body}");
    platform.stop().await;
}
