use super::*;

fn field_of(policy: &StreamPolicy, cfg: &Config) -> &'static str {
    policy.check(cfg).unwrap_err().field
}

#[test]
fn the_policy_config_is_compatible_with_itself() {
    for p in all() {
        assert_eq!(p.check(&p.stream_config()), Ok(()), "{}", p.name);
    }
}

#[test]
fn policies_capture_the_design_subjects() {
    assert_eq!(aggregate_events().subjects, ["tenant.*.aggregate.*.*"]);
    assert_eq!(workflow_commands().subjects, ["tenant.*.effect.*"]);
    assert_eq!(
        workflow_events().subjects,
        ["tenant.*.effect_result.*", "tenant.*.workflow.*.*"]
    );
}

#[test]
fn the_event_store_never_expires() {
    let cfg = aggregate_events().stream_config();
    assert!(cfg.max_age.is_zero());
    assert_eq!(cfg.max_messages, -1);
    assert_eq!(cfg.max_messages_per_subject, -1);
    assert_eq!(cfg.storage, StorageType::File);
}

#[test]
fn a_superset_of_subjects_and_larger_limits_are_accepted() {
    let p = workflow_commands();
    let mut cfg = p.stream_config();
    cfg.subjects = vec!["tenant.>".into(), "other.x".into()];
    cfg.max_age = Duration::from_secs(90 * 24 * 3600);
    cfg.duplicate_window = Duration::from_secs(3600);
    cfg.max_message_size = 8 * 1024 * 1024;
    assert_eq!(p.check(&cfg), Ok(()));
}

#[test]
fn a_missing_subject_is_refused() {
    let p = workflow_events();
    let mut cfg = p.stream_config();
    cfg.subjects = vec!["tenant.*.effect_result.*".into()];
    assert_eq!(field_of(&p, &cfg), "subjects");
    // A narrower pattern does not cover the required one.
    cfg.subjects = vec![
        "tenant.*.effect_result.*".into(),
        "tenant.*.workflow.transfer.*".into(),
    ];
    assert_eq!(field_of(&p, &cfg), "subjects");
}

#[test]
fn a_short_duplicate_window_is_refused() {
    let p = aggregate_events();
    let mut cfg = p.stream_config();
    cfg.duplicate_window = Duration::from_secs(60);
    let err = p.check(&cfg).unwrap_err();
    assert_eq!(err.field, "duplicate_window");
    assert!(err.to_string().contains("AGGREGATE_EVENTS"), "{err}");
}

#[test]
fn a_max_age_on_the_event_store_is_refused() {
    let p = aggregate_events();
    let mut cfg = p.stream_config();
    cfg.max_age = Duration::from_secs(3600 * 24 * 365);
    assert_eq!(field_of(&p, &cfg), "max_age");
}

#[test]
fn a_short_max_age_on_workflow_streams_is_refused() {
    let p = workflow_commands();
    let mut cfg = p.stream_config();
    cfg.max_age = Duration::from_secs(60);
    assert_eq!(field_of(&p, &cfg), "max_age");
    cfg.max_age = Duration::ZERO;
    assert_eq!(p.check(&cfg), Ok(()), "unlimited is fine");
}

#[test]
fn memory_storage_is_refused() {
    let p = aggregate_events();
    let mut cfg = p.stream_config();
    cfg.storage = StorageType::Memory;
    let err = p.check(&cfg).unwrap_err();
    assert_eq!(err.field, "storage");
    assert_eq!(err.reason, "must be file, found memory");
}

#[test]
fn other_retention_is_refused() {
    let p = workflow_commands();
    let mut cfg = p.stream_config();
    cfg.retention = RetentionPolicy::WorkQueue;
    assert_eq!(field_of(&p, &cfg), "retention");
}

#[test]
fn per_subject_and_total_limits_on_the_event_store_are_refused() {
    let p = aggregate_events();
    let mut cfg = p.stream_config();
    cfg.max_messages_per_subject = 10;
    assert_eq!(field_of(&p, &cfg), "max_msgs_per_subject");
    let mut cfg = p.stream_config();
    cfg.max_messages = 1_000_000;
    assert_eq!(field_of(&p, &cfg), "max_msgs");
    let mut cfg = p.stream_config();
    cfg.max_bytes = 1 << 30;
    assert_eq!(field_of(&p, &cfg), "max_bytes");
}

#[test]
fn a_small_message_size_limit_is_refused() {
    let p = aggregate_events();
    let mut cfg = p.stream_config();
    cfg.max_message_size = 1024;
    assert_eq!(field_of(&p, &cfg), "max_msg_size");
}

#[test]
fn streams_that_refuse_publishes_are_refused() {
    let p = aggregate_events();
    let mut cfg = p.stream_config();
    cfg.sealed = true;
    assert_eq!(field_of(&p, &cfg), "sealed");
    let mut cfg = p.stream_config();
    cfg.no_ack = true;
    assert_eq!(field_of(&p, &cfg), "no_ack");
}

#[test]
fn a_per_subject_limit_is_refused_on_every_stream() {
    for p in all() {
        let mut cfg = p.stream_config();
        cfg.max_messages_per_subject = 1;
        assert_eq!(field_of(&p, &cfg), "max_msgs_per_subject", "{}", p.name);
    }
}

/// Found by using the platform: a stream wrong in its subjects, storage, max age and duplicate
/// window was reported one field at a time — fix one, run again, learn the next.
#[test]
fn every_offending_field_is_named_at_once() {
    let p = aggregate_events();
    let mut cfg = p.stream_config();
    cfg.subjects = vec!["tenant.*.aggregate.account.*".into()];
    cfg.storage = StorageType::Memory;
    cfg.max_age = Duration::from_secs(60);
    cfg.duplicate_window = Duration::from_secs(1);
    let err = p.check(&cfg).unwrap_err();
    assert_eq!(
        err.fields(),
        ["subjects", "storage", "max_age", "duplicate_window"]
    );
    let text = err.to_string();
    for field in err.fields() {
        assert!(text.contains(&format!("field `{field}`")), "{text}");
    }
}
