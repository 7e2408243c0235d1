//! Gateway settings (flag over env over file over default; errors name the setting).

use std::time::Duration;

use cloudlysis_runtime::config::{ConfigError, ConfigSource, Setting};

/// gRPC address of the aggregate node.
pub const AGGREGATE_ADDR: Setting = Setting {
    key: "gateway.aggregate_addr",
    env: "CLOUDLYSIS_AGGREGATE_ADDR",
    flag: "--aggregate-addr",
    doc: "gRPC address of the aggregate node [default: http://127.0.0.1:50051]",
};
/// gRPC address of the projection node.
pub const PROJECTION_ADDR: Setting = Setting {
    key: "gateway.projection_addr",
    env: "CLOUDLYSIS_PROJECTION_ADDR",
    flag: "--projection-addr",
    doc: "gRPC address of the projection node [default: http://127.0.0.1:50052]",
};
/// gRPC address of the runner node.
pub const RUNNER_ADDR: Setting = Setting {
    key: "gateway.runner_addr",
    env: "CLOUDLYSIS_RUNNER_ADDR",
    flag: "--runner-addr",
    doc: "gRPC address of the runner node, or several separated by commas [default: http://127.0.0.1:50053]",
};
/// HS256 secret for bearer tokens.
pub const JWT_SECRET: Setting = Setting {
    key: "gateway.jwt_secret",
    env: "CLOUDLYSIS_JWT_SECRET",
    flag: "",
    doc: "HS256 secret for bearer tokens, at least 32 bytes [required]",
};
/// Deadline of a command call to a node.
pub const COMMAND_TIMEOUT_MS: Setting = Setting {
    key: "gateway.command_timeout_ms",
    env: "CLOUDLYSIS_COMMAND_TIMEOUT_MS",
    flag: "",
    doc: "deadline of a command call to the aggregate node, milliseconds [default: 5000]",
};
/// Largest accepted request body.
pub const MAX_BODY_BYTES: Setting = Setting {
    key: "gateway.max_body_bytes",
    env: "CLOUDLYSIS_MAX_BODY_BYTES",
    flag: "",
    doc: "largest accepted request body, bytes (at most 512 KiB: a commit must fit NATS max_payload) [default: 65536]",
};

/// Most requests handled at once; beyond it requests are shed with 503 + `Retry-After`.
pub const MAX_IN_FLIGHT: Setting = Setting {
    key: "gateway.max_in_flight",
    env: "CLOUDLYSIS_GATEWAY_MAX_IN_FLIGHT",
    flag: "",
    doc: "most API requests handled at once; beyond it 503 with Retry-After [default: 1024]",
};

/// Most requests of one tenant at once.
pub const TENANT_MAX_IN_FLIGHT: Setting = Setting {
    key: "gateway.tenant_max_in_flight",
    env: "CLOUDLYSIS_GATEWAY_TENANT_MAX_IN_FLIGHT",
    flag: "",
    doc: "most API requests of one tenant at once; beyond it 429 with Retry-After [default: gateway.max_in_flight]",
};

/// Weights of tenants in the fair sharing of the budget.
pub const TENANT_WEIGHTS: Setting = Setting {
    key: "gateway.tenant_weights",
    env: "CLOUDLYSIS_GATEWAY_TENANT_WEIGHTS",
    flag: "",
    doc: "weights of tenants in the fair sharing of gateway.max_in_flight, e.g. `acme=3,beta=1` (others weigh 1) [default: none]",
};

/// The identity provider's JWK set.
pub const JWKS_FILE: Setting = Setting {
    key: "gateway.jwks_file",
    env: "CLOUDLYSIS_JWKS_FILE",
    flag: "",
    doc: "JWK set (JSON file) of an identity provider whose RS256 / ES256 tokens are accepted besides HS256; re-read when it changes [default: none]",
};

/// Where to fetch the identity provider's JWK set.
pub const JWKS_URL: Setting = Setting {
    key: "gateway.jwks_url",
    env: "CLOUDLYSIS_JWKS_URL",
    flag: "",
    doc: "the identity provider's jwks_uri (https://; http:// only to a loopback host), fetched at start, every 5 min and on an unknown key id; instead of gateway.jwks_file [default: none]",
};

