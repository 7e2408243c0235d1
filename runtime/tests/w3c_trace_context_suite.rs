//! The W3C Trace Context test suite (`w3c/trace-context`, folder `test/`, `test.py` at commit
//! 00a91acf, strict level 2), mirrored one for one: each test below is named after the suite's
//! method and sends the same header lines. The "service" is Cloudlysis's propagation code —
//! extract a `RequestContext` from the incoming headers, then inject it into the outgoing ones
//! (each outgoing call with its own span id, `next_hop`) — run on each carrier: HTTP headers,
//! gRPC metadata and NATS headers. The outgoing headers are then checked as the suite's
//! harness checks them: exactly one `traceparent`, version `00` with four fields, lowercase hex,
//! non-zero ids, and a `tracestate` that parses under the Level 1 grammar.
//!
//! After the mirrored cases come tests of each rule on all three carriers.

use cloudlysis_runtime::context::{RequestContext, TenantId, headers};
use cloudlysis_runtime::trace::TraceState;

const TP_VALID_01: &str = "00-12345678901234567890123456789012-1234567890123456-01";
const TP_VALID_00: &str = "00-12345678901234567890123456789012-1234567890123456-00";
const TRACE_ID: &str = "12345678901234567890123456789012";
const PARENT_ID: &str = "1234567890123456";

#[derive(Debug, Clone, Copy)]
enum Carrier {
    Http,
    Grpc,
    Nats,
}

const CARRIERS: [Carrier; 3] = [Carrier::Http, Carrier::Grpc, Carrier::Nats];

/// What one outgoing request carried, as the harness reads it.
#[derive(Debug)]
struct Out {
    trace_id: String,
    parent_id: String,
    state: TraceState,
}

impl Out {
    fn get(&self, key: &str) -> Option<&str> {
        self.state.get(key)
    }
}

/// The harness's strict reading of an outgoing `traceparent`.
fn strict_traceparent(values: &[String]) -> (String, String) {
    assert_eq!(
        values.len(),
        1,
        "expect one traceparent header, got {values:?}"
    );
    let parts: Vec<&str> = values[0].split('-').collect();
    assert_eq!(parts.len(), 4, "exactly four fields: {}", values[0]);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    assert_eq!(parts[0], "00", "version 00 only: {}", values[0]);
    assert!(
        hex(parts[1], 32) && parts[1] != "0".repeat(32),
        "{}",
        values[0]
    );
    assert!(
        hex(parts[2], 16) && parts[2] != "0".repeat(16),
        "{}",
        values[0]
    );
    assert!(hex(parts[3], 2), "{}", values[0]);
    (parts[1].to_string(), parts[2].to_string())
}

