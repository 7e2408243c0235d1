//! Finding and launching a local `nats-server` (for `cloudlysis dev` and the test harness).
//!
//! Cloudlysis supports NATS server **2.10 or later**. The binary is looked up in this order:
//!
//! 1. `NATS_SERVER_BIN` (a path to the binary);
//! 2. the project's tools folder, `.tools/nats-server/bin/nats-server`, in the current directory
//!    or any parent, and in the source checkout this binary was built from — the pinned server
//!    that `scripts/install-nats-server` installs;
//! 3. `nats-server` on `PATH`.
//!
//! A binary older than 2.10 is refused with its version named.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Oldest supported server version.
pub const MIN_VERSION: Version = Version(2, 10, 0);
/// The server version the project's setup pins.
pub const PINNED_VERSION: &str = "2.15.1";
/// Where the project's setup installs the pinned server, relative to the project root.
pub const TOOLS_BINARY: &str = ".tools/nats-server/bin/nats-server";
/// How to get a server, for error messages.
pub const HOW_TO_INSTALL: &str = "run `scripts/install-nats-server` in the Cloudlysis checkout (installs the pinned \
     nats-server 2.15.1 into .tools/), or set NATS_SERVER_BIN to a nats-server 2.10 or later";

/// A `major.minor.patch` server version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// A usable `nats-server` binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsServerBinary {
    /// Path to the binary.
    pub path: PathBuf,
    /// Its version.
    pub version: Version,
}

/// No usable `nats-server` was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatsServerError {
    /// Nothing found anywhere.
    #[error(
        "nats-server not found (looked at NATS_SERVER_BIN, {TOOLS_BINARY} and PATH): {HOW_TO_INSTALL}"
    )]
    NotFound,
    /// `NATS_SERVER_BIN` points at something that does not run.
    #[error("NATS_SERVER_BIN={path} does not run: {reason}; {HOW_TO_INSTALL}")]
    BadBin {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The binary is older than 2.10.
    #[error(
        "nats-server at {path} is version {version}; Cloudlysis needs {MIN_VERSION} or later: {HOW_TO_INSTALL}"
    )]
    TooOld {
        /// The path.
        path: PathBuf,
        /// Its version.
        version: Version,
    },
    /// `--version` printed something unexpected.
    #[error("could not read the version of {path} from {output:?}")]
    UnknownVersion {
        /// The path.
        path: PathBuf,
        /// What it printed.
        output: String,
    },
    /// The server could not be started.
    #[error("could not start {path}: {reason}")]
    Spawn {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Parses `nats-server --version` output such as `nats-server: v2.15.1`.
pub fn parse_version(output: &str) -> Option<Version> {
    let word = output
        .split_whitespace()
        .find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))?;
    let mut nums = word[1..]
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>());
    let major = nums.next()?.ok()?;
    let minor = nums.next()?.ok()?;
    let patch = nums.next().and_then(Result::ok).unwrap_or(0);
    Some(Version(major, minor, patch))
}

