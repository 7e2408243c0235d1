//! Node credentials: who may call a node, for which tenant, with which rights.
//!
//! A node serves its gRPC services only to callers that present a **node credential** in the
//! `x-cloudlysis-credential` metadata entry: an HS256 JWT signed with the deployment's node
//! secret (`node.secret`), audience `cloudlysis-node`, carrying the subject and tenant of the
//! original caller and its rights, and short-lived (the signer issues [`DEFAULT_TTL`]; a node
//! refuses one that is expired or that claims to live longer than [`MAX_TTL`]). The Gateway signs
//! one per node call from the bearer token it verified; a runner signs one for the commands its
//! effects send; the CLI signs one for admin verbs.
//!
//! A node verifies it in one tower layer ([`NodeKeys::layer`]) in front of every service, before
//! any handler runs, so a service added later is refused by default:
//!
//! | refusal | gRPC status |
//! |---|---|
//! | no credential, malformed, bad signature, wrong audience, expired, lifetime over [`MAX_TTL`] | `UNAUTHENTICATED` |
//! | `x-tenant-id` differing from the credential's tenant | `PERMISSION_DENIED` |
//! | the method's right missing ([`required_right`]) | `PERMISSION_DENIED` |
//!
//! Only gRPC health (`grpc.health.v1`) and server reflection (`grpc.reflection.*`) answer
//! without one. After the layer, `x-tenant-id` and `x-actor` hold the credential's tenant and
//! subject (whatever the caller sent), so the tenant a node acts for is always the verified one;
//! the verified [`Caller`] is in the request's extensions for handlers that check finer rights
//! (a command's aggregate type, a query's view, a workflow's name).
//!
//! Rotation: a node verifies with the current secret and, while one is set,
//! `node.secret_previous`; signers use the current one. Roll out a new secret as *previous = old,
//! secret = new* on every node first, then on the signers, then drop the previous one.
//!
//! ```
//! use cloudlysis_runtime::credential::NodeKeys;
//!
//! let keys = NodeKeys::new(b"0123456789abcdef0123456789abcdef").unwrap();
//! let token = keys.sign("ops@acme", "acme", &["commands:*".into()]).unwrap();
//! let caller = keys.verify(&token).unwrap();
//! assert_eq!(caller.tenant.as_str(), "acme");
//! assert!(caller.allows("commands", "account"));
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::Setting;
use crate::context::{TenantId, header_names, headers};
use crate::metrics::names;

/// Audience of every node credential.
pub const AUDIENCE: &str = "cloudlysis-node";
/// Lifetime of the credentials [`NodeKeys::sign`] issues.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Longest lifetime (`exp - iat`) a node accepts.
pub const MAX_TTL: Duration = Duration::from_secs(300);
/// Clock skew tolerated between signer and node, in seconds.
pub const LEEWAY_SECS: u64 = 5;
/// Shortest accepted node secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;
/// The tenant of credentials that act for no tenant (probes, admin verbs from the CLI).
pub const SYSTEM_TENANT: &str = "_system";

/// `node.secret`: the HS256 secret node credentials are signed and verified with.
pub const NODE_SECRET: Setting = Setting {
    key: "node.secret",
    env: "CLOUDLYSIS_NODE_SECRET",
    flag: "",
    doc: "secret (≥ 32 bytes) that signs and verifies node credentials; required (dev: a built-in dev secret)",
};

/// `node.secret_previous`: a second secret nodes still accept while a new one is rolled out.
pub const NODE_SECRET_PREVIOUS: Setting = Setting {
    key: "node.secret_previous",
    env: "CLOUDLYSIS_NODE_SECRET_PREVIOUS",
    flag: "",
    doc: "the previous node secret, still accepted by nodes during a rotation (never used to sign)",
};

/// The claims of a node credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Claims {
    aud: String,
    sub: String,
    tenant: String,
    #[serde(default)]
    rights: Vec<String>,
    iat: u64,
    exp: u64,
}