/// Sends `lines` to the propagation code on `carrier`; the service makes `calls` outgoing
/// requests.
fn run(carrier: Carrier, lines: &[(&str, &str)], calls: usize) -> Vec<Out> {
    let tenant = TenantId::new("acme").unwrap();
    let ctx = match carrier {
        Carrier::Http | Carrier::Grpc => {
            let mut map = http::HeaderMap::new();
            map.insert(headers::TENANT_ID, "acme".parse().unwrap());
            for (name, value) in lines {
                map.append(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(value).unwrap(),
                );
            }
            match carrier {
                Carrier::Http => RequestContext::extract_with_tenant(&map, tenant).unwrap(),
                _ => {
                    let md = tonic::metadata::MetadataMap::from_headers(map);
                    RequestContext::extract_with_tenant(&md, tenant).unwrap()
                }
            }
        }
        Carrier::Nats => {
            let mut map = async_nats::HeaderMap::new();
            map.insert(headers::NATS_TENANT_ID, "acme");
            for (name, value) in lines {
                map.append(*name, *value);
            }
            RequestContext::extract_nats(&map).unwrap()
        }
    };
    (0..calls)
        .map(|_| {
            let mut next = ctx.clone();
            next.traceparent = ctx.traceparent.next_hop();
            let (tps, tss): (Vec<String>, Vec<String>) = match carrier {
                Carrier::Http => {
                    let mut out = http::HeaderMap::new();
                    next.inject(&mut out);
                    (all_http(&out, "traceparent"), all_http(&out, "tracestate"))
                }
                Carrier::Grpc => {
                    let mut out = tonic::metadata::MetadataMap::new();
                    next.inject(&mut out);
                    let out = out.into_headers();
                    (all_http(&out, "traceparent"), all_http(&out, "tracestate"))
                }
                Carrier::Nats => {
                    let mut out = async_nats::HeaderMap::new();
                    next.inject_nats(&mut out);
                    let all = |n: &str| {
                        out.iter()
                            .filter(|(k, _)| {
                                let k: &str = k.as_ref();
                                k.eq_ignore_ascii_case(n)
                            })
                            .flat_map(|(_, vs)| vs.iter().map(|v| v.as_str().to_string()))
                            .collect::<Vec<_>>()
                    };
                    (all("traceparent"), all("tracestate"))
                }
            };
            let (trace_id, parent_id) = strict_traceparent(&tps);
            let state = TraceState::from_lines(tss.iter().map(String::as_str))
                .unwrap_or_else(|e| panic!("the outgoing tracestate {tss:?} must parse: {e}"));
            Out {
                trace_id,
                parent_id,
                state,
            }
        })
        .collect()
}