/// Runs `path --version` (with a 10 s deadline) and checks it is 2.10 or later.
pub fn probe(path: &Path) -> Result<NatsServerBinary, NatsServerError> {
    let mut child = std::process::Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NatsServerError::Spawn {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                return Err(NatsServerError::Spawn {
                    path: path.to_path_buf(),
                    reason: "`--version` did not finish within 10s".into(),
                });
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NatsServerError::Spawn {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let version = parse_version(&text).ok_or_else(|| NatsServerError::UnknownVersion {
        path: path.to_path_buf(),
        output: text.trim().to_string(),
    })?;
    if version < MIN_VERSION {
        return Err(NatsServerError::TooOld {
            path: path.to_path_buf(),
            version,
        });
    }
    Ok(NatsServerBinary {
        path: path.to_path_buf(),
        version,
    })
}

/// Finds a usable server using this process's environment (see the module docs).
pub fn find() -> Result<NatsServerBinary, NatsServerError> {
    let cwd = std::env::current_dir().ok();
    find_with(
        std::env::var_os("NATS_SERVER_BIN").map(PathBuf::from),
        cwd.as_deref(),
        std::env::var_os("PATH").as_deref(),
    )
}

/// [`find`] with its inputs given: the `NATS_SERVER_BIN` value, the directory to search upwards
/// from for the tools folder, and the `PATH` value.
pub fn find_with(
    env_bin: Option<PathBuf>,
    start_dir: Option<&Path>,
    path_var: Option<&std::ffi::OsStr>,
) -> Result<NatsServerBinary, NatsServerError> {
    if let Some(path) = env_bin.filter(|p| !p.as_os_str().is_empty()) {
        // An explicit choice is never silently replaced by another binary.
        return probe(&path).map_err(|e| match e {
            NatsServerError::Spawn { path, reason } => NatsServerError::BadBin { path, reason },
            other => other,
        });
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = start_dir {
        candidates.extend(dir.ancestors().map(|d| d.join(TOOLS_BINARY)));
    }
    // The checkout this crate was built from (useful for `cargo run` from anywhere).
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(TOOLS_BINARY),
    );
    if let Some(path_var) = path_var {
        candidates.extend(std::env::split_paths(path_var).map(|d| d.join("nats-server")));
    }
    let mut too_old = None;
    for candidate in candidates.iter().filter(|p| p.is_file()) {
        let candidate = candidate
            .canonicalize()
            .unwrap_or_else(|_| candidate.clone());
        match probe(&candidate) {
            Ok(bin) => return Ok(bin),
            Err(e @ NatsServerError::TooOld { .. }) => {
                too_old.get_or_insert(e);
            }
            Err(_) => {}
        }
    }
    Err(too_old.unwrap_or(NatsServerError::NotFound))
}

/// Starts `nats-server -js` listening on `host:port` with its store in `store_dir`, stdout and
/// stderr appended to `log_file`. The child is killed when the returned handle is dropped.
pub fn spawn(
    binary: &NatsServerBinary,
    host: &str,
    port: u16,
    store_dir: &Path,
    log_file: &Path,
) -> Result<tokio::process::Child, NatsServerError> {
    spawn_with(binary, host, port, store_dir, log_file, &[])
}

fn spawn_with(
    binary: &NatsServerBinary,
    host: &str,
    port: u16,
    store_dir: &Path,
    log_file: &Path,
    extra: &[String],
) -> Result<tokio::process::Child, NatsServerError> {
    let spawn_err = |reason: String| NatsServerError::Spawn {
        path: binary.path.clone(),
        reason,
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .map_err(|e| spawn_err(format!("cannot open log file {}: {e}", log_file.display())))?;
    let log2 = log.try_clone().map_err(|e| spawn_err(e.to_string()))?;
    tokio::process::Command::new(&binary.path)
        .arg("-js")
        .args(["-a", host])
        .args(["-p", &port.to_string()])
        .arg("-sd")
        .arg(store_dir)
        .args(["--server_name", &format!("cloudlysis-{port}")])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| spawn_err(e.to_string()))
}

/// How a server joins a cluster: its cluster name, the port it listens on for routes, and the
/// route URLs of every member (`nats-route://127.0.0.1:<port>`, itself included is fine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterArgs {
    /// Cluster name (every member uses the same).
    pub name: String,
    /// This member's route listen port.
    pub port: u16,
    /// Route URLs of the members.
    pub routes: Vec<String>,
}

/// [`spawn`] as a member of a JetStream cluster: `--cluster_name`, `--cluster` and `--routes`
/// added (server names stay unique per client port).
pub fn spawn_clustered(
    binary: &NatsServerBinary,
    host: &str,
    port: u16,
    store_dir: &Path,
    log_file: &Path,
    cluster: &ClusterArgs,
) -> Result<tokio::process::Child, NatsServerError> {
    spawn_with(
        binary,
        host,
        port,
        store_dir,
        log_file,
        &[
            "--cluster_name".into(),
            cluster.name.clone(),
            "--cluster".into(),
            format!("nats://{host}:{}", cluster.port),
            "--routes".into(),
            cluster.routes.join(","),
        ],
    )
}

/// Polls `url` until the server accepts a connection and answers a JetStream account request,
/// or `deadline` passes (then returns the last error seen).
pub async fn wait_until_ready(url: &str, deadline: Duration) -> Result<(), String> {
    let end = tokio::time::Instant::now() + deadline;
    let mut last = String::from("not tried");
    while tokio::time::Instant::now() < end {
        match jetstream_answers(url).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        // A poll interval, not synchronisation: the server is a separate process.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last)
}

async fn jetstream_answers(url: &str) -> Result<(), String> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_millis(500))
        .connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let js = async_nats::jetstream::new(client);
    tokio::time::timeout(Duration::from_secs(2), js.query_account())
        .await
        .map_err(|_| "JetStream account info timed out".to_string())?
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Stops a server child gracefully (SIGTERM, so it flushes its store), killing it when it has
/// not exited within `timeout`.
pub async fn stop_gracefully(
    child: &mut tokio::process::Child,
    timeout: Duration,
) -> std::io::Result<()> {
    if let Some(pid) = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32))
    {
        // ESRCH only means it already exited.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    if tokio::time::timeout(timeout, child.wait()).await.is_err() {
        child.kill().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_parsed_from_server_output() {
        assert_eq!(
            parse_version("nats-server: v2.15.1"),
            Some(Version(2, 15, 1))
        );
        assert_eq!(
            parse_version("nats-server: v2.9.10\n"),
            Some(Version(2, 9, 10))
        );
        assert_eq!(
            parse_version("nats-server: v2.11.0-RC.1"),
            Some(Version(2, 11, 0))
        );
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn version_ordering_refuses_2_9() {
        assert!(Version(2, 9, 10) < MIN_VERSION);
        assert!(Version(2, 10, 0) >= MIN_VERSION);
        assert!(Version(3, 0, 0) > MIN_VERSION);
    }

    #[test]
    fn a_bad_nats_server_bin_is_named() {
        let err = find_with(Some("/nonexistent/nats-server".into()), None, None).unwrap_err();
        assert!(matches!(err, NatsServerError::BadBin { .. }));
        assert!(
            err.to_string()
                .contains("NATS_SERVER_BIN=/nonexistent/nats-server")
        );
        assert!(err.to_string().contains("scripts/install-nats-server"));
    }

    #[test]
    fn an_old_server_is_refused_with_its_version() {
        let dir = tempdir();
        let fake = dir.join("nats-server");
        std::fs::write(&fake, "#!/bin/sh\necho 'nats-server: v2.9.10'\n").unwrap();
        make_executable(&fake);
        let err = find_with(Some(fake.clone()), None, None).unwrap_err();
        assert_eq!(
            err,
            NatsServerError::TooOld {
                path: fake,
                version: Version(2, 9, 10)
            }
        );
        assert!(err.to_string().contains("2.9.10"));
        assert!(err.to_string().contains("2.10.0 or later"));
    }

    #[test]
    fn an_old_server_on_path_is_reported_rather_than_not_found() {
        let dir = tempdir();
        let fake = dir.join("nats-server");
        std::fs::write(&fake, "#!/bin/sh\necho 'nats-server: v2.9.10'\n").unwrap();
        make_executable(&fake);
        // Start the upward search somewhere without a tools folder.
        let err = find_with(None, Some(Path::new("/")), Some(dir.as_os_str()));
        // The checkout's own tools folder may hold a good server; then that one wins.
        match err {
            Ok(bin) => assert!(bin.path.ends_with(TOOLS_BINARY)),
            Err(e) => assert!(matches!(e, NatsServerError::TooOld { .. }), "{e}"),
        }
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cloudlysis-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn make_executable(path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}
