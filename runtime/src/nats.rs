//! NATS connection and publishing helpers.
//!
//! [`connect`] bounds the initial connection by a deadline and then reconnects forever with a
//! capped backoff (a node keeps running across NATS restarts; readiness reports the outage).
//! [`publish`] puts every required header on a JetStream message and waits for the ack under a
//! deadline.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;

use crate::config::{ConfigError, ConfigSource, settings};
use crate::context::{RequestContext, headers};
use crate::metrics::names;

/// Default NATS URL.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Default interval between pings of an idle connection (`nats.ping_interval_ms`). The client
/// counts the connection down when a third ping goes out with two still unanswered, so a
/// silent network cut or a frozen server is noticed after about three intervals (the NATS
/// clients' own default of 60 s or 2 min leaves a node publishing into a dead connection for
/// minutes).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(10);
/// Longest delay between reconnect attempts.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// Validated NATS connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// Server URL(s), comma separated.
    pub url: String,
    /// Deadline for the initial connection.
    pub connect_timeout: Duration,
    /// Deadline for requests and JetStream publish acks.
    pub request_timeout: Duration,
    /// How often an idle connection is pinged; down after three unanswered intervals.
    pub ping_interval: Duration,
    /// Client name shown by the server (`connz`).
    pub client_name: String,
    /// Replicas of the streams and KV buckets this process creates (`nats.replicas`).
    pub replicas: usize,
}

impl NatsSettings {
    /// Reads the settings: `url_flag` over env over file over defaults.
    pub fn load(
        src: &ConfigSource,
        url_flag: Option<&str>,
        client_name: &str,
    ) -> Result<Self, ConfigError> {
        let url: String =
            src.get_or(&settings::NATS_URL, url_flag, DEFAULT_NATS_URL.to_string())?;
        for part in url.split(',') {
            let parsed = match part.trim() {
                "" => Err("an empty address; give one such as nats://127.0.0.1:4222".to_string()),
                part => part
                    .parse::<async_nats::ServerAddr>()
                    .map(drop)
                    .map_err(|e| e.to_string()),
            };
            if let Err(e) = parsed {
                let origin = src
                    .raw(&settings::NATS_URL, url_flag)
                    .map(|(_, o)| o)
                    .unwrap_or(crate::config::Origin::Flag(settings::NATS_URL.flag));
                return Err(ConfigError::Invalid {
                    setting: settings::NATS_URL.key,
                    origin,
                    value: url.clone(),
                    reason: e,
                });
            }
        }
        Ok(Self {
            url,
            connect_timeout: src.get_millis(
                &settings::NATS_CONNECT_TIMEOUT_MS,
                None,
                Duration::from_secs(5),
                Duration::from_millis(100),
                Duration::from_secs(300),
            )?,
            request_timeout: src.get_millis(
                &settings::NATS_REQUEST_TIMEOUT_MS,
                None,
                Duration::from_secs(5),
                Duration::from_millis(100),
                Duration::from_secs(300),
            )?,
            ping_interval: src.get_millis(
                &settings::NATS_PING_INTERVAL_MS,
                None,
                DEFAULT_PING_INTERVAL,
                Duration::from_millis(100),
                Duration::from_secs(600),
            )?,
            client_name: client_name.to_string(),
            replicas: src.get_in_range(&settings::NATS_REPLICAS, None, 1, 1, 5)? as usize,
        })
    }

    /// Settings for `url` with default deadlines.
    pub fn for_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            ping_interval: DEFAULT_PING_INTERVAL,
            client_name: "cloudlysis".into(),
            replicas: crate::stream::replicas(),
        }
    }
}