/// Why a credential was not issued or not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// No `x-cloudlysis-credential` entry.
    #[error("missing node credential `{}`", headers::NODE_CREDENTIAL)]
    Missing,
    /// Past its expiry.
    #[error("node credential expired")]
    Expired,
    /// Bad signature, malformed, wrong audience or claims.
    #[error("invalid node credential: {0}")]
    Invalid(String),
    /// `exp - iat` is longer than [`MAX_TTL`].
    #[error("node credential lives {0} s; at most {max} s are accepted", max = MAX_TTL.as_secs())]
    TooLong(u64),
    /// The secret is too short.
    #[error("node secret is {0} bytes; at least {MIN_SECRET_LEN} are required")]
    WeakSecret(usize),
    /// The caller named a tenant other than the credential's.
    #[error("x-tenant-id `{sent}` does not match the credential's tenant")]
    TenantMismatch {
        /// What the caller sent.
        sent: String,
    },
    /// The credential lacks the right the method needs.
    #[error("the node credential lacks the right `{0}`")]
    Forbidden(String),
}

impl CredentialError {
    /// The gRPC status a node answers with.
    pub fn to_status(&self) -> tonic::Status {
        match self {
            Self::TenantMismatch { .. } | Self::Forbidden(_) => {
                tonic::Status::permission_denied(self.to_string())
            }
            Self::WeakSecret(_) => tonic::Status::internal(self.to_string()),
            _ => tonic::Status::unauthenticated(self.to_string()),
        }
    }

    /// Counts this refusal of a call to `path` ([`names::NODE_CALL_REJECTIONS`]), logs it, and
    /// gives the status the caller gets.
    pub fn refuse(&self, path: &str) -> tonic::Status {
        metrics::counter!(names::NODE_CALL_REJECTIONS, "reason" => self.reason()).increment(1);
        tracing::debug!(path = %path, error = %self, "node call refused");
        self.to_status()
    }

    /// The `reason` label of [`names::NODE_CALL_REJECTIONS`].
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Expired => "expired",
            Self::Invalid(_) | Self::TooLong(_) | Self::WeakSecret(_) => "invalid",
            Self::TenantMismatch { .. } => "tenant_mismatch",
            Self::Forbidden(_) => "forbidden",
        }
    }
}

/// A verified caller: what a node acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who asked (the original caller's subject, or the signing component's name).
    pub subject: String,
    /// The tenant the node acts for.
    pub tenant: TenantId,
    /// The original caller's rights.
    pub rights: Vec<String>,
}

impl Caller {
    /// True when the rights grant `<scope>:<name>` (see [`allows`]).
    pub fn allows(&self, scope: &str, name: &str) -> bool {
        allows(&self.rights, scope, name)
    }

    /// `PERMISSION_DENIED` unless the rights grant `<scope>:<name>`.
    pub fn require(&self, scope: &str, name: &str) -> Result<(), tonic::Status> {
        if self.allows(scope, name) {
            Ok(())
        } else {
            let e = CredentialError::Forbidden(format!("{scope}:{name}"));
            metrics::counter!(names::NODE_CALL_REJECTIONS, "reason" => e.reason()).increment(1);
            Err(e.to_status())
        }
    }

