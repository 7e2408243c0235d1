//! Layered configuration: CLI flags over environment variables over an optional TOML file over
//! defaults. Every setting is described once by a [`Setting`] (file key, env var, flag, default);
//! every error names the setting and where its value came from.
//!
//! Flags are parsed by the binary (clap) and handed in as strings; environment variables come
//! from a map so tests never mutate the process environment.
//!
//! ```
//! use cloudlysis_runtime::config::{ConfigSource, settings};
//!
//! let src = ConfigSource::from_env([("CLOUDLYSIS_NATS_URL", "nats://10.0.0.1:4222")])
//!     .with_toml_str("[nats]\nurl = \"nats://file:4222\"", "cloudlysis.toml")
//!     .unwrap();
//! // The flag wins over env, env over the file.
//! let url: String = src.get_or(&settings::NATS_URL, Some("nats://flag:4222"), "x".into()).unwrap();
//! assert_eq!(url, "nats://flag:4222");
//! let url: String = src.get_or(&settings::NATS_URL, None, "x".into()).unwrap();
//! assert_eq!(url, "nats://10.0.0.1:4222");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// One configuration setting: where it can be set and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Dotted key in the TOML file, e.g. `nats.url`. Also the setting's name in errors.
    pub key: &'static str,
    /// Environment variable, e.g. `CLOUDLYSIS_NATS_URL`.
    pub env: &'static str,
    /// Command-line flag, e.g. `--nats-url`; empty when there is none.
    pub flag: &'static str,
    /// One line for `--help` and the operations guide, with default and unit.
    pub doc: &'static str,
}

impl Setting {
    /// Help text for a CLI flag: the doc line plus the env var and file key.
    pub fn help(&self) -> String {
        format!("{} [env: {}] [file: {}]", self.doc, self.env, self.key)
    }
}

/// The settings the runtime itself reads. Role settings live with their roles.
pub mod settings {
    use super::Setting;

    /// NATS server URL(s), comma separated.
    pub const NATS_URL: Setting = Setting {
        key: "nats.url",
        env: "CLOUDLYSIS_NATS_URL",
        flag: "--nats-url",
        doc: "NATS server URL(s), comma separated [default: nats://127.0.0.1:4222]",
    };
    /// Deadline for the initial NATS connection.
    pub const NATS_CONNECT_TIMEOUT_MS: Setting = Setting {
        key: "nats.connect_timeout_ms",
        env: "CLOUDLYSIS_NATS_CONNECT_TIMEOUT_MS",
        flag: "--nats-connect-timeout-ms",
        doc: "deadline for connecting to NATS, milliseconds [default: 5000]",
    };
    /// Deadline for NATS requests (JetStream API, publish acks).
    pub const NATS_REQUEST_TIMEOUT_MS: Setting = Setting {
        key: "nats.request_timeout_ms",
        env: "CLOUDLYSIS_NATS_REQUEST_TIMEOUT_MS",
        flag: "--nats-request-timeout-ms",
        doc: "deadline for NATS requests and JetStream publish acks, milliseconds [default: 5000]",
    };
    /// How often the NATS client pings an idle connection; three intervals without an answer
    /// and the connection counts as down (a silent network cut or a frozen server).
    pub const NATS_PING_INTERVAL_MS: Setting = Setting {
        key: "nats.ping_interval_ms",
        env: "CLOUDLYSIS_NATS_PING_INTERVAL_MS",
        flag: "",
        doc: "how often an idle NATS connection is pinged; down after three unanswered intervals, milliseconds [default: 10000]",
    };
    /// Replicas of every stream and KV bucket Cloudlysis creates (and at least has).
    pub const NATS_REPLICAS: Setting = Setting {
        key: "nats.replicas",
        env: "CLOUDLYSIS_NATS_REPLICAS",
        flag: "",
        doc: "replicas of the streams and KV buckets: 1 on one server, 3 on a cluster, at most 5 [default: 1]",
    };
    /// Data directory of `cloudlysis dev` (NATS store, logs).
    pub const DEV_DATA_DIR: Setting = Setting {
        key: "dev.data_dir",
        env: "CLOUDLYSIS_DATA_DIR",
        flag: "--data-dir",
        doc: "data directory of `cloudlysis dev` (NATS store and log) [default: .cloudlysis/dev]",
    };
    /// Listen address of the node's HTTP endpoints (`/health`, `/ready`, `/metrics`).
    pub const HTTP_ADDR: Setting = Setting {
        key: "http.addr",
        env: "CLOUDLYSIS_HTTP_ADDR",
        flag: "--http-addr",
        doc: "listen address of /health, /ready and /metrics [default: depends on the role]",
    };
    /// Time an HTTP connection has to send a request's headers (also between requests on a
    /// keep-alive connection) before it is closed.
    pub const HTTP_HEADER_READ_TIMEOUT_MS: Setting = Setting {
        key: "http.header_read_timeout_ms",
        env: "CLOUDLYSIS_HTTP_HEADER_READ_TIMEOUT_MS",
        flag: "",
        doc: "time an HTTP connection has to send a request's headers, also idle between requests, milliseconds [default: 75000]",
    };
    /// HTTP connections open at once; more wait in the listen backlog.
    pub const HTTP_MAX_CONNECTIONS: Setting = Setting {
        key: "http.max_connections",
        env: "CLOUDLYSIS_HTTP_MAX_CONNECTIONS",
        flag: "",
        doc: "HTTP connections open at once; more wait until one closes [default: 10000]",
    };
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag.
    Flag(&'static str),
    /// An environment variable.
    Env(&'static str),
    /// A key in a TOML file.
    File {
        /// The file.
        path: PathBuf,
        /// The dotted key.
        key: &'static str,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::File { path, key } => write!(f, "key `{key}` in {}", path.display()),
        }
    }
}

/// A configuration error; every variant names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value could not be parsed or is out of range.
    #[error("invalid value {value:?} for setting `{setting}` (from {origin}): {reason}")]
    Invalid {
        /// The setting's key.
        setting: &'static str,
        /// Where the value came from.
        origin: Origin,
        /// The value as given.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A setting that must be given was not (no flag, variable or file key holds it).
    #[error("setting `{setting}` is not set: {reason}")]
    Missing {
        /// The setting's key.
        setting: &'static str,
        /// What it is needed for and how to set it.
        reason: String,
    },
    /// A setting Cloudlysis refuses on purpose.
    #[error("setting `{setting}` (from {origin}) is not supported: {reason}")]
    Unsupported {
        /// The setting's key.
        setting: &'static str,
        /// Where the value came from.
        origin: Origin,
        /// Why it is refused and what to do instead.
        reason: &'static str,
    },
    /// The config file could not be read or parsed.
    #[error("config file {}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The config file holds a key no setting uses (probably a typo).
    #[error("config file {}: unknown setting `{key}`", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The dotted key.
        key: String,
    },
}

