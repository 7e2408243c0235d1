use super::*;

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn spec_example_is_valid_and_round_trips() {
    let tp = TraceParent::parse(VALID).unwrap();
    assert_eq!(tp.to_string(), VALID);
    assert_eq!(tp.trace_id().as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(tp.parent_id_hex(), "00f067aa0ba902b7");
    assert!(tp.sampled());
}

#[test]
fn unsampled_flags_are_kept() {
    let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let tp = TraceParent::parse(v).unwrap();
    assert!(!tp.sampled());
    assert_eq!(tp.to_string(), v);
}

#[test]
fn unknown_flag_bits_are_accepted() {
    let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09";
    assert_eq!(TraceParent::parse(v).unwrap().flags(), 0x09);
}

#[test]
fn higher_version_is_parsed_by_its_first_four_fields() {
    let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let tp = TraceParent::parse(v).unwrap();
    assert_eq!(tp.to_string(), VALID, "re-emitted as version 00");
}

#[test]
fn higher_version_with_extra_fields_is_accepted() {
    let v = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
    let tp = TraceParent::parse(v).unwrap();
    assert_eq!(tp.trace_id().as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[test]
fn higher_version_with_extra_data_not_after_a_dash_is_invalid() {
    let v = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what";
    assert!(matches!(
        TraceParent::parse(v),
        Err(TraceParentError::Malformed(_))
    ));
}

#[test]
fn version_00_with_trailing_data_is_invalid() {
    let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
    assert!(matches!(
        TraceParent::parse(v),
        Err(TraceParentError::Malformed(_))
    ));
}

#[test]
fn version_ff_is_invalid() {
    let v = "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_eq!(
        TraceParent::parse(v),
        Err(TraceParentError::ForbiddenVersion)
    );
}

#[test]
fn uppercase_hex_is_invalid_in_every_field() {
    for v in [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
        "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
    ] {
        assert!(
            matches!(
                TraceParent::parse(v),
                Err(TraceParentError::NotLowercaseHex(_))
            ),
            "{v}"
        );
    }
}

#[test]
fn all_zero_trace_id_is_invalid() {
    let v = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
    assert_eq!(TraceParent::parse(v), Err(TraceParentError::ZeroTraceId));
}

#[test]
fn all_zero_parent_id_is_invalid() {
    let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
    assert_eq!(TraceParent::parse(v), Err(TraceParentError::ZeroParentId));
}

#[test]
fn short_trace_id_is_invalid() {
    let v = "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01";
    assert!(TraceParent::parse(v).is_err());
}

#[test]
fn long_parent_id_is_invalid() {
    let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7a-01";
    assert!(TraceParent::parse(v).is_err());
}

#[test]
fn one_digit_version_or_flags_are_invalid() {
    for v in [
        "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
    ] {
        assert!(TraceParent::parse(v).is_err(), "{v}");
    }
}

#[test]
fn wrong_separators_are_invalid() {
    for v in [
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736.00f067aa0ba902b7-01",
    ] {
        assert!(TraceParent::parse(v).is_err(), "{v}");
    }
}

#[test]
fn non_hex_characters_are_invalid() {
    let v = "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01";
    assert!(matches!(
        TraceParent::parse(v),
        Err(TraceParentError::NotLowercaseHex("trace-id"))
    ));
}

#[test]
fn empty_and_whitespace_values_are_invalid() {
    assert!(TraceParent::parse("").is_err());
    assert!(TraceParent::parse(&format!(" {VALID}")).is_err());
    assert!(TraceParent::parse(&format!("{VALID} ")).is_err());
}

#[test]
fn non_ascii_input_is_refused_without_panicking() {
    // Multi-byte characters must not make slicing panic.
    let v = "00-4bf92f3577b34da6a3ce929d0e0e47é6-00f067aa0ba902b7-01";
    assert!(TraceParent::parse(v).is_err());
    let v = "ééééééééééééééééééééééééééééééééééééééééééééééééééééééé";
    assert!(TraceParent::parse(v).is_err());
}

#[test]
fn trace_id_is_derived_from_a_traceparent() {
    assert_eq!(
        trace_id_from_traceparent(VALID).unwrap().as_str(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert!(trace_id_from_traceparent("garbage").is_err());
}

#[test]
fn traceparent_built_from_a_trace_id_derives_back_to_it() {
    let id = TraceId::generate();
    let tp = traceparent_from_trace_id(&id);
    assert_eq!(trace_id_from_traceparent(&tp).unwrap(), id);
    assert!(tp.ends_with("-01"));
}

#[test]
fn normalize_keeps_the_trace_and_makes_a_new_span() {
    let out = normalize_traceparent(Some(VALID));
    assert_eq!(out.trace_id().as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(out.parent_id_hex(), "00f067aa0ba902b7");
    assert!(out.sampled());
    // And the result is itself a valid traceparent.
    assert_eq!(TraceParent::parse(&out.to_string()).unwrap(), out);
}

#[test]
fn normalize_generates_when_missing_or_invalid() {
    for input in [
        None,
        Some(""),
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ] {
        let out = normalize_traceparent(input);
        assert_ne!(out.trace_id().as_str(), "00000000000000000000000000000000");
        assert_ne!(out.trace_id().as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(TraceParent::parse(&out.to_string()).is_ok());
    }
}

#[test]
fn generated_traces_differ() {
    assert_ne!(TraceParent::generate(), TraceParent::generate());
}

proptest::proptest! {
    #[test]
    fn parse_never_panics(s in "\\PC{0,80}") {
        let _ = TraceParent::parse(&s);
    }

    #[test]
    fn any_valid_parts_round_trip(trace in "[0-9a-f]{32}", parent in "[0-9a-f]{16}", flags in "[0-9a-f]{2}") {
        let v = format!("00-{trace}-{parent}-{flags}");
        match TraceParent::parse(&v) {
            Ok(tp) => proptest::prop_assert_eq!(tp.to_string(), v),
            Err(e) => proptest::prop_assert!(matches!(e, TraceParentError::ZeroTraceId | TraceParentError::ZeroParentId)),
        }
    }
}

#[test]
fn unsampled_and_next_hop_traceparents_are_written_back_exactly() {
    let tp = TraceParent::parse(VALID).unwrap();
    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    assert_eq!(
        TraceParent::parse(unsampled).unwrap().to_string(),
        unsampled
    );
    let next = tp.next_hop();
    assert_eq!(TraceParent::parse(&next.to_string()).unwrap(), next);
}
