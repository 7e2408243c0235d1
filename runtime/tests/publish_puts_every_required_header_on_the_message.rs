//! The publish helper puts every required NATS header on a message (read back through a
//! consumer).

use std::time::Duration;

use bytes::Bytes;
use cloudlysis_runtime::context::{RequestContext, TenantId};
use cloudlysis_runtime::nats::{self, NatsSettings};
use cloudlysis_runtime::{TraceParent, stream, subject};
use cloudlysis_test_support::NatsServer;
use futures::StreamExt;

#[tokio::test]
async fn published_messages_carry_every_required_header() {
    let server = NatsServer::start().await.unwrap();
    let client = nats::connect(&NatsSettings::for_url(server.url()))
        .await
        .unwrap();
    let js = nats::jetstream(client, Duration::from_secs(5));
    stream::ensure_stream(&js, &stream::aggregate_events())
        .await
        .unwrap();

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
