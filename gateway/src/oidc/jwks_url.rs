//! Fetching a JWK set from the identity provider's `jwks_uri` (`gateway.jwks_url`): one
//! background task per Gateway, over HTTPS (rustls, the system's roots) — plain HTTP only to a
//! loopback host — with a deadline per fetch, a bounded body, and backoff after failures. See
//! [`super`] for when it fetches.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use cloudlysis_runtime::metrics::names;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Notify;

use super::{
    MAX_JWKS_BYTES, State, URL_FETCH_TIMEOUT, URL_MAX_BACKOFF, URL_REFRESH, URL_UNKNOWN_KID_REFETCH,
};
use crate::auth::AuthError;
use crate::upstream::AbortOnDrop;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Makes the fetch counter's series exist at 0.
pub fn register_metrics() {
    for result in ["ok", "error"] {
        metrics::counter!(names::GATEWAY_JWKS_FETCHES, "result" => result).increment(0);
    }
}

/// The running fetcher: a handle to ask for an early fetch; the task stops with it.
pub(crate) struct Fetcher {
    nudge: Arc<Notify>,
    _task: AbortOnDrop,
}

/// Checks `url`: `https://`, or `http://` to a loopback host.
pub fn validate(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("gateway.jwks_url {url:?} is not a URL: {e}"))?;
    let host = uri.host().unwrap_or_default();
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(uri),
        Some("http") if matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "::1") => Ok(uri),
        Some("http") => Err(format!(
            "gateway.jwks_url {url:?} must be https:// (plain http:// only to a loopback host: \
             keys fetched in the clear could be replaced on the way)"
        )),
        _ => Err(format!("gateway.jwks_url {url:?} must be an https:// URL")),
    }
}

impl Fetcher {
    /// Starts fetching `url` into `state` (on the current Tokio runtime).
    pub(crate) fn start(url: &str, state: Weak<RwLock<State>>) -> Result<Self, AuthError> {
        let uri = validate(url).map_err(AuthError::Invalid)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            AuthError::Invalid("gateway.jwks_url needs the Gateway built on a Tokio runtime".into())
        })?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| AuthError::Invalid(format!("no TLS roots for gateway.jwks_url: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let client: HttpsClient = Client::builder(TokioExecutor::new()).build(connector);
        register_metrics();
        let nudge = Arc::new(Notify::new());
        let task = runtime.spawn(run(client, uri, state, nudge.clone()));
        Ok(Self {
            nudge,
            _task: AbortOnDrop(task),
        })
    }

    /// Asks for a fetch now (rate-limited by the task).
    pub(crate) fn nudge(&self) {
        self.nudge.notify_one();
    }
}

/// One fetch: the keys, or why not.
async fn fetch(client: &HttpsClient, uri: &http::Uri) -> Result<super::Keys, String> {
    let exchange = async {
        let req = http::Request::get(uri.clone())
            .header("accept", "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = client.request(req).await.map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        })?;
        if !resp.status().is_success() {
            return Err(format!("answered {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES as usize)
            .collect()
            .await
            .map_err(|e| format!("reading the body (at most {MAX_JWKS_BYTES} bytes): {e}"))?
            .to_bytes();
        super::parse(&body, &uri.to_string())
    };
    match tokio::time::timeout(URL_FETCH_TIMEOUT, exchange).await {
        Ok(r) => r.map_err(|e| format!("{uri}: {e}")),
        Err(_) => Err(format!("{uri}: no answer within {URL_FETCH_TIMEOUT:?}")),
    }
}

/// Fetches at start, every [`URL_REFRESH`], when nudged (at most every
/// [`URL_UNKNOWN_KID_REFETCH`]) and after failures with backoff; ends when the verifier goes.
async fn run(client: HttpsClient, uri: http::Uri, state: Weak<RwLock<State>>, nudge: Arc<Notify>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let result = fetch(&client, &uri).await;
        let Some(state) = state.upgrade() else { return };
        let wait = {
            let mut s = state.write().unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(keys) => {
                    metrics::counter!(names::GATEWAY_JWKS_FETCHES, "result" => "ok").increment(1);
                    tracing::info!(keys = keys.len(), url = %uri, "JWKS fetched");
                    s.keys = keys;
                    s.loaded = true;
                    s.last_error = None;
                    backoff = Duration::from_secs(1);
                    URL_REFRESH
                }
                Err(e) => {
                    metrics::counter!(names::GATEWAY_JWKS_FETCHES, "result" => "error")
                        .increment(1);
                    tracing::warn!(error = %e, "JWKS fetch failed; the previous keys stay");
                    s.last_error = Some(e);
                    let wait = backoff;
                    backoff = (backoff * 2).min(URL_MAX_BACKOFF);
                    wait
                }
            }
        };
        drop(state);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = async {
                tokio::time::sleep(URL_UNKNOWN_KID_REFETCH.min(wait)).await;
                nudge.notified().await;
            } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_is_accepted() {
        assert!(validate("https://idp.example.com/.well-known/jwks.json").is_ok());
        assert!(validate("http://127.0.0.1:8080/jwks").is_ok());
        assert!(validate("http://localhost/jwks").is_ok());
        let e = validate("http://idp.example.com/jwks").unwrap_err();
        assert!(e.contains("must be https://"), "{e}");
        assert!(validate("ftp://x/y").is_err());
        assert!(validate("not a url at all").is_err());
    }
}