/// The issuer identity-provider tokens must name.
pub const JWT_ISSUER: Setting = Setting {
    key: "gateway.jwt_issuer",
    env: "CLOUDLYSIS_JWT_ISSUER",
    flag: "",
    doc: "the `iss` identity-provider tokens must carry (required with gateway.jwks_file or gateway.jwks_url)",
};

/// The audience identity-provider tokens must name.
pub const JWT_AUDIENCE: Setting = Setting {
    key: "gateway.jwt_audience",
    env: "CLOUDLYSIS_JWT_AUDIENCE",
    flag: "",
    doc: "an `aud` identity-provider tokens must carry (required with gateway.jwks_file or gateway.jwks_url)",
};

/// The claim holding the tenant.
pub const TENANT_CLAIM: Setting = Setting {
    key: "gateway.tenant_claim",
    env: "CLOUDLYSIS_TENANT_CLAIM",
    flag: "",
    doc: "the claim of identity-provider tokens that holds the tenant [default: tenant]",
};

/// The claim holding the rights.
pub const RIGHTS_CLAIM: Setting = Setting {
    key: "gateway.rights_claim",
    env: "CLOUDLYSIS_RIGHTS_CLAIM",
    flag: "",
    doc: "the claim of identity-provider tokens that holds the rights: an array, or a space-separated string like `scope` [default: rights]",
};

/// How the Gateway finds nodes.
pub const PLACEMENT: Setting = Setting {
    key: "gateway.placement",
    env: "CLOUDLYSIS_GATEWAY_PLACEMENT",
    flag: "",
    doc: "`static` (the *_addr settings) or `registry` (live nodes from the NATS node registry; needs nats.url) [default: static]",
};

/// Where the built Control UI is.
pub const UI_DIR: Setting = Setting {
    key: "gateway.ui_dir",
    env: "CLOUDLYSIS_UI_DIR",
    flag: "",
    doc: "directory of the built Control UI served at /ui (`npm run build` in control/ui) [default: control/ui/dist]",
};

/// Default of [`UI_DIR`] (relative to the working directory: the repository root for `./x dev`).
pub const DEFAULT_UI_DIR: &str = "control/ui/dist";

/// Every Gateway setting (for `--help`, docs and unknown-key checks).
pub const ALL: &[&Setting] = &[
    &UI_DIR,
    &AGGREGATE_ADDR,
    &PROJECTION_ADDR,
    &RUNNER_ADDR,
    &JWT_SECRET,
    &COMMAND_TIMEOUT_MS,
    &MAX_BODY_BYTES,
    &MAX_IN_FLIGHT,
    &TENANT_MAX_IN_FLIGHT,
    &TENANT_WEIGHTS,
    &JWKS_FILE,
    &JWKS_URL,
    &PLACEMENT,
    &JWT_ISSUER,
    &JWT_AUDIENCE,
    &TENANT_CLAIM,
    &RIGHTS_CLAIM,
];

/// Validated Gateway settings.
#[derive(Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    /// Aggregate node address (`http://host:port`).
    pub aggregate_addr: String,
    /// Projection node address (`http://host:port`).
    pub projection_addr: String,
    /// Runner node address(es) (`http://host:port`, comma separated).
    pub runner_addr: String,
    /// Token secret.
    pub jwt_secret: String,
    /// The node secret (`node.secret`) node credentials are signed with.
    pub node_secret: String,
    /// Command deadline.
    pub command_timeout: Duration,
    /// Body limit.
    pub max_body_bytes: usize,
    /// Requests handled at once.
    pub max_in_flight: usize,
    /// The built Control UI (`gateway.ui_dir`).
    pub ui_dir: std::path::PathBuf,
    /// Requests of one tenant at once (`None`: `max_in_flight`).
    pub tenant_max_in_flight: Option<usize>,
    /// Tenant weights in the fair sharing of `max_in_flight` (others weigh 1).
    pub tenant_weights: std::collections::BTreeMap<String, u32>,
    /// Tokens of an identity provider (`gateway.jwks_file` and friends).
    pub oidc: crate::oidc::OidcSettings,
    /// How node addresses are dialled: TLS for `https://` ones (`grpc.tls_ca_file`).
    pub node_tls: cloudlysis_runtime::tls::ClientTls,
}

