//! The HTTP server every process runs its routes with: HTTP/1.1 with a deadline on request
//! headers and a bound on open connections ([`HttpLimits`]).
//!
//! A connection has `header_read_timeout` to send a request's headers, counted from when the
//! server waits for them: a client that sends part of its headers and stops (slowloris), one
//! that connects and sends nothing, and a keep-alive connection idle between requests are all
//! closed after it. (A body has its own deadline where it is read: the Gateway's
//! `extract::BODY_READ_TIMEOUT`.) At `max_connections` open connections the server accepts no
//! more until one closes; the others wait in the kernel's listen backlog.
//!
//! | metric | what |
//! |---|---|
//! | `cloudlysis_http_connections` | connections open now |
//! | `cloudlysis_http_header_timeouts_total` | connections closed because their request headers did not arrive within `http.header_read_timeout_ms` |

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::metrics::names;

/// Limits of an HTTP server's connections (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time a connection has to send a request's headers (also between requests on a
    /// keep-alive connection): `http.header_read_timeout_ms`.
    pub header_read_timeout: Duration,
    /// Connections open at once: `http.max_connections`.
    pub max_connections: usize,
}

/// [`HttpLimits::header_read_timeout`] by default: above the usual load balancer's idle timeout
/// (60 s), so the server does not close a connection the balancer is about to reuse.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(75);
/// [`HttpLimits::max_connections`] by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// How long [`serve`] waits, once asked to stop, for its connections to finish the requests
/// they are serving; the ones still open then are left to the process's exit.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` within `limits` until `shutdown` resolves; then stops
/// accepting, lets every connection finish the request it is serving (idle ones are closed at
/// once) and returns when all have closed, or after [`SHUTDOWN_GRACE`]. A connection the peer
/// gave up before it was accepted is skipped; an `accept` failing for want of resources (no
/// file descriptors left) is logged and tried again after 100 ms.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    // Bounded by what `acquire_many` can wait for at shutdown.
    let max = limits.max_connections.clamp(1, u32::MAX as usize);
    let permits = Arc::new(Semaphore::new(max));
    let open = metrics::gauge!(names::HTTP_CONNECTIONS);
    metrics::counter!(names::HTTP_HEADER_TIMEOUTS).increment(0);
    let (close, closing) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // The peer gave up before we took it: nothing to wait for.
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::Interrupted
                ) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an HTTP connection failed; trying again in 100 ms");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                        () = &mut shutdown => break,
                    }
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // Counted while the connection lives, also if its task ends by a panic.
        let counted = Open::new(open.clone());
        let mut closing = closing.clone();
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = async { closing.wait_for(|c| *c).await.map(|_| ()) } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result
                && e.is_timeout()
            {
                metrics::counter!(names::HTTP_HEADER_TIMEOUTS).increment(1);
            }
            drop(counted);
            drop(permit);
        });
    }
    let _ = close.send(true);
    // Every connection holds a permit until it closes.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(max as u32)).await;
}

/// One open connection in `cloudlysis_http_connections`, until dropped.
struct Open(metrics::Gauge);

impl Open {
    fn new(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(limits: HttpLimits) -> (std::net::SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(serve(listener, router, limits, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        (addr, stop)
    }

    /// Reads until the server closes the connection (what it sent), panicking after 10 s.
    async fn until_closed(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got))
            .await
            .expect("the server kept the connection open")
            .unwrap();
        got
    }

    /// A client that sends part of its headers and stops, and one that sends nothing, are
    /// closed at the header deadline; a complete request is answered. (Found by using the
    /// platform: such connections stayed open for good, a thousand of them held a thousand file
    /// descriptors.)
    #[tokio::test]
    async fn a_client_that_does_not_finish_its_headers_is_closed() {
        let limits = HttpLimits {
            header_read_timeout: Duration::from_millis(200),
            ..HttpLimits::default()
        };
        let (addr, _stop) = start(limits).await;
        let mut partial = tokio::net::TcpStream::connect(addr).await.unwrap();
        partial
            .write_all(b"POST /v1/commands/account/x HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        until_closed(&mut partial).await;
        until_closed(&mut silent).await;

        let mut whole = tokio::net::TcpStream::connect(addr).await.unwrap();
        whole
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = String::from_utf8(until_closed(&mut whole).await).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    /// Asked to stop, the server closes an idle connection at once, lets a request being
    /// served finish, and returns once both are closed.
    #[tokio::test]
    async fn a_stop_lets_the_request_being_served_finish() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (release, released) = watch::channel(false);
        let router = axum::Router::new().route(
            "/slow",
            axum::routing::get(move || {
                let mut released = released.clone();
                async move {
                    let _ = released.wait_for(|r| *r).await;
                    "done"
                }
            }),
        );
        let (stop, mut stopped) = watch::channel(false);
        let server = tokio::spawn(serve(listener, router, HttpLimits::default(), async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut busy = tokio::net::TcpStream::connect(addr).await.unwrap();
        busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // The idle connection is accepted too (it answers a request) before the stop.
        idle.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        idle.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 404");
        stop.send(true).unwrap();
        // The idle one is closed; the busy one still waits for its answer.
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut rest))
            .await
            .expect("the idle connection was kept open")
            .unwrap();
        assert!(!server.is_finished(), "returned while a request was served");
        release.send(true).unwrap();
        let answer = String::from_utf8(until_closed(&mut busy).await).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"),
            "{answer}"
        );
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("serve did not return once its connections closed")
            .unwrap();
    }

    /// At `max_connections` a further connection is not served until one closes.
    #[tokio::test]
    async fn connections_beyond_the_bound_wait_for_a_place() {
        let limits = HttpLimits {
            header_read_timeout: Duration::from_secs(30),
            max_connections: 1,
        };
        let (addr, _stop) = start(limits).await;
        let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
        first
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 15];
        first.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200 OK");
        // The kernel completes the handshake, but nothing answers while `first` is open.
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        second
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut byte = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_millis(300), second.read(&mut byte))
                .await
                .is_err(),
            "served beyond the bound"
        );
        drop(first);
        let answer = String::from_utf8(until_closed(&mut second).await).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
