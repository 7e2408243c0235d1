//! Authentication, authorization and bad input: every refusal is problem+json with the right
//! status, and nothing reaches the event stream.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloudlysis_gateway::{Authenticator, Claims};
use common::*;

/// (path, token, headers, body, status, words in the detail)
type Case<'a> = (
    String,
    Option<&'a str>,
    Vec<(&'a str, &'a str)>,
    &'a str,
    u16,
    &'a str,
);

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
    let star = p.token("acme", &["commands:*"]);
    let reader = p.token("acme", &["queries:*", "commands:order"]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Signed correctly, expired an hour ago.
    let expired = jsonwebtoken_encode(&Claims {
        sub: "x".into(),
        tenant: "acme".into(),
        rights: vec!["commands:*".into()],
        exp: now - 3600,
    });
    // Signed with another secret.
    let foreign = Authenticator::new(b"some-other-secret-some-other-secret")
        .unwrap()
        .mint("x", "acme", &["commands:*".into()], Duration::from_secs(60))
        .unwrap();
    let big = format!(
        r#"{{"type":"Open","payload":{{"owner":"{}"}}}}"#,
        "x".repeat(5000)
    );
    let path = "/v1/commands/account/acc";

    let cases: Vec<Case> = vec![
        (path.into(), None, vec![], OPEN, 401, "missing bearer token"),
        (path.into(), Some(&expired), vec![], OPEN, 401, "expired"),
        (
            path.into(),
            Some(&foreign),
            vec![],
            OPEN,
            401,
            "invalid token",
        ),
        (
            path.into(),
            Some("not-a-jwt"),
            vec![],
            OPEN,
            401,
            "invalid token",
        ),
        (
            path.into(),
            Some(&reader),
            vec![],
            OPEN,
            403,
            "commands:account",
        ),
        (
            path.into(),
            Some(&good),
            vec![("x-tenant-id", "other")],
            OPEN,
            403,
            "authenticated tenant",
        ),
        (
            "/v1/commands/account/a.b".into(),
            Some(&good),
            vec![],
            OPEN,
            400,
            "aggregate id",
        ),
        (
            "/v1/commands/account/a*".into(),
            Some(&good),
            vec![],
            OPEN,
            400,
            "aggregate id",
        ),
        (
            "/v1/commands/account/a%3E".into(),
            Some(&good),
            vec![],
            OPEN,
            400,
            "aggregate id",
        ),
        (
            "/v1/commands/account/%20a".into(),
            Some(&good),
            vec![],
            OPEN,
            400,
            "aggregate id",
        ),
        (
            "/v1/commands/account/a%2Eb".into(),
            Some(&good),
            vec![],
            OPEN,
            400,
            "aggregate id",
        ),
        (
            "/v1/commands/acc.ount/x".into(),
            Some(&star),
            vec![],
            OPEN,
            400,
            "aggregate type",
        ),
        (path.into(), Some(&good), vec![], &big, 413, "exceeds"),
        (
            path.into(),
            Some(&good),
            vec![],
            "{not json",
            400,
            "not a valid command",
        ),
        (
            path.into(),
            Some(&good),
            vec![],
            r#"{"payload":{}}"#,
            400,
            "not a valid command",
        ),
        // Found by using the platform: the array form and unknown keys were accepted.
        (
            path.into(),
            Some(&good),
            vec![],
            r#"["Deposit",{"amount":1}]"#,
            400,
            "expected a JSON object",
        ),
        (
            path.into(),
            Some(&good),
            vec![],
            r#"{"type":"Deposit","paylod":{"amount":5}}"#,
            400,
            "unknown field `paylod`",
        ),
        (
            path.into(),
            Some(&good),
            vec![],
            r#"{"type":"Explode","payload":{}}"#,
            400,
            "Explode",
        ),
        (
            path.into(),
            Some(&good),
            vec![],
            r#"{"type":"Deposit","payload":{"amount":-5}}"#,
            400,
            "Deposit",
        ),
        (
            path.into(),
            Some(&good),
            vec![("if-match", "\"abc\"")],
            OPEN,
            400,
            "If-Match",
        ),
        // Found by using the platform: a weak tag matched, and of two If-Match or
        // Idempotency-Key lines the first was taken silently.
        (
            path.into(),
            Some(&good),
            vec![("if-match", "W/\"0\"")],
            OPEN,
            400,
            "strong tag",
        ),
        (
            path.into(),
            Some(&good),
            vec![("if-match", "\"0\""), ("if-match", "junk")],
            OPEN,
            400,
            "more than once",
        ),
        (
            path.into(),
            Some(&good),
            vec![("idempotency-key", "k-1"), ("idempotency-key", "k-2")],
            OPEN,
            400,
            "more than once",
        ),
        (
            "/v1/commands/order/o-1".into(),
            Some(&star),
            vec![],
            OPEN,
            404,
            "unknown aggregate type",
        ),
    ];
    for (path, token, headers, body, status, detail) in &cases {
        expect(&p, path, *token, headers, body, *status, detail).await;
    }
    assert_eq!(p.message_count().await, 0, "nothing was published");

    // Domain rejection and version conflict, once there is an account.
    let (s, _) = p.command(path, Some(&good), &[], OPEN).await;
    assert_eq!(s, 200);
    let withdraw = r#"{"type":"Withdraw","payload":{"amount":5}}"#;
    expect(
        &p,
        path,
        Some(&good),
        &[],
        withdraw,
        422,
        "insufficient funds",
    )
    .await;
    let deposit = r#"{"type":"Deposit","payload":{"amount":5}}"#;
    expect(
        &p,
        path,
        Some(&good),
        &[("if-match", "\"7\"")],
        deposit,
        409,
        "version conflict",
    )
    .await;
    let (s, _) = p
        .command(path, Some(&good), &[("if-match", "\"1\"")], deposit)
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
        projection_addr: "http://127.0.0.1:1".into(),
        runner_addr: "http://127.0.0.1:1".into(),
        jwt_secret: SECRET.into(),
        node_secret: cloudlysis_test_support::NODE_SECRET.into(),
        command_timeout: Duration::from_secs(5),
        max_body_bytes: 4096,
        max_in_flight: 1024,
        ui_dir: cloudlysis_gateway::config::DEFAULT_UI_DIR.into(),
        tenant_max_in_flight: None,
        tenant_weights: Default::default(),
        oidc: Default::default(),
        node_tls: Default::default(),
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