impl std::fmt::Debug for GatewaySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewaySettings")
            .field("aggregate_addr", &self.aggregate_addr)
            .field("projection_addr", &self.projection_addr)
            .field("runner_addr", &self.runner_addr)
            .field("jwt_secret", &"<redacted>")
            .field("node_secret", &"<redacted>")
            .field("command_timeout", &self.command_timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_in_flight", &self.max_in_flight)
            .field("ui_dir", &self.ui_dir)
            .field("tenant_max_in_flight", &self.tenant_max_in_flight)
            .field("tenant_weights", &self.tenant_weights)
            .field("oidc", &self.oidc)
            .field("node_tls", &self.node_tls)
            .finish()
    }
}

impl GatewaySettings {
    /// The runner addresses, in order (at least one).
    pub fn runner_addrs(&self) -> Vec<String> {
        let addrs: Vec<String> = self
            .runner_addr
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        if addrs.is_empty() {
            vec!["http://127.0.0.1:50053".into()]
        } else {
            addrs
        }
    }

    /// Loads the settings; `jwt_secret_default` and `node_secret_default` are used when no
    /// secret is configured (dev only).
    pub fn load(
        src: &ConfigSource,
        aggregate_addr_flag: Option<&str>,
        projection_addr_flag: Option<&str>,
        runner_addr_flag: Option<&str>,
        jwt_secret_default: Option<&str>,
        node_secret_default: Option<&str>,
    ) -> Result<Self, ConfigError> {
        // Validated like every node validates it; the Gateway only signs.
        cloudlysis_runtime::credential::NodeKeys::load(src, node_secret_default)?;
        let node_secret = src
            .raw(&cloudlysis_runtime::credential::NODE_SECRET, None)
            .map(|(s, _)| s)
            .or_else(|| node_secret_default.map(str::to_string))
            .unwrap_or_default();
        // Each refused at start when it is not a node address (see `ConfigSource::node_addr`).
        let projection_addr = src.node_addr(
            &PROJECTION_ADDR,
            projection_addr_flag,
            "http://127.0.0.1:50052",
        )?;
        let runner_addr = src
            .node_addrs(&RUNNER_ADDR, runner_addr_flag, "http://127.0.0.1:50053")?
            .join(",");
        let aggregate_addr = src.node_addr(
            &AGGREGATE_ADDR,
            aggregate_addr_flag,
            "http://127.0.0.1:50051",
        )?;
        let jwt_secret = match src.raw(&JWT_SECRET, None) {
            Some((secret, origin)) => {
                if secret.len() < crate::auth::MIN_SECRET_LEN {
                    return Err(ConfigError::Invalid {
                        setting: JWT_SECRET.key,
                        origin,
                        value: "<redacted>".into(),
                        reason: format!("must be at least {} bytes", crate::auth::MIN_SECRET_LEN),
                    });
                }
                secret
            }
            None => match jwt_secret_default {
                Some(s) => s.to_string(),
                None => {
                    return Err(ConfigError::Missing {
                        setting: JWT_SECRET.key,
                        reason: format!(
                            "set {} (at least {} bytes) to verify the API's bearer tokens",
                            JWT_SECRET.env,
                            crate::auth::MIN_SECRET_LEN
                        ),
                    });
                }
            },
        };
        Ok(Self {
            aggregate_addr,
            projection_addr,
            runner_addr,
            jwt_secret,
            node_secret,
            command_timeout: src.get_millis(
                &COMMAND_TIMEOUT_MS,
                None,
                Duration::from_secs(5),
                Duration::from_millis(100),
                Duration::from_secs(300),
            )?,
            // A commit must fit NATS max_payload (1 MiB by default) with its envelope.
            max_body_bytes: src.get_in_range(&MAX_BODY_BYTES, None, 65_536, 256, 512 * 1024)?
                as usize,
            max_in_flight: src.get_in_range(&MAX_IN_FLIGHT, None, 1024, 1, 1_000_000)? as usize,
            ui_dir: src.get_or(&UI_DIR, None, std::path::PathBuf::from(DEFAULT_UI_DIR))?,
            tenant_max_in_flight: match src.raw(&TENANT_MAX_IN_FLIGHT, None) {
                None => None,
                Some(_) => Some(
                    src.get_in_range(&TENANT_MAX_IN_FLIGHT, None, 1024, 1, 1_000_000)? as usize,
                ),
            },
            tenant_weights: tenant_weights(src)?,
            oidc: oidc(src)?,
            node_tls: cloudlysis_runtime::tls::ClientTls::load(src)?,
        })
    }
}

