//! Authentication (HS256 bearer tokens; RS256 / ES256 tokens of an identity provider through
//! [`crate::oidc`]) and deny-by-default authorization.
//!
//! Claims: `sub` (who), `tenant` (whose data), `rights` (what), `exp` (until when, Unix
//! seconds). A route needs one right; nothing is allowed without one:
//!
//! | route | right | also accepted |
//! |---|---|---|
//! | `POST /v1/commands/{aggregate_type}/{id}` | `commands:<aggregate_type>` | `commands:*` |
//! | `GET /v1/query/{view}/…` (event-path issue) | `queries:<view>` | `queries:*` |

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloudlysis_runtime::metrics::names;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Shortest accepted signing secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// Token claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject (user or service).
    pub sub: String,
    /// Tenant the token acts for.
    pub tenant: String,
    /// Rights, e.g. `commands:account`, `commands:*`.
    #[serde(default)]
    pub rights: Vec<String>,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

/// Authentication failed or a token could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    #[error("missing bearer token")]
    Missing,
    /// Expired.
    #[error("token expired")]
    Expired,
    /// Bad signature, malformed, wrong algorithm or missing claims.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The identity provider's keys are not loaded yet (`gateway.jwks_url` not fetched): the
    /// token's validity is not known.
    #[error("{0}")]
    KeysUnavailable(String),
    /// The secret is too short.
    #[error("signing secret is {0} bytes; at least {MIN_SECRET_LEN} are required")]
    WeakSecret(usize),
}

/// Signs and verifies tokens with one HS256 secret.
#[derive(Clone)]
pub struct Authenticator {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    oidc: Option<std::sync::Arc<crate::oidc::Oidc>>,
    verified: Arc<VerifiedTokens>,
}

/// `cloudlysis_gateway_token_cache_total` `[hit, miss]`, resolved once.
static TOKEN_CACHE_COUNTERS: std::sync::LazyLock<[metrics::Counter; 2]> =
    std::sync::LazyLock::new(|| {
        ["hit", "miss"]
            .map(|outcome| metrics::counter!(names::GATEWAY_TOKEN_CACHE, "outcome" => outcome))
    });

/// Most HS256 tokens remembered as verified; when full, the cache starts over.
pub const MAX_VERIFIED_TOKENS: usize = 8192;

/// HS256 tokens that verified, with their claims, so a client that sends one token with every
/// request pays for its signature check once per token, not once per request (and a refusal at
/// admission costs a lookup). Only tokens signed with the Gateway's own secret — fixed for the
/// process's life — are remembered; an entry is used only while its `exp` lies ahead, after
/// which the token goes through the full check again (and is refused as expired). Bounded by
/// [`MAX_VERIFIED_TOKENS`]; `cloudlysis_gateway_token_cache_total{outcome}` counts hits and
/// misses. Keyed with foldhash (seeded per process), which hashes a token several times faster
/// than SipHash; only verified tokens are inserted.
#[derive(Default)]
struct VerifiedTokens(Mutex<HashMap<Box<str>, Arc<Claims>, foldhash::fast::RandomState>>);

impl VerifiedTokens {
    fn get(&self, token: &str, now: u64) -> Option<Arc<Claims>> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let hit = map.get(token).filter(|c| c.exp > now).cloned();
        TOKEN_CACHE_COUNTERS[usize::from(hit.is_none())].increment(1);
        hit
    }

    fn put(&self, token: &str, claims: &Arc<Claims>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_VERIFIED_TOKENS {
            map.clear();
        }
        map.insert(token.into(), claims.clone());
    }
}

/// The claims the admission layer verified for a request, passed on in the request's
/// extensions so that its handler does not verify the token a second time.
#[derive(Clone, Debug)]
pub(crate) struct Verified(pub(crate) Arc<Claims>);

/// The claims the admission layer verified for this request, if it did (an extractor for the
/// API handlers: they authenticate with these instead of verifying the token again).
pub(crate) struct Admitted(pub(crate) Option<Verified>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Admitted {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<Verified>().cloned()))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator(HS256)")
    }
}

