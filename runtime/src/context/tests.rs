use super::*;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

#[test]
fn newtypes_serialize_as_plain_strings() {
    assert_eq!(serde_json::to_string(&tenant()).unwrap(), "\"acme\"");
    let c = CorrelationId::new("corr-1").unwrap();
    assert_eq!(serde_json::to_string(&c).unwrap(), "\"corr-1\"");
    let t = TraceId::new("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    assert_eq!(
        serde_json::to_string(&t).unwrap(),
        "\"4bf92f3577b34da6a3ce929d0e0e4736\""
    );
    let back: TenantId = serde_json::from_str("\"acme\"").unwrap();
    assert_eq!(back, tenant());
}

#[test]
fn newtypes_refuse_invalid_strings_when_deserialized() {
    assert!(serde_json::from_str::<TenantId>("\"a.b\"").is_err());
    assert!(serde_json::from_str::<CorrelationId>("\"\"").is_err());
    assert!(serde_json::from_str::<TraceId>("\"00000000000000000000000000000000\"").is_err());
    assert!(serde_json::from_str::<TraceId>("\"4BF92F3577B34DA6A3CE929D0E0E4736\"").is_err());
}

#[test]
fn correlation_id_is_kept_when_valid_and_generated_otherwise() {
    assert_eq!(
        normalize_correlation_id(Some("abc-123")).as_str(),
        "abc-123"
    );
    for bad in [None, Some(""), Some("has space"), Some("é")] {
        let id = normalize_correlation_id(bad);
        assert!(uuid::Uuid::parse_str(id.as_str()).is_ok(), "{bad:?}");
    }
    let long = "x".repeat(MAX_CORRELATION_ID_LEN + 1);
    assert_ne!(normalize_correlation_id(Some(&long)).as_str(), long);
}

#[test]
fn http_round_trip_keeps_tenant_correlation_trace_and_tracestate() {
    let mut ctx = RequestContext::new(tenant());
    ctx.tracestate = Some("vendor=abc,other=1".parse().unwrap());
    ctx.request_id = Some("req-7".into());
    ctx.idempotency_key = Some("key-1".into());
    let mut map = http::HeaderMap::new();
    ctx.inject(&mut map);
    assert_eq!(map["x-tenant-id"], "acme");
    assert_eq!(map["tracestate"], "vendor=abc,other=1");
    let back = RequestContext::extract(&map).unwrap();
    assert_eq!(back.tenant, ctx.tenant);
    assert_eq!(back.correlation_id, ctx.correlation_id);
    assert_eq!(back.trace_id(), ctx.trace_id());
    assert_ne!(back.traceparent, ctx.traceparent, "next hop has a new span");
    assert_eq!(back.tracestate, ctx.tracestate);
    assert_eq!(back.request_id.as_deref(), Some("req-7"));
    assert_eq!(back.idempotency_key.as_deref(), Some("key-1"));
}

#[test]
fn grpc_metadata_round_trip() {
    let ctx = RequestContext::new(tenant());
    let mut md = tonic::metadata::MetadataMap::new();
    ctx.inject(&mut md);
    let back = RequestContext::extract(&md).unwrap();
    assert_eq!(back.tenant, ctx.tenant);
    assert_eq!(back.correlation_id, ctx.correlation_id);
    assert_eq!(back.trace_id(), ctx.trace_id());
}

#[test]
fn extraction_requires_a_valid_tenant() {
    let map = http::HeaderMap::new();
    assert_eq!(
        RequestContext::extract(&map),
        Err(ContextError::MissingTenant("x-tenant-id"))
    );
    let mut map = http::HeaderMap::new();
    map.insert("x-tenant-id", "a.b".parse().unwrap());
    assert!(matches!(
        RequestContext::extract(&map),
        Err(ContextError::InvalidTenant(_))
    ));
}

#[test]
fn extraction_normalises_missing_and_invalid_trace_and_correlation() {
    let mut map = http::HeaderMap::new();
    map.insert(
        "traceparent",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    map.insert("x-correlation-id", "bad id".parse().unwrap());
    let ctx = RequestContext::extract_with_tenant(&map, tenant()).unwrap();
    assert_ne!(ctx.trace_id().as_str(), "00000000000000000000000000000000");
    assert_ne!(ctx.correlation_id.as_str(), "bad id");
}

#[test]
fn extraction_keeps_the_callers_trace_id() {
    let mut map = http::HeaderMap::new();
    map.insert("traceparent", TP.parse().unwrap());
    let ctx = RequestContext::extract_with_tenant(&map, tenant()).unwrap();
    assert_eq!(ctx.trace_id().as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[test]
fn nats_headers_carry_every_required_field() {
    let mut ctx = RequestContext::new(tenant());
    ctx.traceparent = TraceParent::parse(TP).unwrap();
    ctx.tracestate = Some("v=1".parse().unwrap());
    let mut map = async_nats::HeaderMap::new();
    ctx.inject_nats(&mut map);
    let get = |n: &str| map.get(n).map(|v| v.as_str().to_string());
    assert_eq!(get("tenant-id").as_deref(), Some("acme"));
    assert_eq!(
        get("x-correlation-id"),
        Some(ctx.correlation_id.to_string())
    );
    assert_eq!(get("correlation-id"), Some(ctx.correlation_id.to_string()));
    assert_eq!(get("traceparent").as_deref(), Some(TP));
    assert_eq!(
        get("trace-id").as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(get("tracestate").as_deref(), Some("v=1"));

    let back = RequestContext::extract_nats(&map).unwrap();
    assert_eq!(back.tenant, ctx.tenant);
    assert_eq!(back.correlation_id, ctx.correlation_id);
    assert_eq!(back.trace_id(), ctx.trace_id());
    assert_eq!(
        back.tracestate.map(|t| t.to_string()).as_deref(),
        Some("v=1")
    );
}

#[test]
fn nats_extraction_falls_back_to_trace_id_and_second_correlation_header() {
    let mut map = async_nats::HeaderMap::new();
    map.insert("tenant-id", "acme");
    map.insert("correlation-id", "c-2");
    map.insert("trace-id", "4bf92f3577b34da6a3ce929d0e0e4736");
    let ctx = RequestContext::extract_nats(&map).unwrap();
    assert_eq!(ctx.correlation_id.as_str(), "c-2");
    assert_eq!(ctx.trace_id().as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[test]
fn nats_extraction_without_tenant_is_an_error() {
    let map = async_nats::HeaderMap::new();
    assert_eq!(
        RequestContext::extract_nats(&map),
        Err(ContextError::MissingTenant("tenant-id"))
    );
}
