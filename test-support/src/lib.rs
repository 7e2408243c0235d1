//! Test support shared by every crate's tests: a real `nats-server` with JetStream on an
//! ephemeral port, and polling helpers instead of sleeps.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cloudlysis_test_support::NatsServer;
//!
//! let mut server = NatsServer::start().await?;   // fails clearly when no nats-server ≥ 2.10
//! let client = async_nats::connect(server.url()).await?;
//! server.kill9().await?;                          // crash it
//! server.restart().await?;                        // same port, same store
//! # drop(client); Ok(()) }
//! ```
//!
//! Layout:
//! - [`NatsServer`] — start, stop, kill -9, pause (SIGSTOP) and restart a server; cleans up on
//!   drop.
//! - [`NatsCluster`] — a 3-node JetStream cluster on loopback; kill -9 and restart any member.
//! - [`Dev`] — `cloudlysis dev` as a child process, and what its banner printed.
//! - [`eventually`] — poll an async condition until it holds or a deadline passes.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cloudlysis_runtime::nats_server::{self, NatsServerBinary, NatsServerError};

mod cluster;
mod dev;
mod group;

pub use cluster::NatsCluster;
pub use dev::{DEV_START_DEADLINE, Dev};
pub use group::KillGroupOnDrop;

/// The node secret of test deployments (`CLOUDLYSIS_NODE_SECRET` of the processes tests start).
pub const NODE_SECRET: &str = "test-node-secret-test-node-secret-0123";

/// Node keys for [`NODE_SECRET`]: what in-process nodes verify and test clients sign with.
pub fn node_keys() -> cloudlysis_runtime::credential::NodeKeys {
    cloudlysis_runtime::credential::NodeKeys::new(NODE_SECRET.as_bytes())
        .expect("the test node secret is long enough")
}

/// A node credential signed with [`NODE_SECRET`] for `tenant` with `rights` (subject `test`),
/// for the `x-cloudlysis-credential` metadata of a direct gRPC call to a node.
pub fn node_credential(tenant: &str, rights: &[&str]) -> String {
    let rights: Vec<String> = rights.iter().map(|r| r.to_string()).collect();
    node_keys()
        .sign("test", tenant, &rights)
        .expect("a test credential signs")
}

/// How long to wait for a started server to answer JetStream requests.
pub const START_DEADLINE: Duration = Duration::from_secs(20);

/// The harness failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// No usable `nats-server` (missing or older than 2.10); the message says how to get one.
    #[error(transparent)]
    Binary(#[from] NatsServerError),
    /// The server did not come up.
    #[error(
        "nats-server did not become ready on port {port} within {deadline:?}: {reason}\n--- server log ---\n{log}"
    )]
    NotReady {
        /// Port it was started on.
        port: u16,
        /// The deadline.
        deadline: Duration,
        /// The last error seen.
        reason: String,
        /// The tail of the server's log.
        log: String,
    },
    /// Local I/O failed (temp dir, port probe, signal).
    #[error("harness I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A `nats-server -js` owned by one test: ephemeral port, private temp store, killed on drop.
pub struct NatsServer {
    binary: NatsServerBinary,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<tokio::process::Child>,
}

impl NatsServer {
    /// Finds a server binary (≥ 2.10), starts it on a free port and waits until JetStream
    /// answers.
    pub async fn start() -> Result<Self, HarnessError> {
        let binary = nats_server::find()?;
        let dir = tempfile::Builder::new()
            .prefix("cloudlysis-nats-")
            .tempdir()?;
        std::fs::create_dir_all(dir.path().join("store"))?;
        let mut server = Self {
            binary,
            port: 0,
            dir,
            child: None,
        };
        let mut last_err = None;
        // The port is free when probed but another process may take it before the server binds;
        // try a few ports before giving up.
        for _ in 0..5 {
            server.port = free_port()?;
            match server.launch().await {
                Ok(()) => return Ok(server),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| HarnessError::Io(std::io::Error::other("no attempt"))))
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (kept across restarts).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The server binary in use.
    pub fn binary(&self) -> &NatsServerBinary {
        &self.binary
    }

    /// A connected client.
    pub async fn client(&self) -> async_nats::Client {
        match async_nats::connect(self.url()).await {
            Ok(c) => c,
            Err(e) => panic!("connect to test nats-server at {}: {e}", self.url()),
        }
    }

    /// A JetStream context on a new client.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client().await)
    }