/// A NATS operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The initial connection did not succeed before the deadline.
    #[error("could not connect to NATS at {url} within {timeout:?}: {reason}")]
    Connect {
        /// The URL(s) tried.
        url: String,
        /// The deadline.
        timeout: Duration,
        /// What went wrong.
        reason: String,
    },
    /// A publish was refused or not acknowledged.
    #[error("publish to {subject} failed: {reason}")]
    Publish {
        /// The subject.
        subject: String,
        /// What went wrong.
        reason: String,
    },
    /// The message (payload and headers) is over the server's `max_payload`: it was not sent
    /// and can never be, however often it is tried.
    #[error("publish to {subject} refused: {reason}")]
    TooLarge {
        /// The subject.
        subject: String,
        /// The sizes, as the client reported them.
        reason: String,
    },
    /// The subject's last sequence was not the expected one (optimistic concurrency conflict).
    #[error("publish to {subject} refused: another writer appended first (wrong last sequence)")]
    WrongLastSequence {
        /// The subject.
        subject: String,
    },
    /// The connection to NATS was down: nothing was published (the client would have queued
    /// the message and sent it whenever the connection came back, long after its caller gave
    /// up on it).
    #[error("NATS is not connected ({state}): nothing was published to {subject}")]
    NotConnected {
        /// The subject.
        subject: String,
        /// The connection's state (`disconnected`, `pending`).
        state: String,
    },
    /// A publish was not acknowledged before the deadline.
    #[error("publish to {subject} was not acknowledged within {timeout:?}")]
    PublishTimeout {
        /// The subject.
        subject: String,
        /// The deadline.
        timeout: Duration,
    },
}

/// The `event` labels of `cloudlysis_nats_connection_events_total`.
pub const CONNECTION_EVENTS: &[&str] = &[
    "connected",
    "disconnected",
    "lame_duck",
    "draining",
    "closed",
    "slow_consumer",
    "server_error",
    "client_error",
];

/// Connects with a bounded initial connect, then reconnects forever with capped backoff.
/// Connection events are logged and counted in `cloudlysis_nats_connection_events_total{event}`.
///
/// Also sets the process's replication factor ([`crate::stream::set_replicas`]) from
/// `settings.replicas`, so the streams and buckets it creates match the deployment.
pub async fn connect(settings: &NatsSettings) -> Result<async_nats::Client, NatsError> {
    crate::stream::set_replicas(settings.replicas);
    // Every event label exists (at 0) from the start, so a rate or an alert has a baseline.
    for event in CONNECTION_EVENTS {
        metrics::counter!(names::NATS_CONNECTION_EVENTS, "event" => *event).increment(0);
    }
    let options = async_nats::ConnectOptions::new()
        .name(&settings.client_name)
        .connection_timeout(settings.connect_timeout)
        .request_timeout(Some(settings.request_timeout))
        .ping_interval(settings.ping_interval)
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            let exp = attempts.min(6) as u32;
            (Duration::from_millis(100) * 2u32.pow(exp)).min(MAX_RECONNECT_DELAY)
        })
        .event_callback(|event| async move {
            let label = match &event {
                async_nats::Event::Connected => "connected",
                async_nats::Event::Disconnected => "disconnected",
                async_nats::Event::LameDuckMode => "lame_duck",
                async_nats::Event::Draining => "draining",
                async_nats::Event::Closed => "closed",
                async_nats::Event::SlowConsumer(_) => "slow_consumer",
                async_nats::Event::ServerError(_) => "server_error",
                async_nats::Event::ClientError(_) => "client_error",
            };
            metrics::counter!(names::NATS_CONNECTION_EVENTS, "event" => label).increment(1);
            tracing::info!(event = %event, "nats connection event");
        });
    let addrs: Vec<async_nats::ServerAddr> = settings
        .url
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|e: std::io::Error| NatsError::Connect {
            url: settings.url.clone(),
            timeout: settings.connect_timeout,
            reason: e.to_string(),
        })?;
    let connect_error = |reason: String| NatsError::Connect {
        url: settings.url.clone(),
        timeout: settings.connect_timeout,
        reason,
    };
    match tokio::time::timeout(settings.connect_timeout, options.connect(addrs.as_slice())).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(connect_error(e.to_string())),
        Err(_) => Err(connect_error("timed out".into())),
    }
}