/// Environment variables and an optional TOML file to resolve settings from.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    env: BTreeMap<String, String>,
    file: Option<(PathBuf, toml::Table)>,
}

impl ConfigSource {
    /// A source with the given environment variables and no file.
    pub fn from_env<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            env: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            file: None,
        }
    }

    /// A source with this process's environment (only the binary should call this).
    pub fn from_process_env() -> Self {
        Self::from_env(std::env::vars())
    }

    /// Adds a TOML config file.
    pub fn with_file(self, path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        self.with_toml_str(&text, path)
    }

    /// Adds TOML text as if read from `path`.
    pub fn with_toml_str(
        mut self,
        text: &str,
        path: impl Into<PathBuf>,
    ) -> Result<Self, ConfigError> {
        let path = path.into();
        let table = text.parse::<toml::Table>().map_err(|e| ConfigError::File {
            path: path.clone(),
            reason: e.to_string().trim().to_string(),
        })?;
        self.file = Some((path, table));
        Ok(self)
    }

    /// Refuses file keys that none of `known` uses, naming the first unknown key.
    pub fn reject_unknown_keys(&self, known: &[&Setting]) -> Result<(), ConfigError> {
        let Some((path, table)) = &self.file else {
            return Ok(());
        };
        let mut keys = Vec::new();
        flatten("", table, &mut keys);
        match keys
            .into_iter()
            .find(|k| !known.iter().any(|s| s.key == k.as_str()))
        {
            Some(key) => Err(ConfigError::UnknownKey {
                path: path.clone(),
                key,
            }),
            None => Ok(()),
        }
    }

    /// The raw value of `setting` and its origin: `flag` (when given) over env over file.
    pub fn raw(&self, setting: &Setting, flag: Option<&str>) -> Option<(String, Origin)> {
        if let Some(v) = flag {
            return Some((v.to_string(), Origin::Flag(setting.flag)));
        }
        if let Some(v) = self.env.get(setting.env) {
            return Some((v.clone(), Origin::Env(setting.env)));
        }
        let (path, table) = self.file.as_ref()?;
        let mut parts = setting.key.split('.');
        let mut value = table.get(parts.next()?)?;
        for part in parts {
            value = value.as_table()?.get(part)?;
        }
        let text = match value {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Some((
            text,
            Origin::File {
                path: path.clone(),
                key: setting.key,
            },
        ))
    }

    /// Parses `setting` when it is set anywhere.
    pub fn get<T>(&self, setting: &Setting, flag: Option<&str>) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.raw(setting, flag) {
            None => Ok(None),
            Some((value, origin)) => {
                value
                    .trim()
                    .parse::<T>()
                    .map(Some)
                    .map_err(|e| ConfigError::Invalid {
                        setting: setting.key,
                        origin,
                        value,
                        reason: expected::<T>(&e.to_string()),
                    })
            }
        }
    }

    /// Parses `setting`, or returns `default` when it is set nowhere.
    pub fn get_or<T>(
        &self,
        setting: &Setting,
        flag: Option<&str>,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        Ok(self.get(setting, flag)?.unwrap_or(default))
    }

    /// Parses an integer setting in `min..=max`, or returns `default`.
    pub fn get_in_range(
        &self,
        setting: &Setting,
        flag: Option<&str>,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let value = self.get_or(setting, flag, default)?;
        if (min..=max).contains(&value) {
            return Ok(value);
        }
        // Only a value that was set can be out of range: defaults are in range.
        let (raw, origin) = self
            .raw(setting, flag)
            .unwrap_or_else(|| (value.to_string(), Origin::Env(setting.env)));
        Err(ConfigError::Invalid {
            setting: setting.key,
            origin,
            value: raw,
            reason: format!("must be between {min} and {max}"),
        })
    }

    /// A duration setting in milliseconds in `min..=max`, or `default`.
    pub fn get_millis(
        &self,
        setting: &Setting,
        flag: Option<&str>,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let ms = self.get_in_range(
            setting,
            flag,
            default.as_millis() as u64,
            min.as_millis() as u64,
            max.as_millis() as u64,
        )?;
        Ok(Duration::from_millis(ms))
    }

    /// A node's gRPC address (`http://host:port` or `https://…`; `host:port` means `http://`),
    /// or `default` when it is set nowhere. Refused at start, naming the setting: an empty
    /// value, a list, another scheme, no host, a port that is not 1–65535.
    pub fn node_addr(
        &self,
        setting: &Setting,
        flag: Option<&str>,
        default: &str,
    ) -> Result<String, ConfigError> {
        let addrs = self.node_addrs(setting, flag, default)?;
        match <[String; 1]>::try_from(addrs) {
            Ok([addr]) => Ok(addr),
            Err(_) => Err(self.invalid(setting, flag, "one address, not a list".into())),
        }
    }

    /// A comma-separated list of node gRPC addresses, each as [`Self::node_addr`] takes it
    /// (an empty entry is refused too), or `default`'s.
    pub fn node_addrs(
        &self,
        setting: &Setting,
        flag: Option<&str>,
        default: &str,
    ) -> Result<Vec<String>, ConfigError> {
        let raw = self
            .raw(setting, flag)
            .map_or_else(|| default.to_string(), |(v, _)| v);
        raw.split(',')
            .map(|entry| node_uri(entry.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| self.invalid(setting, flag, reason))
    }

    /// [`ConfigError::Invalid`] for the value `setting` has (only a value that was set can be
    /// invalid: defaults are valid).
    fn invalid(&self, setting: &Setting, flag: Option<&str>, reason: String) -> ConfigError {
        let (value, origin) = self
            .raw(setting, flag)
            .unwrap_or_else(|| (String::new(), Origin::Env(setting.env)));
        ConfigError::Invalid {
            setting: setting.key,
            origin,
            value,
            reason,
        }
    }

    /// Fails with [`ConfigError::Unsupported`] when `setting` is set anywhere.
    pub fn refuse(&self, setting: &Setting, reason: &'static str) -> Result<(), ConfigError> {
        match self.raw(setting, None) {
            Some((_, origin)) => Err(ConfigError::Unsupported {
                setting: setting.key,
                origin,
                reason,
            }),
            None => Ok(()),
        }
    }
}

