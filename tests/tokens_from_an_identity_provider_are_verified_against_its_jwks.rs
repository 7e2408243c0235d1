//! A deployment can use its OIDC provider: RS256 and ES256 tokens are verified against the
//! provider's JWKS (a file, re-read when it changes, or fetched from the provider's URL and
//! fetched again when a token names a new key), with issuer and audience checked and the
//! tenant and rights read from configurable claims — besides the Gateway's own HS256 tokens.
//! Before, only HS256 tokens signed with `gateway.jwt_secret` were accepted.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloudlysis_gateway::Gateway;
use cloudlysis_gateway::oidc::OidcSettings;
use common::{Platform, body_json};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const ISSUER: &str = "https://idp.example.com/";
const AUDIENCE: &str = "cloudlysis-api";

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/oidc")
        .join(name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token signed with the key in `pem` (`alg`, `kid`) carrying `claims`.
fn token(pem: &str, alg: Algorithm, kid: &str, claims: serde_json::Value) -> String {
    let pem = std::fs::read(fixture(pem)).unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_der(&pem),
        _ => EncodingKey::from_ec_der(&pem),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn claims(tenant: &str) -> serde_json::Value {
    serde_json::json!({
        "sub": "alice@acme",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now() + 300,
        "org": tenant,
        "scope": "openid commands:account queries:*",
    })
}

async fn open(p: &Platform, gw: &Gateway, token: &str, id: &str) -> (u16, serde_json::Value) {
    let (status, resp) = p
        .command_via(
            gw,
            &format!("/v1/commands/account/{id}"),
            token,
            r#"{"type":"Open","payload":{"owner":"o"}}"#,
        )
        .await;
    (status, body_json(resp).await)
}

#[tokio::test]
async fn rs256_and_es256_tokens_of_the_provider_are_accepted_and_checked() {
    let p = Platform::start().await;
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::copy(fixture("jwks.json"), &jwks).unwrap();
    let gw = p.gateway_with(|s| {
        s.oidc = OidcSettings {
            jwks_file: Some(jwks.clone()),
            jwks_url: None,
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            tenant_claim: "org".into(),
            rights_claim: "scope".into(),
        }
    });

    // The provider's tokens: tenant from `org`, rights from the space-separated `scope`.
    let rs = token("rs256.der", Algorithm::RS256, "rsa-1", claims("acme"));
    assert_eq!(open(&p, &gw, &rs, "a-1").await.0, 200);
    let es = token("es256.der", Algorithm::ES256, "ec-1", claims("acme"));
    assert_eq!(open(&p, &gw, &es, "a-2").await.0, 200);
    let commits = p.commits().await;
    assert!(
        commits.iter().all(|c| c.3.contains(".acme.")),
        "{commits:?}"
    );
    // The Gateway's own HS256 tokens still work.
    let own = p.token("acme", &["commands:*"]);
    assert_eq!(open(&p, &gw, &own, "a-3").await.0, 200);

    // Refused: wrong issuer, wrong audience, expired, missing tenant claim, a key the set does
    // not hold, a key that is not the one its kid names, and rights the token lacks.
    let mut wrong_iss = claims("acme");
    wrong_iss["iss"] = "https://evil.example.com/".into();
    let mut wrong_aud = claims("acme");
    wrong_aud["aud"] = "someone-else".into();
    let mut expired = claims("acme");
    expired["exp"] = (now() - 3600).into();
    let mut no_tenant = claims("acme");
    no_tenant.as_object_mut().unwrap().remove("org");
    let mut reader = claims("acme");
    reader["scope"] = "queries:*".into();
    for (what, t, status) in [
        (
            "wrong issuer",
            token("rs256.der", Algorithm::RS256, "rsa-1", wrong_iss),
            401,
        ),
        (
            "wrong audience",
            token("rs256.der", Algorithm::RS256, "rsa-1", wrong_aud),
            401,
        ),
        (
            "expired",
            token("rs256.der", Algorithm::RS256, "rsa-1", expired),
            401,
        ),
        (
            "no tenant",
            token("rs256.der", Algorithm::RS256, "rsa-1", no_tenant),
            401,
        ),
        (
            "unknown kid",
            token("other-rs256.der", Algorithm::RS256, "rsa-2", claims("acme")),
            401,
        ),
        (
            "forged kid",
            token("other-rs256.der", Algorithm::RS256, "rsa-1", claims("acme")),
            401,
        ),
        (
            "missing right",
            token("rs256.der", Algorithm::RS256, "rsa-1", reader),
            403,
        ),
    ] {
        let (s, body) = open(&p, &gw, &t, "a-9").await;
        assert_eq!(s, status, "{what}: {body}");
    }
    assert_eq!(p.commits().await.len(), 3, "a refused token committed");

    // The provider rotates its keys: the new set is picked up without a restart.
    let rotated = token("other-rs256.der", Algorithm::RS256, "rsa-2", claims("acme"));
    std::fs::copy(fixture("jwks-rotated.json"), &jwks).unwrap();
    let picked_up = cloudlysis_test_support::eventually(Duration::from_secs(10), || async {
        open(&p, &gw, &rotated, "a-4").await.0 == 200
    })
    .await;
    assert!(picked_up, "{:?}", open(&p, &gw, &rotated, "a-4").await);
    // The removed key no longer verifies.
    let old = token("rs256.der", Algorithm::RS256, "rsa-1", claims("acme"));
    assert_eq!(open(&p, &gw, &old, "a-5").await.0, 401);
}

/// A stand-in identity provider serving its JWK set at `/jwks` (503 while `body` is empty),
/// counting requests.
async fn provider(
    body: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    hits: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> String {
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let (body, hits) = (body.clone(), hits.clone());
            async move {
                hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = body.lock().unwrap().clone();
                if body.is_empty() {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, Vec::new())
                } else {
                    (axum::http::StatusCode::OK, body)
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/jwks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_is_fetched_from_the_providers_url_and_again_for_a_new_key() {
    let p = Platform::start().await;
    let body = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let url = provider(body.clone(), hits.clone()).await;
    let gw = p.gateway_with(|s| {
        s.oidc = OidcSettings {
            jwks_file: None,
            jwks_url: Some(url.clone()),
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            tenant_claim: "org".into(),
            rights_claim: "scope".into(),
        }
    });
    let rs = token("rs256.der", Algorithm::RS256, "rsa-1", claims("acme"));

    // The provider is down at start: its tokens cannot be checked yet — 503 with Retry-After,
    // not 401 — and the Gateway is not ready, saying why. HS256 tokens work meanwhile.
    assert!(
        cloudlysis_test_support::eventually(Duration::from_secs(10), || async {
            hits.load(std::sync::atomic::Ordering::SeqCst) >= 1
        })
        .await
    );
    let (status, resp) = p
        .command_via(
            &gw,
            "/v1/commands/account/a-1",
            &rs,
            r#"{"type":"Open","payload":{"owner":"o"}}"#,
        )
        .await;
    assert_eq!(status, 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let detail = body_json(resp).await["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("gateway.jwks_url") && detail.contains("503"),
        "{detail}"
    );
    let provider_ready = || async {
        let report = gw.readiness().evaluate().await;
        let check = report
            .checks
            .iter()
            .find(|c| c.name == "identity_provider")
            .cloned();
        check.unwrap()
    };
    let check = provider_ready().await;
    assert!(!check.ok && check.error.unwrap().contains("gateway.jwks_url"));
    let own = p.token("acme", &["commands:*"]);
    assert_eq!(open(&p, &gw, &own, "h-1").await.0, 200);
    assert_eq!(p.commits().await.len(), 1);

    // The provider comes up: the retry (with backoff) fetches the set.
    *body.lock().unwrap() = std::fs::read(fixture("jwks.json")).unwrap();
    let accepted = cloudlysis_test_support::eventually(Duration::from_secs(10), || async {
        open(&p, &gw, &rs, "a-1").await.0 == 200
    })
    .await;
    assert!(accepted, "{:?}", open(&p, &gw, &rs, "a-1").await);
    assert!(provider_ready().await.ok);

    // The provider rotates its keys: a token naming the new key makes the Gateway fetch again
    // (rate-limited), and is accepted once the new set is in; the old key no longer verifies.
    *body.lock().unwrap() = std::fs::read(fixture("jwks-rotated.json")).unwrap();
    let rotated = token("other-rs256.der", Algorithm::RS256, "rsa-2", claims("acme"));
    let picked_up = cloudlysis_test_support::eventually(Duration::from_secs(30), || async {
        open(&p, &gw, &rotated, "a-2").await.0 == 200
    })
    .await;
    assert!(picked_up, "{:?}", open(&p, &gw, &rotated, "a-2").await);
    assert_eq!(open(&p, &gw, &rs, "a-3").await.0, 401);
    assert_eq!(p.commits().await.len(), 3);
}

#[test]
fn a_jwks_without_issuer_and_audience_or_unreadable_names_the_setting() {
    let run = |env: &[(&str, &str)]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_cloudlysis"));
        c.env_remove("CLOUDLYSIS_CONFIG")
            .env(
                "CLOUDLYSIS_JWT_SECRET",
                "a-gateway-token-secret-of-32-bytes-or-more",
            )
            .env(
                "CLOUDLYSIS_NODE_SECRET",
                cloudlysis_test_support::NODE_SECRET,
            )
            .args(["gateway", "--http-addr", "127.0.0.1:0"]);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let jwks = fixture("jwks.json");
    let jwks = jwks.to_str().unwrap();
    let err = run(&[("CLOUDLYSIS_JWKS_FILE", jwks)]);
    assert!(
        err.contains("setting `gateway.jwt_issuer` is not set"),
        "{err}"
    );
    // Set but blank is an invalid value, named with where it came from.
    let err = run(&[
        ("CLOUDLYSIS_JWKS_FILE", jwks),
        ("CLOUDLYSIS_JWT_ISSUER", "  "),
    ]);
    assert!(
        err.contains("gateway.jwt_issuer") && err.contains("CLOUDLYSIS_JWT_ISSUER"),
        "{err}"
    );
    assert!(err.contains("must not be blank"), "{err}");
    let err = run(&[
        ("CLOUDLYSIS_JWKS_FILE", "/nonexistent/jwks.json"),
        ("CLOUDLYSIS_JWT_ISSUER", ISSUER),
        ("CLOUDLYSIS_JWT_AUDIENCE", AUDIENCE),
    ]);
    assert!(err.contains("gateway.jwks_file"), "{err}");
    // A key set fetched in the clear from another host could be replaced on the way.
    let err = run(&[
        ("CLOUDLYSIS_JWKS_URL", "http://idp.example.com/jwks"),
        ("CLOUDLYSIS_JWT_ISSUER", ISSUER),
        ("CLOUDLYSIS_JWT_AUDIENCE", AUDIENCE),
    ]);
    assert!(
        err.contains("gateway.jwks_url") && err.contains("https://"),
        "{err}"
    );
    let err = run(&[
        ("CLOUDLYSIS_JWKS_URL", "https://idp.example.com/jwks"),
        ("CLOUDLYSIS_JWKS_FILE", jwks),
        ("CLOUDLYSIS_JWT_ISSUER", ISSUER),
        ("CLOUDLYSIS_JWT_AUDIENCE", AUDIENCE),
    ]);
    assert!(err.contains("not both"), "{err}");
}