    /// The verified caller of `request` (put there by the node's credential layer), or
    /// `UNAUTHENTICATED` when the request did not pass it.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<&Caller, tonic::Status> {
        request
            .extensions()
            .get::<Caller>()
            .ok_or_else(|| CredentialError::Missing.to_status())
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

/// What a gRPC method needs, checked by the credential layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodRight {
    /// No credential at all (health, reflection).
    Open,
    /// This right (`scope`, `name`).
    Right(&'static str, &'static str),
    /// Some right of this scope; the handler checks the exact name (aggregate type, view,
    /// workflow) from the request body.
    ScopeChecked(&'static str),
    /// A method no right maps to: refused.
    Unknown,
}

/// The right a gRPC method (`/package.Service/Method`) needs. Deny by default: a method not
/// listed here is refused.
pub fn required_right(path: &str) -> MethodRight {
    let path = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    if service == "grpc.health.v1.Health" || service.starts_with("grpc.reflection.") {
        return MethodRight::Open;
    }
    match (service, method) {
        ("aggregate.gateway.v1.CommandService", _) => MethodRight::ScopeChecked("commands"),
        ("projection.gateway.v1.QueryService", _) => MethodRight::ScopeChecked("queries"),
        ("runner.gateway.v1.WorkflowService", _) => MethodRight::ScopeChecked("workflows"),
        ("runner.admin.v1.RunnerAdmin", _) => MethodRight::Right("runner", "admin"),
        ("node.admin.v1.NodeAdmin", "Describe")
        | ("projection.admin.v1.ProjectionAdmin", "DescribeViews")
        | ("ops.admin.v1.OpsAdmin", "ListPoison" | "GetPoison" | "ListAudit") => {
            MethodRight::Right("admin", "read")
        }
        ("projection.admin.v1.ProjectionAdmin", "RebuildView" | "CancelRebuild")
        | ("ops.admin.v1.OpsAdmin", "RedrivePoison" | "PurgePoison") => {
            MethodRight::Right("admin", "operate")
        }
        _ => MethodRight::Unknown,
    }
}

/// The secrets that sign and verify node credentials.
///
/// Signing and verifying an HS256 JWT (JSON, base64, HMAC) is a few per cent of a command's CPU,
/// paid on both sides of every node call for the same few callers. So the keys remember, each
/// up to [`MAX_REMEMBERED`] entries (when full, they start over):
///
/// * credentials they **verified**, with the caller: a credential seen again is not decoded
///   again while its `exp` (plus the skew) lies ahead — afterwards it goes through the full
///   check and is refused as expired;
/// * credentials they **signed**, by subject, tenant and rights: one is handed out again while
///   less than half of its lifetime has passed, so a node always gets one with at least half of
///   [`DEFAULT_TTL`] ahead.
///
/// `cloudlysis_node_credential_cache_total{cache, outcome}` counts the look-ups. Clones share
/// the caches; [`NodeKeys::with_previous`] starts a fresh one.
#[derive(Clone)]
pub struct NodeKeys {
    encoding: EncodingKey,
    decoding: Vec<DecodingKey>,
    validation: Validation,
    ttl: Duration,
    verified: Arc<Remembered<Box<str>, (Caller, u64)>>,
    signed: Arc<Remembered<String, (Arc<str>, u64)>>,
}

/// A cache of [`NodeKeys`]: verified credentials with their caller and `exp`, or signed ones with
/// their issue time.
/// Keyed with foldhash, seeded per process: a credential is a few hundred bytes, which SipHash
/// (the standard map's) hashed for ≈ 2 % of a command's instructions; only verified or signed
/// credentials are ever inserted, so the weaker flooding resistance costs nothing here.
type Remembered<K, V> = Mutex<HashMap<K, V, foldhash::fast::RandomState>>;

/// Most credentials [`NodeKeys`] remembers as verified, and as signed.
pub const MAX_REMEMBERED: usize = 8192;

/// The key of a remembered signed credential: subject, tenant and rights, NUL-separated (none
/// of them holds a NUL: a header value cannot).
fn signed_key(subject: &str, tenant: &str, rights: &[String]) -> String {
    let mut key = String::with_capacity(subject.len() + tenant.len() + 16 * (rights.len() + 1));
    for part in [subject, tenant]
        .into_iter()
        .chain(rights.iter().map(String::as_str))
    {
        key.push_str(part);
        key.push('\0');
    }
    key
}

/// The four series of [`names::NODE_CREDENTIAL_CACHE`], resolved once: `[verified hit,
/// verified miss, signed hit, signed miss]`.
static CACHE_COUNTERS: std::sync::LazyLock<[metrics::Counter; 4]> = std::sync::LazyLock::new(
    || {
        let c = |cache: &'static str, outcome: &'static str| metrics::counter!(names::NODE_CREDENTIAL_CACHE, "cache" => cache, "outcome" => outcome);
        [
            c("verified", "hit"),
            c("verified", "miss"),
            c("signed", "hit"),
            c("signed", "miss"),
        ]
    },
);

fn cache_lookup(cache: &'static str, hit: bool) {
    let i = usize::from(cache == "signed") * 2 + usize::from(!hit);
    CACHE_COUNTERS[i].increment(1);
}

impl std::fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKeys(HS256, {} verifying)", self.decoding.len())
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl NodeKeys {
    /// Keys for `secret` (at least [`MIN_SECRET_LEN`] bytes).
    pub fn new(secret: &[u8]) -> Result<Self, CredentialError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(CredentialError::WeakSecret(secret.len()));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: vec![DecodingKey::from_secret(secret)],
            validation,
            ttl: DEFAULT_TTL,
            verified: Arc::default(),
            signed: Arc::default(),
        })
    }

    /// Also accepts credentials signed with `previous` (during a rotation).
    pub fn with_previous(mut self, previous: &[u8]) -> Result<Self, CredentialError> {
        if previous.len() < MIN_SECRET_LEN {
            return Err(CredentialError::WeakSecret(previous.len()));
        }
        self.decoding.push(DecodingKey::from_secret(previous));
        self.verified = Arc::default();
        Ok(self)
    }

    /// Keys from `node.secret` (and `node.secret_previous`); `dev_default` is used when no
    /// secret is configured (dev and tests only). The error names the setting.
    pub fn load(
        src: &crate::config::ConfigSource,
        dev_default: Option<&str>,
    ) -> Result<Self, crate::config::ConfigError> {
        use crate::config::{ConfigError, Origin};
        let invalid = |setting: &Setting, origin: Origin, reason: String| ConfigError::Invalid {
            setting: setting.key,
            origin,
            value: "<redacted>".into(),
            reason,
        };
        let keys = match src.raw(&NODE_SECRET, None) {
            Some((secret, origin)) => Self::new(secret.as_bytes())
                .map_err(|e| invalid(&NODE_SECRET, origin, e.to_string()))?,
            None => match dev_default {
                Some(s) => Self::new(s.as_bytes()).map_err(|e| {
                    invalid(&NODE_SECRET, Origin::Env(NODE_SECRET.env), e.to_string())
                })?,
                None => {
                    return Err(ConfigError::Missing {
                        setting: NODE_SECRET.key,
                        reason: format!(
                            "set {} (at least {MIN_SECRET_LEN} bytes; the same on every node, Gateway and CLI of the deployment)",
                            NODE_SECRET.env
                        ),
                    });
                }
            },
        };
        match src.raw(&NODE_SECRET_PREVIOUS, None) {
            Some((previous, origin)) if !previous.is_empty() => keys
                .with_previous(previous.as_bytes())
                .map_err(|e| invalid(&NODE_SECRET_PREVIOUS, origin, e.to_string())),
            _ => Ok(keys),
        }
    }

    /// A credential for `subject` acting for `tenant` with `rights`, valid for [`DEFAULT_TTL`]
    /// from its issue, with at least half of it ahead (a remembered one is handed out again
    /// until then; see [`NodeKeys`]).
    pub fn sign(
        &self,
        subject: &str,
        tenant: &str,
        rights: &[String],
    ) -> Result<String, CredentialError> {
        self.sign_shared(subject, tenant, rights)
            .map(|t| t.as_ref().to_owned())
    }

    /// [`NodeKeys::sign`], shared: the remembered credential itself.
    pub fn sign_shared(
        &self,
        subject: &str,
        tenant: &str,
        rights: &[String],
    ) -> Result<Arc<str>, CredentialError> {
        let now = now_secs();
        let half = self.ttl.as_secs() / 2;
        let key = signed_key(subject, tenant, rights);
        {
            let signed = self.signed.lock().unwrap_or_else(|p| p.into_inner());
            let hit = signed
                .get(&key)
                .filter(|(_, iat)| now < iat + half && *iat <= now)
                .map(|(token, _)| token.clone());
            cache_lookup("signed", hit.is_some());
            if let Some(token) = hit {
                return Ok(token);
            }
        }
        let token: Arc<str> = self
            .sign_at(subject, tenant, rights, now, now + self.ttl.as_secs())?
            .into();
        let mut signed = self.signed.lock().unwrap_or_else(|p| p.into_inner());
        if signed.len() >= MAX_REMEMBERED {
            signed.clear();
        }
        signed.insert(key, (token.clone(), now));
        Ok(token)
    }

    /// A credential with explicit issue and expiry times (Unix seconds); for tests of refusal.
    pub fn sign_at(
        &self,
        subject: &str,
        tenant: &str,
        rights: &[String],
        iat: u64,
        exp: u64,
    ) -> Result<String, CredentialError> {
        if subject.trim().is_empty() {
            return Err(CredentialError::Invalid(
                "the subject is empty: a credential names who calls (audit records name them)"
                    .into(),
            ));
        }
        let claims = Claims {
            aud: AUDIENCE.into(),
            sub: subject.into(),
            tenant: tenant.into(),
            rights: rights.to_vec(),
            iat,
            exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| CredentialError::Invalid(e.to_string()))
    }

    /// Puts a fresh credential for `subject`, `tenant` and `rights` into `metadata`.
    pub fn stamp(
        &self,
        metadata: &mut tonic::metadata::MetadataMap,
        subject: &str,
        tenant: &str,
        rights: &[String],
    ) -> Result<(), CredentialError> {
        let token = self.sign(subject, tenant, rights)?;
        let value = token
            .parse()
            .map_err(|_| CredentialError::Invalid("not ASCII".into()))?;
        metadata.insert(headers::NODE_CREDENTIAL, value);
        Ok(())
    }

    /// Verifies a credential (one verified before and not yet expired is not decoded again).
    pub fn verify(&self, token: &str) -> Result<Caller, CredentialError> {
        let now = now_secs();
        {
            let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            let hit = verified
                .get(token)
                .filter(|(_, exp)| now <= exp + LEEWAY_SECS)
                .map(|(caller, _)| caller.clone());
            cache_lookup("verified", hit.is_some());
            if let Some(caller) = hit {
                return Ok(caller);
            }
        }
        let (caller, exp) = self.verify_in_full(token)?;
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= MAX_REMEMBERED {
            verified.clear();
        }
        verified.insert(token.into(), (caller.clone(), exp));
        Ok(caller)
    }

    /// Decodes and checks a credential: the caller and the credential's `exp`.
    fn verify_in_full(&self, token: &str) -> Result<(Caller, u64), CredentialError> {
        let mut last = CredentialError::Missing;
        for key in &self.decoding {
            match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
                Ok(data) => {
                    let c = data.claims;
                    let lifetime = c.exp.saturating_sub(c.iat);
                    if lifetime > MAX_TTL.as_secs() {
                        return Err(CredentialError::TooLong(lifetime));
                    }
                    // Issued in the future (beyond the skew) or expiring later than a fresh
                    // credential could: a forged lifetime.
                    let now = now_secs();
                    if c.iat > now + LEEWAY_SECS || c.exp > now + MAX_TTL.as_secs() + LEEWAY_SECS {
                        return Err(CredentialError::TooLong(c.exp.saturating_sub(now)));
                    }
                    let tenant = TenantId::new(c.tenant)
                        .map_err(|e| CredentialError::Invalid(format!("tenant: {e}")))?;
                    if c.sub.trim().is_empty() {
                        return Err(CredentialError::Invalid(
                            "the subject is empty: a credential names who calls".into(),
                        ));
                    }
                    return Ok((
                        Caller {
                            subject: c.sub,
                            tenant,
                            rights: c.rights,
                        },
                        c.exp,
                    ));
                }
                Err(e) => {
                    last = match e.kind() {
                        jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                            CredentialError::Expired
                        }
                        _ => CredentialError::Invalid(e.to_string()),
                    };
                    // An expired credential with a good signature is expired, whatever the
                    // other key says.
                    if last == CredentialError::Expired {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    /// Checks an inbound request (see the module docs): the credential, the tenant, the
    /// method's right; then pins `x-tenant-id` and `x-actor` to the credential's and puts the
    /// [`Caller`] into the extensions.
    pub fn admit<B>(&self, req: &mut http::Request<B>) -> Result<(), CredentialError> {
        let mut headers = std::mem::take(req.headers_mut());
        let mut extensions = std::mem::take(req.extensions_mut());
        let admitted = self.admit_parts(req.uri().path(), &mut headers, &mut extensions);
        *req.headers_mut() = headers;
        *req.extensions_mut() = extensions;
        admitted
    }

    /// [`NodeKeys::admit`] on a call's parts: its method `path`, its headers (gRPC metadata)
    /// and extensions — what a call in this process ([`crate::local`]) has instead of an HTTP
    /// request.
    pub fn admit_parts(
        &self,
        path: &str,
        headers: &mut http::HeaderMap,
        extensions: &mut http::Extensions,
    ) -> Result<(), CredentialError> {
        let right = required_right(path);
        if right == MethodRight::Open {
            return Ok(());
        }
        let token = headers
            .get(header_names::NODE_CREDENTIAL)
            .and_then(|v| v.to_str().ok())
            .filter(|t| !t.is_empty())
            .ok_or(CredentialError::Missing)?;
        let caller = self.verify(token)?;
        if let Some(sent) = headers.get(header_names::TENANT_ID)
            && sent.as_bytes() != caller.tenant.as_str().as_bytes()
        {
            return Err(CredentialError::TenantMismatch {
                sent: String::from_utf8_lossy(sent.as_bytes()).into_owned(),
            });
        }
        match right {
            MethodRight::Open => {}
            MethodRight::Right(scope, name) => {
                if !caller.allows(scope, name) {
                    return Err(CredentialError::Forbidden(format!("{scope}:{name}")));
                }
            }
            MethodRight::ScopeChecked(scope) => {
                let in_scope = |r: &String| {
                    r.strip_prefix(scope)
                        .is_some_and(|rest| rest.starts_with(':'))
                };
                if !caller.rights.iter().any(in_scope) {
                    return Err(CredentialError::Forbidden(format!("{scope}:…")));
                }
            }
            MethodRight::Unknown => {
                return Err(CredentialError::Forbidden(format!("(none maps to {path})")));
            }
        }
        if let Ok(v) = http::HeaderValue::from_str(caller.tenant.as_str()) {
            headers.insert(header_names::TENANT_ID, v);
        }
        headers.remove(header_names::ACTOR);
        if let Ok(v) = http::HeaderValue::from_str(&caller.subject) {
            headers.insert(header_names::ACTOR, v);
        }
        extensions.insert(caller);
        Ok(())
    }

    /// The tower layer a node puts in front of its gRPC services.
    pub fn layer(&self) -> RequireCredentialLayer {
        register_metrics();
        RequireCredentialLayer {
            keys: Arc::new(self.clone()),
        }
    }
}

/// Makes [`names::NODE_CREDENTIAL_CACHE`] exist at 0 for `caches` (`verified`, `signed`).
pub fn register_cache_metrics(caches: &[&'static str]) {
    for cache in caches {
        for outcome in ["hit", "miss"] {
            metrics::counter!(names::NODE_CREDENTIAL_CACHE, "cache" => *cache, "outcome" => outcome)
                .increment(0);
        }
    }
}

/// Makes [`names::NODE_CALL_REJECTIONS`] exist at 0 for every reason (a node does this at
/// start, before its gRPC server runs).
pub fn register_metrics() {
    for reason in [
        "missing",
        "expired",
        "invalid",
        "tenant_mismatch",
        "forbidden",
    ] {
        metrics::counter!(names::NODE_CALL_REJECTIONS, "reason" => reason).increment(0);
    }
    register_cache_metrics(&["verified", "signed"]);
}

/// Refuses gRPC calls without a valid node credential (see [`NodeKeys::admit`]).
#[derive(Clone, Debug)]
pub struct RequireCredentialLayer {
    keys: Arc<NodeKeys>,
}

impl<S> tower::Layer<S> for RequireCredentialLayer {
    type Service = RequireCredential<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequireCredential {
            inner,
            keys: self.keys.clone(),
        }
    }
}

/// The service of [`RequireCredentialLayer`].
#[derive(Clone, Debug)]
pub struct RequireCredential<S> {
    inner: S,
    keys: Arc<NodeKeys>,
}

impl<S, B, R> tower::Service<http::Request<B>> for RequireCredential<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future =
        futures::future::Either<S::Future, std::future::Ready<Result<http::Response<R>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.keys.admit(&mut req) {
            Ok(()) => futures::future::Either::Left(self.inner.call(req)),
            Err(e) => futures::future::Either::Right(std::future::ready(Ok(e
                .refuse(req.uri().path())
                .into_http()))),
        }
    }
}

#[cfg(test)]
mod tests;