/// A parse error's reason, saying what was expected when the type is a number or a flag (the
/// parser's own words — "invalid digit found in string" — do not).
fn expected<T>(reason: &str) -> String {
    let kind = match std::any::type_name::<T>() {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number (0 or more)",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "bool" => "true or false",
        _ => return reason.to_string(),
    };
    format!("expected {kind}: {reason}")
}

/// One node address, normalised to a URI with its scheme, or why it is not one.
fn node_uri(entry: &str) -> Result<String, String> {
    const EXAMPLE: &str = "such as http://127.0.0.1:50051";
    if entry.is_empty() {
        return Err(format!("an empty address; give one {EXAMPLE}"));
    }
    let uri = if entry.contains("://") {
        entry.to_string()
    } else {
        format!("http://{entry}")
    };
    let parsed: http::Uri = uri
        .parse()
        .map_err(|e| format!("`{entry}` is not a URI {EXAMPLE}: {e}"))?;
    match parsed.scheme_str() {
        Some("http" | "https") => {}
        other => {
            return Err(format!(
                "`{entry}`: the scheme must be http or https, not {}",
                other.unwrap_or("none")
            ));
        }
    }
    let authority = parsed
        .authority()
        .filter(|a| !a.host().is_empty())
        .ok_or_else(|| format!("`{entry}` names no host {EXAMPLE}"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "`{entry}`: a node address has no user name or password"
        ));
    }
    // What follows the host (`[v6]` included), if anything: `:port`.
    let after_host = authority
        .as_str()
        .strip_prefix(authority.host())
        .unwrap_or_default();
    if let Some(port) = after_host.strip_prefix(':') {
        let valid = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p != 0);
        if !valid {
            return Err(format!("`{entry}`: port {port} is not 1–65535"));
        }
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
        return Err(format!("`{entry}`: a node address has no path or query"));
    }
    Ok(uri)
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            _ => out.push(key),
        }
    }
}

#[cfg(test)]
mod tests;
