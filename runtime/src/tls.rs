//! TLS on node gRPC (rustls, through tonic): a node given a certificate and key serves its gRPC
//! port over TLS only; callers (the Gateway, a runner's effects, the CLI) speak TLS to every
//! `https://` node address, trusting the CA certificates of `grpc.tls_ca_file` (else the
//! system's roots) and checking the certificate names the address's host.
//!
//! | setting | means |
//! |---|---|
//! | `node.tls_cert_file` | PEM certificate chain the node serves (with `node.tls_key_file`) |
//! | `node.tls_key_file` | PEM private key of that certificate (PKCS#8, SEC1 or PKCS#1) |
//! | `grpc.tls_ca_file` | PEM CA certificates callers trust for `https://` node addresses |
//!
//! TLS protects the channel; who may call is still decided by the node credential
//! ([`crate::credential`]) every call carries, with or without TLS.
//!
//! ```
//! use cloudlysis_runtime::tls::ClientTls;
//!
//! // Plain `http://` addresses never use TLS; `https://` ones always do.
//! let tls = ClientTls::default();
//! assert!(tls.endpoint("http://127.0.0.1:50051").is_ok());
//! assert!(tls.endpoint("not a uri").is_err());
//! ```

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use crate::config::{ConfigError, ConfigSource, Origin, Setting};

/// `node.tls_cert_file`: the certificate chain a node serves gRPC with.
pub const CERT_FILE: Setting = Setting {
    key: "node.tls_cert_file",
    env: "CLOUDLYSIS_NODE_TLS_CERT_FILE",
    flag: "",
    doc: "PEM certificate chain a node serves gRPC with, over TLS only (with node.tls_key_file) [default: plaintext gRPC]",
};

/// `node.tls_key_file`: the private key of [`CERT_FILE`].
pub const KEY_FILE: Setting = Setting {
    key: "node.tls_key_file",
    env: "CLOUDLYSIS_NODE_TLS_KEY_FILE",
    flag: "",
    doc: "PEM private key of node.tls_cert_file (PKCS#8, SEC1 or PKCS#1)",
};

/// `grpc.tls_ca_file`: CA certificates callers trust for `https://` node addresses.
pub const CA_FILE: Setting = Setting {
    key: "grpc.tls_ca_file",
    env: "CLOUDLYSIS_GRPC_TLS_CA_FILE",
    flag: "",
    doc: "PEM CA certificates the Gateway, runners and the CLI trust for https:// node addresses [default: the system's roots]",
};

/// Every TLS setting.
pub const SETTINGS: &[&Setting] = &[&CERT_FILE, &KEY_FILE, &CA_FILE];

/// Largest PEM file read.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// Why an endpoint could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The address is not a URI tonic can dial.
    #[error("invalid node address {addr}: {reason}")]
    Address {
        /// The address given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The TLS configuration was refused.
    #[error("TLS to {addr}: {reason}")]
    Config {
        /// The address given.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// Reads a PEM file of at most [`MAX_PEM_BYTES`] that holds a `label` block.
fn read_pem(path: &Path, label: &str) -> Result<Vec<u8>, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len > MAX_PEM_BYTES {
        return Err(format!(
            "{} is {len} bytes; at most {MAX_PEM_BYTES} are read",
            path.display()
        ));
    }
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&pem);
    if !text.contains("-----BEGIN ") || !text.contains(label) {
        return Err(format!("{} holds no PEM {label}", path.display()));
    }
    Ok(pem)
}

fn invalid(setting: &Setting, origin: Origin, value: &str, reason: String) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.key,
        origin,
        value: value.to_string(),
        reason,
    }
}

/// A node's server TLS from `node.tls_cert_file` and `node.tls_key_file`; `None` when neither
/// is set (plaintext). One without the other is refused, naming the missing setting.
pub fn server(src: &ConfigSource) -> Result<Option<ServerTlsConfig>, ConfigError> {
    match (src.raw(&CERT_FILE, None), src.raw(&KEY_FILE, None)) {
        (None, None) => Ok(None),
        (Some((cert, origin)), None) => Err(invalid(
            &CERT_FILE,
            origin,
            &cert,
            format!("needs {} ({}) too", KEY_FILE.key, KEY_FILE.env),
        )),
        (None, Some((key, origin))) => Err(invalid(
            &KEY_FILE,
            origin,
            &key,
            format!("needs {} ({}) too", CERT_FILE.key, CERT_FILE.env),
        )),
        (Some((cert, cert_origin)), Some((key, key_origin))) => {
            let cert_pem = read_pem(Path::new(&cert), "CERTIFICATE")
                .map_err(|e| invalid(&CERT_FILE, cert_origin, &cert, e))?;
            let key_pem = read_pem(Path::new(&key), "PRIVATE KEY")
                .map_err(|e| invalid(&KEY_FILE, key_origin.clone(), &key, e))?;
            let config = ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem));
            // Built once now, as the server will: a certificate or key that cannot serve (bad
            // base64, a key of another certificate, an unsupported algorithm) is refused at
            // start, naming both files — not found when the listener starts.
            if let Err(e) = tonic::transport::Server::builder().tls_config(config.clone()) {
                let mut reason = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    reason.push_str(": ");
                    reason.push_str(&s.to_string());
                    source = s.source();
                }
                return Err(invalid(
                    &KEY_FILE,
                    key_origin,
                    &key,
                    format!(
                        "with {} `{cert}`, not a usable TLS identity: {reason}",
                        CERT_FILE.key
                    ),
                ));
            }
            Ok(Some(config))
        }
    }
}