fn all_http(map: &http::HeaderMap, name: &str) -> Vec<String> {
    map.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn one(c: Carrier, lines: &[(&str, &str)]) -> Out {
    run(c, lines, 1).pop().unwrap()
}

/// One test per suite method, run on every carrier.
macro_rules! w3c {
    ($name:ident, |$c:ident| $body:block) => {
        #[test]
        fn $name() {
            for $c in CARRIERS {
                $body
            }
        }
    };
}

fn tp(v: &str) -> (&'static str, String) {
    ("traceparent", v.to_string())
}

fn lines<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

// ---- TraceContextTest ----

w3c!(test_both_traceparent_and_tracestate_missing, |c| {
    let out = one(c, &[]);
    assert_ne!(out.trace_id, "0".repeat(32), "{c:?}");
});

w3c!(test_traceparent_included_tracestate_missing, |c| {
    let out = one(c, &[("traceparent", TP_VALID_01)]);
    assert_eq!(out.trace_id, TRACE_ID, "{c:?}");
    assert_ne!(out.parent_id, PARENT_ID, "{c:?}");
});

w3c!(test_traceparent_duplicated, |c| {
    let out = one(
        c,
        &[
            (
                "traceparent",
                "00-12345678901234567890123456789011-1234567890123456-01",
            ),
            (
                "traceparent",
                "00-12345678901234567890123456789012-1234567890123456-01",
            ),
        ],
    );
    assert_ne!(out.trace_id, "12345678901234567890123456789011", "{c:?}");
    assert_ne!(out.trace_id, "12345678901234567890123456789012", "{c:?}");
});

w3c!(test_traceparent_header_name, |c| {
    for name in ["trace-parent", "trace.parent"] {
        let out = one(c, &[(name, TP_VALID_01)]);
        assert_ne!(out.trace_id, TRACE_ID, "{c:?} {name}");
    }
});

w3c!(test_traceparent_header_name_valid_casing, |c| {
    for name in ["TraceParent", "TrAcEpArEnT", "TRACEPARENT"] {
        let out = one(c, &[(name, TP_VALID_01)]);
        assert_eq!(out.trace_id, TRACE_ID, "{c:?} {name}");
    }
});

w3c!(test_traceparent_version_0x00, |c| {
    for v in [
        "00-12345678901234567890123456789012-1234567890123456-01.",
        "00-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like",
    ] {
        assert_ne!(
            one(c, &[("traceparent", v)]).trace_id,
            TRACE_ID,
            "{c:?} {v}"
        );
    }
});

w3c!(test_traceparent_version_0xcc, |c| {
    for v in [
        "cc-12345678901234567890123456789012-1234567890123456-01",
        "cc-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like",
    ] {
        assert_eq!(
            one(c, &[("traceparent", v)]).trace_id,
            TRACE_ID,
            "{c:?} {v}"
        );
    }
    let v = "cc-12345678901234567890123456789012-1234567890123456-01.what-the-future-will-be-like";
    assert_ne!(
        one(c, &[("traceparent", v)]).trace_id,
        TRACE_ID,
        "{c:?} {v}"
    );
});

w3c!(test_traceparent_version_0xff, |c| {
    let v = "ff-12345678901234567890123456789012-1234567890123456-01";
    assert_ne!(one(c, &[("traceparent", v)]).trace_id, TRACE_ID, "{c:?}");
});

w3c!(test_traceparent_version_illegal_characters, |c| {
    for v in [
        ".0-12345678901234567890123456789012-1234567890123456-01",
        "0.-12345678901234567890123456789012-1234567890123456-01",
    ] {
        assert_ne!(
            one(c, &[("traceparent", v)]).trace_id,
            TRACE_ID,
            "{c:?} {v}"
        );
    }
});

w3c!(test_traceparent_version_too_long, |c| {
    for v in [
        "000-12345678901234567890123456789012-1234567890123456-01",
        "0000-12345678901234567890123456789012-1234567890123456-01",
    ] {
        assert_ne!(
            one(c, &[("traceparent", v)]).trace_id,
            TRACE_ID,
            "{c:?} {v}"
        );
    }
});

w3c!(test_traceparent_version_too_short, |c| {
    let v = "0-12345678901234567890123456789012-1234567890123456-01";
    assert_ne!(one(c, &[("traceparent", v)]).trace_id, TRACE_ID, "{c:?}");
});

w3c!(test_traceparent_trace_id_all_zero, |c| {
    let v = "00-00000000000000000000000000000000-1234567890123456-01";
    assert_ne!(
        one(c, &[("traceparent", v)]).trace_id,
        "0".repeat(32),
        "{c:?}"
    );
});

w3c!(test_traceparent_trace_id_illegal_characters, |c| {
    for (v, id) in [
        (
            "00-.2345678901234567890123456789012-1234567890123456-01",
            ".2345678901234567890123456789012",
        ),
        (
            "00-1234567890123456789012345678901.-1234567890123456-01",
            "1234567890123456789012345678901.",
        ),
    ] {
        let out = one(c, &[("traceparent", v)]);
        assert_ne!(out.trace_id, id, "{c:?} {v}");
        assert_ne!(out.trace_id, TRACE_ID, "{c:?} {v}: the trace restarts");
    }
});

w3c!(test_traceparent_trace_id_too_long, |c| {
    let out = one(
        c,
        &[(
            "traceparent",
            "00-123456789012345678901234567890123-1234567890123456-01",
        )],
    );
    for id in [
        "123456789012345678901234567890123",
        "12345678901234567890123456789012",
        "23456789012345678901234567890123",
    ] {
        assert_ne!(out.trace_id, id, "{c:?}");
    }
});

w3c!(test_traceparent_trace_id_too_short, |c| {
    let out = one(
        c,
        &[(
            "traceparent",
            "00-1234567890123456789012345678901-1234567890123456-01",
        )],
    );
    assert_ne!(out.trace_id, "1234567890123456789012345678901", "{c:?}");
});

w3c!(test_traceparent_parent_id_all_zero, |c| {
    let v = "00-12345678901234567890123456789012-0000000000000000-01";
    assert_ne!(one(c, &[("traceparent", v)]).trace_id, TRACE_ID, "{c:?}");
});

w3c!(test_traceparent_parent_id_illegal_characters, |c| {
    for v in [
        "00-12345678901234567890123456789012-.234567890123456-01",
        "00-12345678901234567890123456789012-123456789012345.-01",
    ] {
        assert_ne!(
            one(c, &[("traceparent", v)]).trace_id,
            TRACE_ID,
            "{c:?} {v}"
        );
    }
});

w3c!(test_traceparent_parent_id_too_long, |c| {
    let v = "00-12345678901234567890123456789012-12345678901234567-01";
    assert_ne!(one(c, &[("traceparent", v)]).trace_id, TRACE_ID, "{c:?}");
});

w3c!(test_traceparent_parent_id_too_short, |c| {
    let v = "00-12345678901234567890123456789012-123456789012345-01";
    assert_ne!(one(c, &[("traceparent", v)]).trace_id, TRACE_ID, "{c:?}");
});

w3c!(test_traceparent_trace_flags_illegal_characters, |c| {
    for v in [
        "00-12345678901234567890123456789012-1234567890123456-.0",
        "00-12345678901234567890123456789012-1234567890123456-0.",
    ] {
        assert_ne!(
            one(c, &[("traceparent", v)]).trace_id,
            TRACE_ID,
            "{c:?} {v}"
        );
    }
});

w3c!(test_traceparent_trace_flags_too_long, |c| {
    let v = "00-12345678901234567890123456789012-1234567890123456-001";
    assert_ne!(one(c, &[("traceparent", v)]).trace_id, TRACE_ID, "{c:?}");
});

w3c!(test_traceparent_trace_flags_too_short, |c| {
    let v = "00-12345678901234567890123456789012-1234567890123456-1";
    assert_ne!(one(c, &[("traceparent", v)]).trace_id, TRACE_ID, "{c:?}");
});

w3c!(test_traceparent_ows_handling, |c| {
    for v in [
        " 00-12345678901234567890123456789012-1234567890123456-01",
        "\t00-12345678901234567890123456789012-1234567890123456-01",
        "00-12345678901234567890123456789012-1234567890123456-01 ",
        "00-12345678901234567890123456789012-1234567890123456-01\t",
        "\t 00-12345678901234567890123456789012-1234567890123456-01 \t",
    ] {
        assert_eq!(
            one(c, &[("traceparent", v)]).trace_id,
            TRACE_ID,
            "{c:?} {v:?}"
        );
    }
});

w3c!(test_tracestate_included_traceparent_missing, |c| {
    let one_member = one(c, &[("tracestate", "foo=1")]);
    let two_members = one(c, &[("tracestate", "foo=1,bar=2")]);
    assert_eq!(one_member.state.len(), two_members.state.len(), "{c:?}");
    assert!(two_members.get("foo").is_none(), "{c:?}");
});

w3c!(test_tracestate_included_traceparent_included, |c| {
    let out = one(
        c,
        &[("traceparent", TP_VALID_00), ("tracestate", "foo=1,bar=2")],
    );
    assert_eq!(out.trace_id, TRACE_ID, "{c:?}");
    assert_eq!(out.get("foo"), Some("1"), "{c:?}");
    assert_eq!(out.get("bar"), Some("2"), "{c:?}");
});

w3c!(test_tracestate_header_name, |c| {
    for name in ["trace-state", "trace.state"] {
        let out = one(c, &[("traceparent", TP_VALID_00), (name, "foo=1")]);
        assert!(out.get("foo").is_none(), "{c:?} {name}");
    }
});

w3c!(test_tracestate_header_name_valid_casing, |c| {
    for name in ["TraceState", "TrAcEsTaTe", "TRACESTATE"] {
        let out = one(c, &[("traceparent", TP_VALID_00), (name, "foo=1")]);
        assert_eq!(out.get("foo"), Some("1"), "{c:?} {name}");
    }
});

w3c!(test_tracestate_empty_header, |c| {
    let out = one(c, &[("traceparent", TP_VALID_00), ("tracestate", "")]);
    assert_eq!(out.trace_id, TRACE_ID, "{c:?}");
    assert!(out.state.is_empty());
    for ls in [
        [
            ("traceparent", TP_VALID_00),
            ("tracestate", "foo=1"),
            ("tracestate", ""),
        ],
        [
            ("traceparent", TP_VALID_00),
            ("tracestate", ""),
            ("tracestate", "foo=1"),
        ],
    ] {
        let out = one(c, &ls);
        assert_eq!(out.trace_id, TRACE_ID, "{c:?}");
        assert_eq!(out.get("foo"), Some("1"), "{c:?}");
    }
});

w3c!(test_tracestate_multiple_headers_different_keys, |c| {
    let out = one(
        c,
        &[
            ("traceparent", TP_VALID_00),
            ("tracestate", "foo=1,bar=2"),
            ("tracestate", "rojo=1,congo=2"),
            ("tracestate", "baz=3"),
        ],
    );
    assert_eq!(out.trace_id, TRACE_ID, "{c:?}");
    let text = out.state.to_string();
    let at = |m: &str| {
        text.find(m)
            .unwrap_or_else(|| panic!("{m} missing in {text}"))
    };
    assert!(at("foo=1") < at("bar=2"), "{c:?} {text}");
    assert!(at("bar=2") < at("rojo=1"), "{c:?} {text}");
    assert!(at("rojo=1") < at("congo=2"), "{c:?} {text}");
    assert!(at("congo=2") < at("baz=3"), "{c:?} {text}");
});

w3c!(test_tracestate_duplicated_keys, |c| {
    for ls in [
        vec![("traceparent", TP_VALID_00), ("tracestate", "foo=1,foo=1")],
        vec![("traceparent", TP_VALID_00), ("tracestate", "foo=1,foo=2")],
        vec![
            ("traceparent", TP_VALID_00),
            ("tracestate", "foo=1"),
            ("tracestate", "foo=1"),
        ],
        vec![
            ("traceparent", TP_VALID_00),
            ("tracestate", "foo=1"),
            ("tracestate", "foo=2"),
        ],
    ] {
        let out = one(c, &ls);
        assert_eq!(out.trace_id, TRACE_ID, "{c:?} {ls:?}");
        assert!(out.get("foo").is_none(), "{c:?} {ls:?}");
    }
});

w3c!(test_tracestate_all_allowed_characters, |c| {
    let key_without_vendor = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
    let key_with_vendor = format!("{key_without_vendor}@a-z0-9_-*/");
    let value: String = (0x20u8..=0x2b)
        .chain(0x2d..=0x3c)
        .chain(0x3e..=0x7e)
        .map(char::from)
        .collect();
    assert!(value.starts_with(' '));
    for key in [key_without_vendor.to_string(), key_with_vendor] {
        let member = format!("{key}={value}");
        let out = one(c, &[("traceparent", TP_VALID_00), ("tracestate", &member)]);
        assert_eq!(out.get(&key), Some(value.as_str()), "{c:?} {key}");
    }
});

w3c!(test_tracestate_ows_handling, |c| {
    for v in [
        "foo=1 \t , \t bar=2, \t baz=3",
        "foo=1\t \t,\t \tbar=2,\t \tbaz=3",
    ] {
        let out = one(c, &[("traceparent", TP_VALID_00), ("tracestate", v)]);
        assert_eq!(out.get("foo"), Some("1"), "{c:?} {v:?}");
        assert_eq!(out.get("bar"), Some("2"), "{c:?} {v:?}");
        assert_eq!(out.get("baz"), Some("3"), "{c:?} {v:?}");
    }
    for v in [" foo=1", "\tfoo=1", "foo=1 ", "foo=1\t", "\t foo=1 \t"] {
        let out = one(c, &[("traceparent", TP_VALID_00), ("tracestate", v)]);
        assert_eq!(out.trace_id, TRACE_ID, "{c:?} {v:?}");
        assert_eq!(out.get("foo"), Some("1"), "{c:?} {v:?}");
    }
});

w3c!(test_tracestate_key_illegal_characters, |c| {
    for (v, key) in [
        ("foo =1", "foo "),
        ("FOO=1", "FOO"),
        ("foo.bar=1", "foo.bar"),
    ] {
        let out = one(c, &[("traceparent", TP_VALID_00), ("tracestate", v)]);
        assert!(out.get(key).is_none(), "{c:?} {v}");
        assert!(
            out.state.is_empty(),
            "{c:?} {v}: the whole header is discarded"
        );
    }
});

w3c!(test_tracestate_key_illegal_vendor_format, |c| {
    for v in [
        "foo@=1,bar=2",
        "@foo=1,bar=2",
        "foo@@bar=1,bar=2",
        "foo@bar@baz=1,bar=2",
    ] {
        let out = one(c, &[("traceparent", TP_VALID_00), ("tracestate", v)]);
        assert!(out.get("bar").is_none(), "{c:?} {v}");
    }
});

w3c!(test_tracestate_member_count_limit, |c| {
    let first =
        "bar01=01,bar02=02,bar03=03,bar04=04,bar05=05,bar06=06,bar07=07,bar08=08,bar09=09,bar10=10";
    let second =
        "bar11=11,bar12=12,bar13=13,bar14=14,bar15=15,bar16=16,bar17=17,bar18=18,bar19=19,bar20=20";
    let third =
        "bar21=21,bar22=22,bar23=23,bar24=24,bar25=25,bar26=26,bar27=27,bar28=28,bar29=29,bar30=30";
    let out = one(
        c,
        &[
            ("traceparent", TP_VALID_00),
            ("tracestate", first),
            ("tracestate", second),
            ("tracestate", third),
            ("tracestate", "bar31=31,bar32=32"),
        ],
    );
    assert_eq!(out.get("bar01"), Some("01"), "{c:?}");
    assert_eq!(out.state.len(), 32, "{c:?}");
    let out = one(
        c,
        &[
            ("traceparent", TP_VALID_00),
            ("tracestate", first),
            ("tracestate", second),
            ("tracestate", third),
            ("tracestate", "bar31=31,bar32=32,bar33=33"),
        ],
    );
    assert!(out.get("bar01").is_none(), "{c:?}");
});

w3c!(test_tracestate_key_length_limit, |c| {
    let cases = [
        (format!("{}=1", "z".repeat(256)), true),
        (format!("{}=1", "z".repeat(257)), false),
        (format!("{}@{}=1", "t".repeat(241), "v".repeat(14)), true),
        (format!("{}@v=1", "t".repeat(242)), false),
        (format!("t@{}=1", "v".repeat(15)), false),
    ];
    for (second, kept) in cases {
        let ls = [
            tp(TP_VALID_00),
            ("tracestate", "foo=1".to_string()),
            ("tracestate", second.clone()),
        ];
        let out = one(c, &lines(&ls));
        assert_eq!(out.get("foo").is_some(), kept, "{c:?} {}", &second[..20]);
        if kept {
            assert_eq!(out.get("foo"), Some("1"));
        }
    }
});

w3c!(test_tracestate_value_illegal_characters, |c| {
    let out = one(
        c,
        &[("traceparent", TP_VALID_00), ("tracestate", "foo=bar=baz")],
    );
    assert!(out.get("foo").is_none(), "{c:?}");
    let out = one(
        c,
        &[("traceparent", TP_VALID_00), ("tracestate", "foo=,bar=3")],
    );
    assert!(
        out.get("foo").is_none() && out.get("bar").is_none(),
        "{c:?}"
    );
});

// ---- AdvancedTest ----

w3c!(test_multiple_requests_with_valid_traceparent, |c| {
    let outs = run(c, &[("traceparent", TP_VALID_01)], 3);
    let traces: std::collections::HashSet<_> = outs.iter().map(|o| o.trace_id.clone()).collect();
    let parents: std::collections::HashSet<_> = outs.iter().map(|o| o.parent_id.clone()).collect();
    assert_eq!(traces.len(), 1, "{c:?}");
    assert!(traces.contains(TRACE_ID), "{c:?}");
    assert_eq!(parents.len(), 3, "{c:?}");
});

w3c!(test_multiple_requests_without_traceparent, |c| {
    let outs = run(c, &[], 3);
    let parents: std::collections::HashSet<_> = outs.iter().map(|o| o.parent_id.clone()).collect();
    assert_eq!(parents.len(), 3, "{c:?}");
});

w3c!(test_multiple_requests_with_illegal_traceparent, |c| {
    let outs = run(
        c,
        &[(
            "traceparent",
            "00-00000000000000000000000000000000-1234567890123456-01",
        )],
        3,
    );
    assert!(outs.iter().all(|o| o.trace_id != "0".repeat(32)), "{c:?}");
    let parents: std::collections::HashSet<_> = outs.iter().map(|o| o.parent_id.clone()).collect();
    assert_eq!(parents.len(), 3, "{c:?}");
});

// ---- The rules, on every carrier ----

w3c!(
    rule_a_missing_or_invalid_traceparent_drops_the_tracestate,
    |c| {
        for ls in [
            vec![("tracestate", "congo=t61rcWkgMzE")],
            vec![
                ("traceparent", "ff-bad"),
                ("tracestate", "congo=t61rcWkgMzE"),
            ],
            vec![
                ("traceparent", TP_VALID_01),
                ("traceparent", TP_VALID_01),
                ("tracestate", "congo=t61rcWkgMzE"),
            ],
        ] {
            let out = one(c, &ls);
            assert_ne!(out.trace_id, TRACE_ID, "{c:?} {ls:?}");
            assert!(out.state.is_empty(), "{c:?} {ls:?}");
        }
    }
);

w3c!(rule_a_valid_tracestate_is_propagated_unchanged, |c| {
    let v = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,1tenant@vendor=x y";
    let out = one(c, &[("traceparent", TP_VALID_01), ("tracestate", v)]);
    assert_eq!(out.state.to_string(), v, "{c:?}");
});

w3c!(
    rule_an_invalid_tracestate_is_dropped_without_touching_the_traceparent,
    |c| {
        for v in ["foo", "foo=1,bar", "foo=1\t2", "Foo=1", "foo=a,=b"] {
            let out = one(c, &[("traceparent", TP_VALID_01), ("tracestate", v)]);
            assert_eq!(out.trace_id, TRACE_ID, "{c:?} {v:?}");
            assert!(out.state.is_empty(), "{c:?} {v:?}");
        }
    }
);

w3c!(rule_values_are_at_most_256_characters, |c| {
    let ok = format!("foo={}", "v".repeat(256));
    let long = format!("foo={}", "v".repeat(257));
    assert!(
        one(c, &[("traceparent", TP_VALID_01), ("tracestate", &ok)])
            .get("foo")
            .is_some()
    );
    assert!(
        one(c, &[("traceparent", TP_VALID_01), ("tracestate", &long)])
            .get("foo")
            .is_none()
    );
});

w3c!(rule_empty_members_are_skipped, |c| {
    let out = one(
        c,
        &[
            ("traceparent", TP_VALID_01),
            ("tracestate", ",foo=1,, ,\t,bar=2,"),
        ],
    );
    assert_eq!(out.state.to_string(), "foo=1,bar=2", "{c:?}");
});

w3c!(rule_an_overlong_header_is_dropped, |c| {
    // 32 members of 256-byte values: 8 kB and more once combined.
    let members: Vec<String> = (0..32)
        .map(|i| format!("k{i:02}={}", "v".repeat(256)))
        .collect();
    let v = members.join(",");
    assert!(v.len() > cloudlysis_runtime::trace::state::MAX_HEADER_LEN);
    let out = one(c, &[("traceparent", TP_VALID_01), ("tracestate", &v)]);
    assert_eq!(out.trace_id, TRACE_ID, "{c:?}");
    assert!(out.state.is_empty(), "{c:?}");
});