impl Authenticator {
    /// An authenticator for `secret` (at least [`MIN_SECRET_LEN`] bytes).
    pub fn new(secret: &[u8]) -> Result<Self, AuthError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(AuthError::WeakSecret(secret.len()));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        // A token is not accepted before its `nbf` (RFC 7519 4.1.5), when it has one.
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            oidc: None,
            verified: Arc::default(),
        })
    }

    /// Also accepts RS256 / ES256 tokens of the identity provider of `settings` (when its
    /// `jwks_file` or `jwks_url` is set; a URL is fetched in the background).
    pub fn with_oidc(mut self, settings: crate::oidc::OidcSettings) -> Result<Self, AuthError> {
        if settings.jwks_file.is_some() || settings.jwks_url.is_some() {
            self.oidc = Some(std::sync::Arc::new(crate::oidc::Oidc::new(settings)?));
        }
        Ok(self)
    }

    /// Whether the identity provider's keys are loaded (always, without one), or why not.
    pub fn keys_loaded(&self) -> Result<(), String> {
        self.oidc.as_ref().map_or(Ok(()), |o| o.loaded())
    }

    /// Mints a token for `tenant` with `rights`, valid for `ttl`.
    pub fn mint(
        &self,
        subject: &str,
        tenant: &str,
        rights: &[String],
        ttl: Duration,
    ) -> Result<String, AuthError> {
        if subject.trim().is_empty() {
            return Err(AuthError::Invalid(NO_SUBJECT.into()));
        }
        if ttl > MAX_TOKEN_TTL {
            return Err(AuthError::Invalid(format!(
                "a token may live at most {}d, not {}s",
                MAX_TOKEN_TTL.as_secs() / 86_400,
                ttl.as_secs()
            )));
        }
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_add(ttl.as_secs());
        let claims = Claims {
            sub: subject.to_string(),
            tenant: tenant.to_string(),
            rights: rights.to_vec(),
            exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// Verifies an `Authorization` header value (`Bearer <jwt>`). The claims are shared: a
    /// remembered token's are handed out without a copy.
    pub fn verify(&self, authorization: Option<&str>) -> Result<Arc<Claims>, AuthError> {
        let token = authorization
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        if let Some(claims) = self.verified.get(token, unix_now()) {
            return Ok(claims);
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        match (header.alg, &self.oidc) {
            (Algorithm::HS256, _) => {}
            (Algorithm::RS256 | Algorithm::ES256, Some(oidc)) => {
                return oidc.verify(token, &header).map(Arc::new);
            }
            (Algorithm::RS256 | Algorithm::ES256, None) => {
                return Err(AuthError::Invalid(format!(
                    "{:?} tokens need an identity provider's keys (gateway.jwks_file or gateway.jwks_url)",
                    header.alg
                )));
            }
            (other, _) => {
                return Err(AuthError::Invalid(format!(
                    "{other:?} tokens are not accepted (HS256, RS256, ES256 are)"
                )));
            }
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| token_error(&e))?;
        if data.claims.sub.trim().is_empty() {
            return Err(AuthError::Invalid(NO_SUBJECT.into()));
        }
        let claims = Arc::new(data.claims);
        self.verified.put(token, &claims);
        Ok(claims)
    }
}

/// Why a token whose `sub` is empty is refused (minted or presented).
pub(crate) const NO_SUBJECT: &str =
    "the token names no subject (`sub` is empty): every call is made, and audited, as someone";

/// What a token that did not verify means for its caller (the HS256 and provider paths alike).
pub(crate) fn token_error(e: &jsonwebtoken::errors::Error) -> AuthError {
    match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
        jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
            AuthError::Invalid("token not valid yet (its `nbf` lies ahead)".into())
        }
        _ => AuthError::Invalid(e.to_string()),
    }
}