/// How callers dial nodes: plaintext for `http://`, TLS for `https://`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM CA certificates trusted for `https://`; `None`: the system's roots.
    ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.ca_pem {
            Some(pem) => write!(f, "ClientTls(CA file of {} bytes)", pem.len()),
            None => write!(f, "ClientTls(system roots)"),
        }
    }
}

impl ClientTls {
    /// From `grpc.tls_ca_file` (the system's roots when unset).
    pub fn load(src: &ConfigSource) -> Result<Self, ConfigError> {
        match src.raw(&CA_FILE, None) {
            None => Ok(Self::default()),
            Some((path, origin)) => Self::from_ca_file(Path::new(&path))
                .map_err(|e| invalid(&CA_FILE, origin, &path, e)),
        }
    }

    /// Trusting the CA certificates in `path`.
    pub fn from_ca_file(path: &Path) -> Result<Self, String> {
        Ok(Self {
            ca_pem: Some(read_pem(path, "CERTIFICATE")?),
        })
    }

    /// Trusting the PEM CA certificates `pem`.
    pub fn from_ca_pem(pem: impl Into<Vec<u8>>) -> Self {
        Self {
            ca_pem: Some(pem.into()),
        }
    }

    /// An endpoint to `addr` (`http://host:port` or `https://host:port`) with TLS set up for
    /// `https://`, no connection made yet.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, TlsError> {
        let endpoint = Endpoint::from_shared(addr.to_string()).map_err(|e| TlsError::Address {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
        if endpoint.uri().scheme_str() != Some("https") {
            return Ok(endpoint);
        }
        let config = match &self.ca_pem {
            Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
            None => ClientTlsConfig::new().with_native_roots(),
        };
        endpoint.tls_config(config).map_err(|e| TlsError::Config {
            addr: addr.to_string(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_a_server_configuration_names_the_missing_setting() {
        let src = ConfigSource::from_env([(CERT_FILE.env, "/x.pem")]);
        let e = server(&src).unwrap_err().to_string();
        assert!(
            e.contains("node.tls_cert_file") && e.contains("node.tls_key_file"),
            "{e}"
        );
        let src = ConfigSource::from_env([(CERT_FILE.env, "/nope.pem"), (KEY_FILE.env, "/k")]);
        let e = server(&src).unwrap_err().to_string();
        assert!(
            e.contains("node.tls_cert_file") && e.contains("/nope.pem"),
            "{e}"
        );
        assert!(
            server(&ConfigSource::from_env::<&str, &str>([]))
                .unwrap()
                .is_none()
        );
    }

    /// Found by using the platform: a node given a key of another certificate, or a PEM block
    /// whose body is not a key, started, printed its gRPC address and served nothing.
    #[test]
    fn an_unusable_certificate_and_key_pair_is_refused_naming_the_files() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tls");
        let file = |name: &str| fixtures.join(name).to_string_lossy().into_owned();
        let dir = std::env::temp_dir().join(format!("tls-pair-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage-key.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let garbage = garbage.to_string_lossy().into_owned();
        for (cert, key) in [
            (file("ca.pem"), file("node-key.pem")),
            (file("node.pem"), garbage.clone()),
        ] {
            let src = ConfigSource::from_env([(CERT_FILE.env, &cert), (KEY_FILE.env, &key)]);
            let e = server(&src).unwrap_err().to_string();
            assert!(
                e.contains("node.tls_key_file") && e.contains("node.tls_cert_file"),
                "{e}"
            );
            assert!(e.contains("not a usable TLS identity"), "{e}");
        }
        let good = [
            (CERT_FILE.env, file("node.pem")),
            (KEY_FILE.env, file("node-key.pem")),
        ];
        assert!(server(&ConfigSource::from_env(good)).unwrap().is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("empty.pem");
        std::fs::write(&f, "nothing here").unwrap();
        let e = ClientTls::from_ca_file(&f).unwrap_err();
        assert!(e.contains("no PEM CERTIFICATE"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn https_addresses_get_tls_and_http_ones_do_not() {
        let tls = ClientTls::default();
        assert!(tls.endpoint("https://localhost:1").is_ok());
        assert!(tls.endpoint("http://localhost:1").is_ok());
        assert!(matches!(tls.endpoint("::"), Err(TlsError::Address { .. })));
    }
}
