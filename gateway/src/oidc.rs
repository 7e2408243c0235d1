//! Tokens from an identity provider: RS256 and ES256 JWTs verified against a JWKS — a file, or
//! fetched from the provider's `jwks_uri` — with the issuer and audience checked and the tenant
//! and rights read from configurable claims.
//!
//! | setting | means |
//! |---|---|
//! | `gateway.jwks_file` | the provider's JWK set (JSON), kept fresh by whatever deploys it |
//! | `gateway.jwks_url` | where to fetch the set (`https://`; `http://` only to a loopback host) |
//! | `gateway.jwt_issuer` | the `iss` every token must carry (required with a JWKS) |
//! | `gateway.jwt_audience` | an `aud` every token must carry (required with a JWKS) |
//! | `gateway.tenant_claim` | the claim holding the tenant (default `tenant`) |
//! | `gateway.rights_claim` | the claim holding the rights: an array of strings or one space-separated string such as OAuth's `scope` (default `rights`) |
//!
//! The set is read at start (a missing or bad file refuses the start, naming the setting), then
//! re-read when the file changes — looked at every [`RECHECK`], or at once (at most every
//! [`UNKNOWN_KID_RECHECK`]) when a token names a key it does not know, so a key the provider
//! just added works without a restart. A set that fails to load later keeps the last good one.
//! Bounded: at most [`MAX_JWKS_BYTES`] and [`MAX_KEYS`] keys; only RSA keys (RS256) and P-256
//! keys (ES256) with a `kid` are used — symmetric (`oct`) keys in a JWKS are ignored.
//!
//! A URL is fetched by a background task ([`crate::oidc::jwks_url`]): at start, then every
//! [`URL_REFRESH`], and at once (at most every [`URL_UNKNOWN_KID_REFETCH`]) when a token names a
//! key it does not know — that token is refused (401), the next one signed with the new key
//! passes. Each fetch has a deadline of [`URL_FETCH_TIMEOUT`]; a failed fetch keeps the last
//! good set and is retried with backoff (1 s doubling to [`URL_MAX_BACKOFF`]). Until the first
//! fetch succeeds, provider tokens are answered 503 with `Retry-After` (their validity is not
//! known yet) and the Gateway's `/ready` says why. `cloudlysis_gateway_jwks_fetches_total{result}`
//! counts fetches.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::auth::{AuthError, Claims};

pub mod jwks_url;

/// Largest JWKS file read.
pub const MAX_JWKS_BYTES: u64 = 1 << 20;
/// Most keys kept from a set.
pub const MAX_KEYS: usize = 64;
/// How often the file is looked at for changes.
pub const RECHECK: Duration = Duration::from_secs(30);
/// How often an unknown `kid` may make the file be looked at.
pub const UNKNOWN_KID_RECHECK: Duration = Duration::from_secs(1);
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// How often a JWKS URL is fetched again.
pub const URL_REFRESH: Duration = Duration::from_secs(300);
/// How often an unknown `kid` may make the URL be fetched again.
pub const URL_UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(10);
/// Deadline of one fetch of the URL.
pub const URL_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between failed fetches.
pub const URL_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What identity-provider tokens must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    /// The JWK set; `None` (and no `jwks_url`): no identity provider (HS256 tokens only).
    pub jwks_file: Option<PathBuf>,
    /// Where to fetch the JWK set (instead of a file).
    pub jwks_url: Option<String>,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// The claim holding the tenant.
    pub tenant_claim: String,
    /// The claim holding the rights.
    pub rights_claim: String,
}

impl Default for OidcSettings {
    fn default() -> Self {
        Self {
            jwks_file: None,
            jwks_url: None,
            issuer: String::new(),
            audience: String::new(),
            tenant_claim: "tenant".into(),
            rights_claim: "rights".into(),
        }
    }
}

pub(crate) type Keys = HashMap<String, (Algorithm, DecodingKey)>;

pub(crate) struct State {
    keys: Keys,
    modified: Option<SystemTime>,
    checked: Instant,
    /// Whether a set was ever loaded (a URL's first fetch may still be outstanding).
    loaded: bool,
    /// Why the last fetch of a URL failed.
    last_error: Option<String>,
}

/// Where the set comes from.
enum Source {
    File(PathBuf),
    Url(jwks_url::Fetcher),
}

/// A verifier of identity-provider tokens.
pub struct Oidc {
    settings: OidcSettings,
    source: Source,
    state: Arc<RwLock<State>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("jwks_file", &self.settings.jwks_file)
            .field("jwks_url", &self.settings.jwks_url)
            .field("issuer", &self.settings.issuer)
            .finish()
    }
}

/// Filters a JWK set read from `origin`.
pub(crate) fn parse(text: &[u8], origin: &str) -> Result<Keys, String> {
    let set: JwkSet =
        serde_json::from_slice(text).map_err(|e| format!("{origin} is not a JWK set: {e}"))?;
    let mut keys = Keys::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            _ => continue,
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid}: {e}"))?;
        keys.insert(kid, (alg, key));
        if keys.len() > MAX_KEYS {
            return Err(format!("{origin} holds more than {MAX_KEYS} keys"));
        }
    }
    if keys.is_empty() {
        return Err(format!("{origin} holds no RS256 or ES256 key with a kid"));
    }
    Ok(keys)
}