/// True when `rights` grant `<scope>:<name>`: exactly, or through `<scope>:*`. A name may carry
/// a qualifier (`transfer:operate`); `*` then stands for its first part only, so `workflows:*`
/// grants `workflows:transfer` but not `workflows:transfer:operate`, which needs
/// `workflows:transfer:operate` or `workflows:*:operate`.
pub fn allows(rights: &[String], scope: &str, name: &str) -> bool {
    let (base, qualifier) = match name.split_once(':') {
        Some((b, q)) => (b, Some(q)),
        None => (name, None),
    };
    rights.iter().any(|r| {
        let Some((s, n)) = r.split_once(':') else {
            return false;
        };
        if s != scope {
            return false;
        }
        let (n_base, n_qualifier) = match n.split_once(':') {
            Some((b, q)) => (b, Some(q)),
            None => (n, None),
        };
        (n_base == base || n_base == "*") && n_qualifier == qualifier
    })
}

/// The longest a minted token may live (`cloudlysis token --ttl`): ten years.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(3650 * 86_400);

/// Parses a TTL such as `90s`, `15m`, `1h`, `7d` (a bare number is seconds).
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 90s, 15m, 1h, 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => {
            return Err(format!(
                "invalid duration unit {unit:?} in {text:?}: use s, m, h or d"
            ));
        }
    };
    if secs == 0 {
        return Err("duration must be greater than 0".into());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// A token whose `nbf` (not before) lies ahead is refused, and not remembered; one whose
    /// `nbf` has passed is accepted. (Found by using the platform: a token with
    /// `"nbf": 9999999990` committed a command.)
    #[test]
    fn a_token_is_not_accepted_before_its_nbf() {
        let a = Authenticator::new(SECRET).unwrap();
        let sign = |nbf: u64| {
            let claims = serde_json::json!({
                "sub": "x", "tenant": "acme", "rights": ["commands:*"],
                "exp": unix_now() + 600, "nbf": nbf,
            });
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap()
        };
        let early = sign(unix_now() + 300);
        match a.verify(Some(&format!("Bearer {early}"))) {
            Err(AuthError::Invalid(m)) => assert!(m.contains("nbf"), "{m}"),
            other => panic!("a token before its nbf: {other:?}"),
        }
        assert!(
            a.verified.get(&early, unix_now()).is_none(),
            "not remembered"
        );
        let due = sign(unix_now() - 1);
        assert!(a.verify(Some(&format!("Bearer {due}"))).is_ok());
    }

    /// A token whose `sub` is empty is refused, presented or minted: every call is audited as
    /// someone. (Found by using the platform: `cloudlysis token --subject ''` minted one, the
    /// Gateway accepted it and the audit trail said `actor: unknown`.)
    #[test]
    fn a_token_without_a_subject_is_refused() {
        let a = Authenticator::new(SECRET).unwrap();
        for sub in ["", "  "] {
            let claims = serde_json::json!({
                "sub": sub, "tenant": "acme", "rights": ["commands:*"], "exp": unix_now() + 600,
            });
            let token = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap();
            match a.verify(Some(&format!("Bearer {token}"))) {
                Err(AuthError::Invalid(m)) => assert!(m.contains("names no subject"), "{m}"),
                other => panic!("sub {sub:?}: {other:?}"),
            }
            let minted = a.mint(sub, "acme", &[], Duration::from_secs(60));
            assert!(matches!(minted, Err(AuthError::Invalid(_))), "{minted:?}");
        }
    }

    /// A verified token is remembered (its signature is not checked again), but only while its
    /// `exp` lies ahead: a remembered token past its expiry is refused as expired, exactly as
    /// without the cache; a token signed with another secret is never taken from the cache.
    #[test]
    fn a_remembered_token_is_not_checked_again_and_still_expires() {
        let a = Authenticator::new(SECRET).unwrap();
        let t = a
            .mint(
                "ops",
                "acme",
                &["commands:*".into()],
                Duration::from_secs(60),
            )
            .unwrap();
        let first = a.verify(Some(&format!("Bearer {t}"))).unwrap();
        assert!(a.verified.get(&t, unix_now()).is_some(), "remembered");
        assert_eq!(a.verify(Some(&format!("Bearer {t}"))).unwrap(), first);

        // A token whose exp has passed, planted in the cache as if it had been verified.
        let past = Claims {
            exp: unix_now() - 10,
            ..(*first).clone()
        };
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &past,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        a.verified.put(&expired, &Arc::new(past));
        assert_eq!(
            a.verify(Some(&format!("Bearer {expired}"))),
            Err(AuthError::Expired)
        );

        // Another Gateway's cache knows nothing of this one's tokens.
        let other = Authenticator::new(b"another-secret-another-secret-another").unwrap();
        assert!(matches!(
            other.verify(Some(&format!("Bearer {t}"))),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn minted_tokens_verify_with_their_claims() {
        let a = Authenticator::new(SECRET).unwrap();
        let t = a
            .mint(
                "ops",
                "acme",
                &["commands:*".into()],
                Duration::from_secs(60),
            )
            .unwrap();
        let c = a.verify(Some(&format!("Bearer {t}"))).unwrap();
        assert_eq!((c.sub.as_str(), c.tenant.as_str()), ("ops", "acme"));
        assert_eq!(c.rights, ["commands:*"]);
    }

    #[test]
    fn missing_malformed_and_foreign_tokens_are_refused() {
        let a = Authenticator::new(SECRET).unwrap();
        assert_eq!(a.verify(None), Err(AuthError::Missing));
        assert_eq!(a.verify(Some("Basic abc")), Err(AuthError::Missing));
        assert!(matches!(
            a.verify(Some("Bearer not.a.jwt")),
            Err(AuthError::Invalid(_))
        ));
        let other = Authenticator::new(b"another-secret-another-secret-xx").unwrap();
        let t = other
            .mint("x", "acme", &[], Duration::from_secs(60))
            .unwrap();
        assert!(matches!(
            a.verify(Some(&format!("Bearer {t}"))),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn a_short_secret_is_refused() {
        assert_eq!(
            Authenticator::new(b"short").unwrap_err(),
            AuthError::WeakSecret(5)
        );
    }

    #[test]
    fn rights_are_deny_by_default() {
        let r = vec!["commands:account".to_string(), "queries:*".to_string()];
        assert!(allows(&r, "commands", "account"));
        assert!(!allows(&r, "commands", "order"));
        assert!(allows(&r, "queries", "balances"));
        assert!(!allows(&[], "commands", "account"));
        assert!(!allows(&["commands".into()], "commands", "account"));
        assert!(!allows(&["*".into()], "commands", "account"));
        let w = vec!["workflows:*".to_string()];
        assert!(allows(&w, "workflows", "transfer"));
        assert!(!allows(&w, "workflows", "transfer:operate"));
        let op = vec!["workflows:transfer:operate".to_string()];
        assert!(allows(&op, "workflows", "transfer:operate"));
        assert!(!allows(&op, "workflows", "transfer"));
        assert!(!allows(&op, "workflows", "other:operate"));
        assert!(allows(
            &["workflows:*:operate".into()],
            "workflows",
            "other:operate"
        ));
        assert!(allows(&["runner:admin".into()], "runner", "admin"));
    }

    #[test]
    fn ttls_parse_with_units() {
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("").is_err());
    }

    #[test]
    fn a_token_may_live_ten_years_and_no_longer() {
        let auth = Authenticator::new(b"a-test-secret-a-test-secret-a-test").unwrap();
        let rights = ["commands:*".to_string()];
        assert!(auth.mint("s", "acme", &rights, MAX_TOKEN_TTL).is_ok());
        let refused = auth
            .mint("s", "acme", &rights, MAX_TOKEN_TTL + Duration::from_secs(1))
            .unwrap_err();
        assert!(refused.to_string().contains("at most 3650d"), "{refused}");
    }
}
