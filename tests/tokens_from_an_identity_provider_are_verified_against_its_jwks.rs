//! A deployment can use its OIDC provider: RS256 and ES256 tokens are verified against the
//! provider's JWKS (a file, re-read when it changes), with issuer and audience checked and the
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
    assert!(err.contains("gateway.jwt_issuer"), "{err}");
    let err = run(&[
        ("CLOUDLYSIS_JWKS_FILE", "/nonexistent/jwks.json"),
        ("CLOUDLYSIS_JWT_ISSUER", ISSUER),
        ("CLOUDLYSIS_JWT_AUDIENCE", AUDIENCE),
    ]);
    assert!(err.contains("gateway.jwks_file"), "{err}");
}
