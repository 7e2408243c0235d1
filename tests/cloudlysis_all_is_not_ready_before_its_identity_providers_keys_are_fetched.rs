//! The readiness of `cloudlysis all` includes its Gateway's own checks.

mod common;

use std::time::Duration;

use cloudlysis_test_support::{NatsServer, eventually, http_get};
use common::all::{prepare, spawn_all};

/// `cloudlysis all` with an identity provider (`gateway.jwks_url`) is not ready before the
/// provider's keys were fetched — its Gateway answers that provider's tokens 503 until then —
/// and its `/ready` says which check fails, as a separate Gateway's does. Before, `all`'s
/// `/ready` checked its nodes and NATS only and was 200 while every provider token was refused.
#[tokio::test]
async fn cloudlysis_all_is_not_ready_before_its_identity_providers_keys_are_fetched() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    prepare(&url).await;
    // A provider that takes the connection and never answers: no keys, ever.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let jwks = format!("http://{}/jwks", silent.local_addr().unwrap());
    let env = [
        ("CLOUDLYSIS_JWKS_URL", jwks.as_str()),
        ("CLOUDLYSIS_JWT_ISSUER", "https://idp.example"),
        ("CLOUDLYSIS_JWT_AUDIENCE", "cloudlysis"),
    ];
    let (_child, _, http, _) = spawn_all(&url, &env).await;
    // Everything else gets ready; the provider's check does not.
    let report = || async {
        let (status, body) = http_get(&format!("{http}/ready")).await.unwrap();
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        (status, report)
    };
    let only_the_provider = eventually(Duration::from_secs(30), || async {
        let (_, report) = report().await;
        let failing: Vec<&str> = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ok"] != true)
            .filter_map(|c| c["name"].as_str())
            .collect();
        failing == ["identity_provider"]
    })
    .await;
    let (status, body) = report().await;
    assert!(only_the_provider, "{status} {body}");
    assert_eq!(status, 503, "{body}");
}