/// Reads and filters a JWK set file.
fn load(path: &Path) -> Result<(Keys, Option<SystemTime>), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_JWKS_BYTES {
        return Err(format!(
            "{} is {} bytes; at most {MAX_JWKS_BYTES} are read",
            path.display(),
            meta.len()
        ));
    }
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let keys = parse(&text, &path.display().to_string())?;
    Ok((keys, meta.modified().ok()))
}

impl Oidc {
    /// Loads the set of `settings.jwks_file`, or starts fetching `settings.jwks_url` (one of
    /// them must be set; a URL needs a Tokio runtime).
    pub fn new(settings: OidcSettings) -> Result<Self, AuthError> {
        let state = Arc::new(RwLock::new(State {
            keys: Keys::new(),
            modified: None,
            checked: Instant::now(),
            loaded: false,
            last_error: None,
        }));
        let source = match (&settings.jwks_file, &settings.jwks_url) {
            (Some(path), None) => {
                let (keys, modified) = load(path).map_err(AuthError::Invalid)?;
                let mut s = state.write().unwrap_or_else(|p| p.into_inner());
                (s.keys, s.modified, s.loaded) = (keys, modified, true);
                Source::File(path.clone())
            }
            (None, Some(url)) => {
                Source::Url(jwks_url::Fetcher::start(url, Arc::downgrade(&state))?)
            }
            (Some(_), Some(_)) => {
                return Err(AuthError::Invalid(
                    "set gateway.jwks_file or gateway.jwks_url, not both".into(),
                ));
            }
            (None, None) => return Err(AuthError::Invalid("no JWKS file or URL".into())),
        };
        Ok(Self {
            settings,
            source,
            state,
        })
    }

    /// Whether a key set is loaded, or why not (for readiness).
    pub fn loaded(&self) -> Result<(), String> {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        if s.loaded {
            return Ok(());
        }
        Err(format!(
            "the identity provider's keys are not loaded yet from gateway.jwks_url{}",
            s.last_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ))
    }

    /// Re-reads the file when it changed, or asks for a fetch of the URL (see the module docs).
    fn refresh(&self, unknown_kid: bool) {
        let path = match &self.source {
            Source::File(path) => path,
            Source::Url(fetcher) => {
                if unknown_kid {
                    fetcher.nudge();
                }
                return;
            }
        };
        let due = {
            let s = self.state.read().unwrap_or_else(|p| p.into_inner());
            let age = s.checked.elapsed();
            age >= RECHECK || (unknown_kid && age >= UNKNOWN_KID_RECHECK)
        };
        if !due {
            return;
        }
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        s.checked = Instant::now();
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if modified.is_some() && modified == s.modified {
            return;
        }
        match load(path) {
            Ok((keys, modified)) => {
                tracing::info!(keys = keys.len(), file = %path.display(), "JWKS reloaded");
                s.keys = keys;
                s.modified = modified;
            }
            Err(e) => tracing::warn!(error = %e, "JWKS reload failed; the previous keys stay"),
        }
    }

    fn key(&self, kid: &str) -> Result<(Algorithm, DecodingKey), AuthError> {
        self.loaded().map_err(AuthError::KeysUnavailable)?;
        self.refresh(false);
        let get = || {
            self.state
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .keys
                .get(kid)
                .cloned()
        };
        get()
            .or_else(|| {
                self.refresh(true);
                get()
            })
            .ok_or_else(|| AuthError::Invalid(format!("unknown signing key `{kid}`")))
    }

    /// Verifies an RS256 / ES256 token and maps its claims.
    pub fn verify(&self, token: &str, header: &jsonwebtoken::Header) -> Result<Claims, AuthError> {
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| AuthError::Invalid("the token names no key (kid)".into()))?;
        let (alg, key) = self.key(kid)?;
        if alg != header.alg {
            return Err(AuthError::Invalid(format!(
                "key `{kid}` signs {alg:?}, not {:?}",
                header.alg
            )));
        }
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map_err(|e| crate::auth::token_error(&e))?;
        let c = data.claims;
        let text = |name: &str| c.get(name).and_then(|v| v.as_str()).map(str::to_string);
        let tenant = text(&self.settings.tenant_claim).ok_or_else(|| {
            AuthError::Invalid(format!(
                "the token has no tenant claim `{}`",
                self.settings.tenant_claim
            ))
        })?;
        let rights = match c.get(&self.settings.rights_claim) {
            None => Vec::new(),
            Some(serde_json::Value::String(s)) => {
                s.split_whitespace().map(str::to_string).collect()
            }
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(_) => {
                return Err(AuthError::Invalid(format!(
                    "the rights claim `{}` is neither a string nor an array of strings",
                    self.settings.rights_claim
                )));
            }
        };
        let sub = text("sub")
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| AuthError::Invalid(crate::auth::NO_SUBJECT.into()))?;
        Ok(Claims {
            sub,
            tenant,
            rights,
            exp: c.get("exp").and_then(|v| v.as_u64()).unwrap_or(0),
        })
    }
}