/// Loads the identity-provider settings and the JWK set they name (a bad one names the setting).
fn oidc(src: &ConfigSource) -> Result<crate::oidc::OidcSettings, ConfigError> {
    let mut o = crate::oidc::OidcSettings::default();
    if let Some((v, _)) = src.raw(&TENANT_CLAIM, None) {
        o.tenant_claim = v;
    }
    if let Some((v, _)) = src.raw(&RIGHTS_CLAIM, None) {
        o.rights_claim = v;
    }
    let (source, (value, origin)) = match (src.raw(&JWKS_FILE, None), src.raw(&JWKS_URL, None)) {
        (None, None) => return Ok(o),
        (Some(_), Some((url, origin))) => {
            return Err(ConfigError::Invalid {
                setting: JWKS_URL.key,
                origin,
                value: url,
                reason: format!("set {} or {}, not both", JWKS_FILE.key, JWKS_URL.key),
            });
        }
        (Some(file), None) => (&JWKS_FILE, file),
        (None, Some(url)) => (&JWKS_URL, url),
    };
    for (setting, slot) in [
        (&JWT_ISSUER, &mut o.issuer),
        (&JWT_AUDIENCE, &mut o.audience),
    ] {
        match src.raw(setting, None) {
            Some((v, _)) if !v.trim().is_empty() => *slot = v,
            Some((v, origin)) => {
                return Err(ConfigError::Invalid {
                    setting: setting.key,
                    origin,
                    value: v,
                    reason: format!("must not be blank: it is required with {}", source.key),
                });
            }
            None => {
                return Err(ConfigError::Missing {
                    setting: setting.key,
                    reason: format!("required with {}: set {}", source.key, setting.env),
                });
            }
        }
    }
    let invalid = |reason: String| ConfigError::Invalid {
        setting: source.key,
        origin: origin.clone(),
        value: value.clone(),
        reason,
    };
    if source.key == JWKS_FILE.key {
        o.jwks_file = Some(value.clone().into());
        // Read now so a bad file refuses the start, naming the setting.
        crate::oidc::Oidc::new(o.clone()).map_err(|e| invalid(e.to_string()))?;
    } else {
        // Checked now; fetched once the Gateway runs.
        crate::oidc::jwks_url::validate(&value).map_err(invalid)?;
        o.jwks_url = Some(value.clone());
    }
    Ok(o)
}

/// Parses `gateway.tenant_weights` (`tenant=weight,…`, weights 1..=1000, tenants subject tokens).
fn tenant_weights(
    src: &ConfigSource,
) -> Result<std::collections::BTreeMap<String, u32>, ConfigError> {
    let mut out = std::collections::BTreeMap::new();
    let Some((raw, origin)) = src.raw(&TENANT_WEIGHTS, None) else {
        return Ok(out);
    };
    let invalid = |reason: String| ConfigError::Invalid {
        setting: TENANT_WEIGHTS.key,
        origin: origin.clone(),
        value: raw.clone(),
        reason,
    };
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (tenant, weight) = part
            .split_once('=')
            .ok_or_else(|| invalid(format!("`{part}` is not tenant=weight")))?;
        cloudlysis_runtime::subject::validate_token(tenant.trim())
            .map_err(|e| invalid(format!("tenant `{tenant}`: {e}")))?;
        let weight: u32 = weight
            .trim()
            .parse()
            .ok()
            .filter(|w| (1..=1000).contains(w))
            .ok_or_else(|| invalid(format!("weight of `{tenant}` must be 1..=1000")))?;
        if out.insert(tenant.trim().to_string(), weight).is_some() {
            return Err(invalid(format!(
                "`{}` is given twice; give each tenant once",
                tenant.trim()
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_weights_name_a_tenant_given_twice() {
        let weights = |v: &str| {
            tenant_weights(&ConfigSource::from_env([(
                "CLOUDLYSIS_GATEWAY_TENANT_WEIGHTS".to_string(),
                v.to_string(),
            )]))
        };
        assert_eq!(weights("a=1, b=5").unwrap().get("b"), Some(&5));
        let e = weights("a=1,a=5").unwrap_err().to_string();
        assert!(
            e.contains("gateway.tenant_weights") && e.contains("`a` is given twice"),
            "{e}"
        );
    }
}