    /// Graceful stop (SIGTERM), waiting for the process to exit.
    pub async fn stop(&mut self) -> Result<(), HarnessError> {
        if let Some(mut child) = self.child.take() {
            nats_server::stop_gracefully(&mut child, Duration::from_secs(15)).await?;
        }
        Ok(())
    }

    /// Crash (SIGKILL, as `kill -9`), waiting for the process to exit.
    pub async fn kill9(&mut self) -> Result<(), HarnessError> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts the server again on the same port and store (after [`stop`](Self::stop) or
    /// [`kill9`](Self::kill9)); waits until JetStream answers.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill9().await?;
        self.launch().await
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is read or answered —
    /// a server (or a network) that is slow, not down. [`resume`](Self::resume) thaws it.
    pub fn pause(&self) -> Result<(), HarnessError> {
        self.signal(rustix::process::Signal::STOP)
    }

    /// Thaws a [`pause`](Self::pause)d server (SIGCONT): it goes on with what was sent to it.
    pub fn resume(&self) -> Result<(), HarnessError> {
        self.signal(rustix::process::Signal::CONT)
    }

    fn signal(&self, signal: rustix::process::Signal) -> Result<(), HarnessError> {
        let pid = self
            .child
            .as_ref()
            .and_then(|c| c.id())
            .and_then(|id| rustix::process::Pid::from_raw(id as i32))
            .ok_or_else(|| std::io::Error::other("the server is not running"))?;
        rustix::process::kill_process(pid, signal).map_err(std::io::Error::from)?;
        Ok(())
    }

    /// True while the server process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    async fn launch(&mut self) -> Result<(), HarnessError> {
        let log = self.dir.path().join("nats-server.log");
        let child = nats_server::spawn(
            &self.binary,
            "127.0.0.1",
            self.port,
            &self.store_dir(),
            &log,
        )?;
        self.child = Some(child);
        let url = self.url();
        let child = self.child.as_mut();
        // Stop waiting as soon as the process exits (e.g. the port was taken).
        let exited = async {
            match child {
                Some(c) => c.wait().await.map_or_else(
                    |e| e.to_string(),
                    |s| format!("nats-server exited with {s}"),
                ),
                None => std::future::pending().await,
            }
        };
        let reason = tokio::select! {
            ready = nats_server::wait_until_ready(&url, START_DEADLINE) => match ready {
                Ok(()) => return Ok(()),
                Err(e) => e,
            },
            reason = exited => reason,
        };
        self.kill9().await?;
        Err(HarnessError::NotReady {
            port: self.port,
            deadline: START_DEADLINE,
            reason,
            log: tail(&log),
        })
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// Polls `condition` every 20 ms until it returns true or `deadline` passes; returns whether it
/// held. Use instead of sleeping in tests.
pub async fn eventually<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The document (`doc` of the stored record) of `key` for `tenant` in the view key space `space`
/// (`balances`, or `balances=g1` after a rebuild). Panics when it is missing or does not
/// decode: a test helper.
pub async fn view_document(
    js: &async_nats::jetstream::Context,
    space: &str,
    tenant: &str,
    key: &str,
) -> serde_json::Value {
    use cloudlysis_runtime::kv;
    let bucket = js
        .get_key_value(kv::VIEWS_BUCKET)
        .await
        .expect("the views bucket exists");
    let full = kv::view_document_key(space, tenant, key);
    let bytes = bucket
        .get(&full)
        .await
        .expect("the views bucket answers")
        .unwrap_or_else(|| panic!("no document {full}"));
    let record: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON record");
    record["doc"].clone()
}

/// A minimal HTTP/1.1 GET over a fresh TCP connection (tests of the binary need no HTTP client
/// crate). Returns the status code and the body; fails after 5 s.
pub async fn http_get(url: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other("only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let text = String::from_utf8_lossy(&response).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad response: {text:?}")))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| std::io::Error::other("HTTP GET timed out"))?
}
