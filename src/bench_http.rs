//! A minimal HTTP/1.1 keep-alive client for the benchmarks that go through a real socket: a
//! bounded pool of connections to one address, `POST` with a JSON body or `GET`, the status, the
//! `Retry-After` header and the `Content-Type` of the answer. Only what the Gateway sends is
//! understood (`Content-Length` bodies); anything else is an error.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Longest header section or body the client reads.
const MAX_RESPONSE: usize = 1 << 20;
/// Deadline of one request, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One answer.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub problem_json: bool,
}

/// A pool of at most `max` keep-alive connections to `addr`.
#[derive(Clone)]
pub(crate) struct Client {
    addr: SocketAddr,
    idle: Arc<Mutex<Vec<BufReader<TcpStream>>>>,
    slots: Arc<Semaphore>,
}

impl Client {
    /// A client of `addr` with at most `max` connections.
    pub(crate) fn new(addr: SocketAddr, max: usize) -> Self {
        Self {
            addr,
            idle: Arc::new(Mutex::new(Vec::with_capacity(max))),
            slots: Arc::new(Semaphore::new(max)),
        }
    }

    /// True when every connection is busy (a request would wait for one).
    pub(crate) fn saturated(&self) -> bool {
        self.slots.available_permits() == 0
    }

    /// `POST path` with `body` and a bearer `token`.
    pub(crate) async fn post(&self, path: &str, token: &str, body: &str) -> anyhow::Result<Answer> {
        self.post_keyed(path, token, body, None).await
    }

    /// [`Client::post`] with an `Idempotency-Key` when `key` is given.
    pub(crate) async fn post_keyed(
        &self,
        path: &str,
        token: &str,
        body: &str,
        key: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let key = key.map_or(String::new(), |k| format!("idempotency-key: {k}\r\n"));
        self.send(format!(
            "POST {path} HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\n{key}content-length: {}\r\n\r\n{body}",
            body.len()
        ))
        .await
    }

    /// `GET path` without credentials.
    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.send(format!("GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n"))
            .await
    }

    /// One exchange on a pooled connection (a new one when none is idle).
    async fn send(&self, request: String) -> anyhow::Result<Answer> {
        let _slot = self.slots.acquire().await.context("client closed")?;
        let conn = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut conn = match conn {
            Some(c) => c,
            None => {
                let stream = TcpStream::connect(self.addr).await.context("connect")?;
                stream.set_nodelay(true)?;
                BufReader::new(stream)
            }
        };
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut conn, &request))
            .await
            .context("no answer within 30 s")??;
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
        Ok(answer)
    }
}

async fn exchange(conn: &mut BufReader<TcpStream>, request: &str) -> anyhow::Result<Answer> {
    conn.get_mut().write_all(request.as_bytes()).await?;
    let mut line = String::new();
    conn.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {line:?}"))?;
    let (mut length, mut retry_after, mut problem_json, mut read) = (0usize, None, false, 0usize);
    loop {
        line.clear();
        read += conn.read_line(&mut line).await?;
        anyhow::ensure!(read <= MAX_RESPONSE, "header section too large");
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            anyhow::bail!("bad header {header:?}");
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse()?,
            "retry-after" => retry_after = value.parse().ok(),
            "content-type" => problem_json = value == "application/problem+json",
            "transfer-encoding" => anyhow::bail!("unsupported transfer-encoding {value}"),
            _ => {}
        }
    }
    anyhow::ensure!(length <= MAX_RESPONSE, "body too large");
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await?;
    Ok(Answer {
        status,
        retry_after,
        problem_json,
    })
}
