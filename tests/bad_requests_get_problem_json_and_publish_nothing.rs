//! Authentication, authorization and bad input: every refusal is problem+json with the right
//! status, and nothing reaches the event stream.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloudlysis_gateway::{Authenticator, Claims};
use common::*;

const OPEN: &str = r#"{"type":"Open","payload":{"owner":"mallory"}}"#;

async fn expect(
    p: &Platform,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
    status: u16,
    detail: &str,
) {
    let (s, resp) = p.command(path, token, headers, body).await;
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let json = body_json(resp).await;
    assert_eq!(s, status, "{path} {json}");
    assert_eq!(ctype.as_deref(), Some("application/problem+json"), "{path}");
    assert_eq!(json["status"], status);
    assert!(
        json["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:cloudlysis:problem:")
    );
    assert!(json["title"].is_string());
    assert!(json["correlation_id"].is_string());
    let d = json["detail"].as_str().unwrap();
    assert!(d.contains(detail), "{path}: detail {d:?} lacks {detail:?}");
}

#[tokio::test]
async fn every_refusal_is_problem_json_and_nothing_is_published() {
    let p = Platform::start().await;
    let good = p.token("acme", &["commands:account"]);
    let path = "/v1/commands/account/acc";

    expect(&p, path, None, &[], OPEN, 401, "missing bearer token").await;

    // Expired: signed correctly, exp in the past.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = jsonwebtoken_encode(&Claims {
        sub: "x".into(),
        tenant: "acme".into(),
        rights: vec!["commands:*".into()],
        exp: now - 3600,
    });
    expect(&p, path, Some(&expired), &[], OPEN, 401, "expired").await;

    // Badly signed: another secret.
    let foreign = Authenticator::new(b"some-other-secret-some-other-secret")
        .unwrap()
        .mint("x", "acme", &["commands:*".into()], Duration::from_secs(60))
        .unwrap();
    expect(&p, path, Some(&foreign), &[], OPEN, 401, "invalid token").await;
    expect(&p, path, Some("not-a-jwt"), &[], OPEN, 401, "invalid token").await;

    // Missing right.
    let reader = p.token("acme", &["queries:*", "commands:order"]);
    expect(&p, path, Some(&reader), &[], OPEN, 403, "commands:account").await;

    // Tenant spoofing.
    expect(
        &p,
        path,
        Some(&good),
        &[("x-tenant-id", "other")],
        OPEN,
        403,
        "authenticated tenant",
    )
    .await;

    // Subject syntax in path tokens.
    for bad in ["a.b", "a*", "a%3E", "%20a", "a%2Eb"] {
        expect(
            &p,
            &format!("/v1/commands/account/{bad}"),
            Some(&good),
            &[],
            OPEN,
            400,
            "aggregate id",
        )
        .await;
    }
    let star = p.token("acme", &["commands:*"]);
    expect(
        &p,
        "/v1/commands/acc.ount/x",
        Some(&star),
        &[],
        OPEN,
        400,
        "aggregate type",
    )
    .await;

    // Oversize body (limit 4096 in the test platform).
    let big = format!(
        r#"{{"type":"Open","payload":{{"owner":"{}"}}}}"#,
        "x".repeat(5000)
    );
    expect(&p, path, Some(&good), &[], &big, 413, "exceeds").await;

    // Invalid JSON, missing type, unknown command type, wrong payload.
    expect(
        &p,
        path,
        Some(&good),
        &[],
        "{not json",
        400,
        "not a valid command",
    )
    .await;
    expect(
        &p,
        path,
        Some(&good),
        &[],
        r#"{"payload":{}}"#,
        400,
        "not a valid command",
    )
    .await;
    expect(
        &p,
        path,
        Some(&good),
        &[],
        r#"{"type":"Explode","payload":{}}"#,
        400,
        "Explode",
    )
    .await;
    expect(
        &p,
        path,
        Some(&good),
        &[],
        r#"{"type":"Deposit","payload":{"amount":-5}}"#,
        400,
        "Deposit",
    )
    .await;

    // Bad If-Match.
    expect(
        &p,
        path,
        Some(&good),
        &[("if-match", "\"abc\"")],
        OPEN,
        400,
        "If-Match",
    )
    .await;

    // Unknown aggregate type.
    expect(
        &p,
        "/v1/commands/order/o-1",
        Some(&star),
        &[],
        OPEN,
        404,
        "unknown aggregate type",
    )
    .await;

    assert_eq!(p.message_count().await, 0, "nothing was published");

    // Domain rejection and version conflict, once there is an account.
    let (s, _) = p.command(path, Some(&good), &[], OPEN).await;
    assert_eq!(s, 200);
    expect(
        &p,
        path,
        Some(&good),
        &[],
        r#"{"type":"Withdraw","payload":{"amount":5}}"#,
        422,
        "insufficient funds",
    )
    .await;
    expect(
        &p,
        path,
        Some(&good),
        &[("if-match", "\"7\"")],
        r#"{"type":"Deposit","payload":{"amount":5}}"#,
        409,
        "version conflict",
    )
    .await;
    let (s, _) = p
        .command(
            path,
            Some(&good),
            &[("if-match", "\"1\"")],
            r#"{"type":"Deposit","payload":{"amount":5}}"#,
        )
        .await;
    assert_eq!(s, 200, "the right expected version is accepted");
}

#[tokio::test]
async fn an_unreachable_node_is_503_with_retry_after() {
    let mut p = Platform::start().await;
    let token = p.token("acme", &["commands:account"]);
    // Point a gateway at a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    p.gateway = cloudlysis_gateway::Gateway::new(cloudlysis_gateway::GatewaySettings {
        aggregate_addr: format!("http://127.0.0.1:{port}"),
        jwt_secret: SECRET.into(),
        command_timeout: Duration::from_secs(5),
        max_body_bytes: 4096,
    })
    .unwrap();
    let (s, resp) = p
        .command("/v1/commands/account/acc", Some(&token), &[], OPEN)
        .await;
    assert_eq!(s, 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
}

fn jsonwebtoken_encode(claims: &Claims) -> String {
    // `encode` signs whatever it is given: a past `exp` makes an expired but valid token.
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}
