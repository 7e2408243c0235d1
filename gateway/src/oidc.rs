//! Tokens from an identity provider: RS256 and ES256 JWTs verified against a JWKS file, with
//! the issuer and audience checked and the tenant and rights read from configurable claims.
//!
//! | setting | means |
//! |---|---|
//! | `gateway.jwks_file` | the provider's JWK set (JSON), kept fresh by whatever deploys it |
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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::auth::{AuthError, Claims};

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

/// What identity-provider tokens must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    /// The JWK set; `None`: no identity provider (HS256 tokens only).
    pub jwks_file: Option<PathBuf>,
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
            issuer: String::new(),
            audience: String::new(),
            tenant_claim: "tenant".into(),
            rights_claim: "rights".into(),
        }
    }
}

type Keys = HashMap<String, (Algorithm, DecodingKey)>;

struct State {
    keys: Keys,
    modified: Option<SystemTime>,
    checked: Instant,
}

/// A verifier of identity-provider tokens.
pub struct Oidc {
    settings: OidcSettings,
    path: PathBuf,
    state: RwLock<State>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("jwks_file", &self.path)
            .field("issuer", &self.settings.issuer)
            .finish()
    }
}

/// Reads and filters a JWK set.
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
    let set: JwkSet = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not a JWK set: {e}", path.display()))?;
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
            return Err(format!(
                "{} holds more than {MAX_KEYS} keys",
                path.display()
            ));
        }
    }
    if keys.is_empty() {
        return Err(format!(
            "{} holds no RS256 or ES256 key with a kid",
            path.display()
        ));
    }
    Ok((keys, meta.modified().ok()))
}

impl Oidc {
    /// Loads the set of `settings.jwks_file` (which must be set).
    pub fn new(settings: OidcSettings) -> Result<Self, AuthError> {
        let path = settings
            .jwks_file
            .clone()
            .ok_or_else(|| AuthError::Invalid("no JWKS file".into()))?;
        let (keys, modified) = load(&path).map_err(AuthError::Invalid)?;
        Ok(Self {
            settings,
            path,
            state: RwLock::new(State {
                keys,
                modified,
                checked: Instant::now(),
            }),
        })
    }

    /// Re-reads the file when it changed (see the module docs).
    fn refresh(&self, unknown_kid: bool) {
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
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if modified.is_some() && modified == s.modified {
            return;
        }
        match load(&self.path) {
            Ok((keys, modified)) => {
                tracing::info!(keys = keys.len(), file = %self.path.display(), "JWKS reloaded");
                s.keys = keys;
                s.modified = modified;
            }
            Err(e) => tracing::warn!(error = %e, "JWKS reload failed; the previous keys stay"),
        }
    }

    fn key(&self, kid: &str) -> Option<(Algorithm, DecodingKey)> {
        self.refresh(false);
        let found = self
            .state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys
            .get(kid)
            .cloned();
        found.or_else(|| {
            self.refresh(true);
            self.state
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .keys
                .get(kid)
                .cloned()
        })
    }

    /// Verifies an RS256 / ES256 token and maps its claims.
    pub fn verify(&self, token: &str, header: &jsonwebtoken::Header) -> Result<Claims, AuthError> {
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| AuthError::Invalid("the token names no key (kid)".into()))?;
        let (alg, key) = self
            .key(kid)
            .ok_or_else(|| AuthError::Invalid(format!("unknown signing key `{kid}`")))?;
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
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            },
        )?;
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
        Ok(Claims {
            sub: text("sub").unwrap_or_default(),
            tenant,
            rights,
            exp: c.get("exp").and_then(|v| v.as_u64()).unwrap_or(0),
        })
    }
}
