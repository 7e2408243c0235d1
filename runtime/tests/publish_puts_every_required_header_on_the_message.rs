//! The publish helper puts every required NATS header on a message (read back through a
//! consumer).

use std::time::Duration;

use bytes::Bytes;
use cloudlysis_runtime::context::{RequestContext, TenantId};
use cloudlysis_runtime::nats::{self, NatsSettings};
use cloudlysis_runtime::{TraceParent, stream, subject};
use cloudlysis_test_support::NatsServer;
use futures::StreamExt;

/// A JetStream context on `server` with the aggregate events stream in place.
async fn events_stream(server: &NatsServer) -> async_nats::jetstream::Context {
    let client = nats::connect(&NatsSettings::for_url(server.url()))
        .await
        .unwrap();
    let js = nats::jetstream(client, Duration::from_secs(5));
    stream::ensure_stream(&js, &stream::aggregate_events())
        .await
        .unwrap();
    js
}

#[tokio::test]
async fn published_messages_carry_every_required_header() {
    let server = NatsServer::start().await.unwrap();
    let js = events_stream(&server).await;

    let tenant = TenantId::new("acme").unwrap();
    let mut ctx = RequestContext::new(tenant.clone());
    ctx.traceparent =
        TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    ctx.tracestate = Some("vendor=1".parse().unwrap());
    let subject = subject::aggregate_event(
        &tenant,
        &"account".try_into().unwrap(),
        &"a-1".try_into().unwrap(),
    );
    let ack = nats::publish(
        &js,
        subject.clone(),
        &ctx,
        "event-1",
        None,
        Bytes::from_static(b"{}"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(ack.stream, "AGGREGATE_EVENTS");
    assert!(!ack.duplicate);

    // The same Nats-Msg-Id is de-duplicated by the stream.
    let again = nats::publish(
        &js,
        subject.clone(),
        &ctx,
        "event-1",
        None,
        Bytes::from_static(b"{}"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(again.duplicate);

    let consumer = js
        .get_stream("AGGREGATE_EVENTS")
        .await
        .unwrap()
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(msg.subject.as_str(), subject);
    let h = msg.headers.as_ref().expect("headers");
    let get = |n: &str| h.get(n).map(|v| v.as_str().to_string());
    assert_eq!(get("tenant-id").as_deref(), Some("acme"));
    assert_eq!(get("Nats-Msg-Id").as_deref(), Some("event-1"));
    assert_eq!(
        get("x-correlation-id"),
        Some(ctx.correlation_id.to_string())
    );
    assert_eq!(get("correlation-id"), Some(ctx.correlation_id.to_string()));
    assert_eq!(
        get("traceparent").as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(
        get("trace-id").as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(get("tracestate").as_deref(), Some("vendor=1"));

    // And a consumer hydrates the context back from the headers.
    let back = RequestContext::extract_nats(h).unwrap();
    assert_eq!(back.tenant, tenant);
    assert_eq!(back.correlation_id, ctx.correlation_id);
    assert_eq!(back.trace_id(), ctx.trace_id());
}

#[tokio::test]
async fn the_publishers_own_headers_go_with_the_contexts_and_a_context_header_is_never_doubled() {
    let server = NatsServer::start().await.unwrap();
    let js = events_stream(&server).await;
    let tenant = TenantId::new("acme").unwrap();
    let ctx = RequestContext::new(tenant.clone());
    let subject = subject::aggregate_event(
        &tenant,
        &"account".try_into().unwrap(),
        &"a-2".try_into().unwrap(),
    );
    let mut extra = async_nats::HeaderMap::new();
    extra.insert("Nats-Expected-Last-Subject-Sequence", "0");
    extra.insert("x-publisher", "entity");
    // A context header the publisher should not set: the context's value wins, once.
    extra.insert("tenant-id", "other");
    nats::publish(
        &js,
        subject.clone(),
        &ctx,
        "event-2",
        Some(extra),
        Bytes::from_static(b"{}"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    // The expected-sequence header took effect: a second publish expecting 0 is refused.
    let mut stale = async_nats::HeaderMap::new();
    stale.insert("Nats-Expected-Last-Subject-Sequence", "0");
    let err = nats::publish(
        &js,
        subject.clone(),
        &ctx,
        "event-3",
        Some(stale),
        Bytes::from_static(b"{}"),
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, nats::NatsError::WrongLastSequence { .. }),
        "{err}"
    );

    let msg = js
        .get_stream("AGGREGATE_EVENTS")
        .await
        .unwrap()
        .get_last_raw_message_by_subject(&subject)
        .await
        .unwrap();
    let h = msg.headers;
    let all = |n: &str| -> Vec<String> { h.get_all(n).map(|v| v.as_str().to_string()).collect() };
    assert_eq!(all("tenant-id"), ["acme"]);
    assert_eq!(all("x-publisher"), ["entity"]);
    assert_eq!(all("Nats-Msg-Id"), ["event-2"]);
    assert_eq!(all("correlation-id"), [ctx.correlation_id.to_string()]);
}

#[tokio::test]
async fn connect_to_a_dead_port_fails_within_its_deadline() {
    // Bind then drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut settings = NatsSettings::for_url(format!("nats://127.0.0.1:{port}"));
    settings.connect_timeout = Duration::from_millis(500);
    let err = nats::connect(&settings).await.unwrap_err();
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

/// A message over the server's `max_payload` (with its headers) is refused as `TooLarge` — never
/// sent, and never worth another try — rather than as a publish failure like an outage's.
#[tokio::test]
async fn a_message_over_max_payload_is_too_large_not_a_failed_publish() {
    let server = NatsServer::start().await.unwrap();
    let js = events_stream(&server).await;
    let max = js.client().server_info().max_payload;
    let tenant = TenantId::new("acme").unwrap();
    let subject = subject::aggregate_event(
        &tenant,
        &"account".try_into().unwrap(),
        &"a-1".try_into().unwrap(),
    );
    // Fits by itself; not with the headers the helper adds.
    let err = nats::publish(
        &js,
        subject,
        &RequestContext::new(tenant),
        "event-big",
        None,
        Bytes::from(vec![b'x'; max - 16]),
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, nats::NatsError::TooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("refused"), "{err}");
}