/// A JetStream context whose API requests and publish acks time out after `request_timeout`.
pub fn jetstream(client: async_nats::Client, request_timeout: Duration) -> jetstream::Context {
    let mut js = jetstream::new(client);
    js.set_timeout(request_timeout);
    js
}

/// The headers every Cloudlysis publish carries: the context's tenant, correlation and trace
/// headers plus `Nats-Msg-Id` for de-duplication.
pub fn publish_headers(ctx: &RequestContext, msg_id: &str) -> async_nats::HeaderMap {
    let mut map = async_nats::HeaderMap::new();
    write_publish_headers(&mut map, ctx, msg_id);
    map
}

/// Writes [`publish_headers`] into `map`, replacing any value they name.
fn write_publish_headers(map: &mut async_nats::HeaderMap, ctx: &RequestContext, msg_id: &str) {
    ctx.inject_nats(map);
    map.insert(crate::context::nats_name(headers::NATS_MSG_ID), msg_id);
}

/// The state of `js`'s connection when the client knows it is down (`disconnected`,
/// `pending`), `None` while it is connected. A request made meanwhile would wait out its deadline
/// and a publish would be queued until the connection came back: a caller that answers someone
/// checks first. The state is what the client has noticed: at once when the server closes the
/// connection, after three unanswered pings (`nats.ping_interval_ms`) for a silent network cut or
/// a frozen server.
pub fn not_connected(js: &jetstream::Context) -> Option<String> {
    let state = js.client().connection_state();
    (state != async_nats::connection::State::Connected).then(|| state.to_string())
}

/// `Ok` while `js`'s client is connected; [`NatsError::NotConnected`] otherwise (see
/// [`not_connected`]): for a publisher that answers its caller before a queued message would be
/// sent (a commit). `subject` names the message's subject in the error (built only then).
pub fn ensure_connected(
    js: &jetstream::Context,
    subject: impl FnOnce() -> String,
) -> Result<(), NatsError> {
    match not_connected(js) {
        None => Ok(()),
        Some(state) => Err(NatsError::NotConnected {
            subject: subject(),
            state,
        }),
    }
}

/// Publishes `payload` to `subject` with [`publish_headers`] (written into `extra`, the
/// publisher's own headers such as `Nats-Expected-Last-Subject-Sequence`, when given: one map per
/// message, nothing copied; a header the context writes replaces the same one in `extra`), and waits
/// for the JetStream ack up to `timeout`.
pub async fn publish(
    js: &jetstream::Context,
    subject: String,
    ctx: &RequestContext,
    msg_id: &str,
    extra: Option<async_nats::HeaderMap>,
    payload: Bytes,
    timeout: Duration,
) -> Result<jetstream::publish::PublishAck, NatsError> {
    let mut map = extra.unwrap_or_default();
    write_publish_headers(&mut map, ctx, msg_id);
    let fail = |reason: String| NatsError::Publish {
        subject: subject.clone(),
        reason,
    };
    let work = async {
        let ack: PublishAckFuture = js
            .publish_with_headers(subject.clone(), map, payload)
            .await
            .map_err(|e| match e.kind() {
                jetstream::context::PublishErrorKind::MaxPayloadExceeded => NatsError::TooLarge {
                    subject: subject.clone(),
                    reason: e.to_string(),
                },
                _ => fail(e.to_string()),
            })?;
        ack.await.map_err(|e| match e.kind() {
            jetstream::context::PublishErrorKind::WrongLastSequence => {
                NatsError::WrongLastSequence {
                    subject: subject.clone(),
                }
            }
            _ => fail(e.to_string()),
        })
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(NatsError::PublishTimeout {
            subject: subject.clone(),
            timeout,
        }),
    }
}
