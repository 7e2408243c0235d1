use super::*;

fn tok(s: &str) -> SubjectToken {
    SubjectToken::new(s).unwrap()
}

#[test]
fn defaults_apply_when_nothing_is_set() {
    let s = ConsumerSettings::load(ConsumerRole::Projection, &ConfigSource::default()).unwrap();
    assert_eq!(s, ConsumerSettings::default());
    assert_eq!(s.ack_wait, Duration::from_secs(30));
    assert_eq!(s.max_deliver, 5);
    assert_eq!(s.max_in_flight, 64);
}

#[test]
fn projection_env_overrides_apply() {
    let src = ConfigSource::from_env([
        ("PROJECTION_ACK_TIMEOUT_MS", "2500"),
        ("PROJECTION_MAX_DELIVER", "3"),
        ("PROJECTION_MAX_IN_FLIGHT", "8"),
        ("RUNNER_MAX_DELIVER", "9"),
    ]);
    let s = ConsumerSettings::load(ConsumerRole::Projection, &src).unwrap();
    assert_eq!(s.ack_wait, Duration::from_millis(2500));
    assert_eq!(s.max_deliver, 3);
    assert_eq!(s.max_in_flight, 8);
}

#[test]
fn runner_env_overrides_apply_and_do_not_leak_into_projection() {
    let src = ConfigSource::from_env([
        ("RUNNER_ACK_TIMEOUT_MS", "1000"),
        ("RUNNER_MAX_DELIVER", "9"),
        ("RUNNER_MAX_IN_FLIGHT", "16"),
    ]);
    let r = ConsumerSettings::load(ConsumerRole::Runner, &src).unwrap();
    assert_eq!(
        (r.ack_wait, r.max_deliver, r.max_in_flight),
        (Duration::from_secs(1), 9, 16)
    );
    let p = ConsumerSettings::load(ConsumerRole::Projection, &src).unwrap();
    assert_eq!(p, ConsumerSettings::default());
}

#[test]
fn file_values_apply_below_env() {
    let src = ConfigSource::from_env([("RUNNER_MAX_DELIVER", "4")])
        .with_toml_str("[runner]\nmax_deliver = 7\nmax_in_flight = 3", "c.toml")
        .unwrap();
    let r = ConsumerSettings::load(ConsumerRole::Runner, &src).unwrap();
    assert_eq!((r.max_deliver, r.max_in_flight), (4, 3));
}

#[test]
fn bad_overrides_name_the_setting() {
    for (var, value, key) in [
        ("PROJECTION_MAX_IN_FLIGHT", "0", "projection.max_in_flight"),
        ("PROJECTION_MAX_DELIVER", "many", "projection.max_deliver"),
        (
            "PROJECTION_ACK_TIMEOUT_MS",
            "5",
            "projection.ack_timeout_ms",
        ),
    ] {
        let err = ConsumerSettings::load(
            ConsumerRole::Projection,
            &ConfigSource::from_env([(var, value)]),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(key) && msg.contains(var), "{msg}");
    }
}

#[test]
fn a_deliver_group_is_refused_with_a_clear_error() {
    let src = ConfigSource::from_env([("RUNNER_DELIVER_GROUP", "workers")]);
    let err = ConsumerSettings::load(ConsumerRole::Runner, &src).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::Unsupported {
            setting: "runner.deliver_group",
            ..
        }
    ));
    assert!(err.to_string().contains("pull consumers"), "{err}");
    let src = ConfigSource::default()
        .with_toml_str("[projection]\ndeliver_group = \"g\"", "c.toml")
        .unwrap();
    assert!(ConsumerSettings::load(ConsumerRole::Projection, &src).is_err());
}

#[test]
fn durable_names_are_exact_and_stable() {
    assert_eq!(
        DurableName::projection_single().as_str(),
        "cloudlysis-projection-all"
    );
    assert_eq!(
        DurableName::projection_view(&tok("balances")).as_str(),
        "cloudlysis-projection-view-balances"
    );
    assert_eq!(
        DurableName::runner_workflow(&tok("transfer")).as_str(),
        "cloudlysis-runner-workflow-transfer"
    );
    assert_eq!(
        DurableName::runner_effect(&tok("email")).as_str(),
        "cloudlysis-runner-effect-email"
    );
    assert_eq!(
        DurableName::projection_view(&tok("x")),
        DurableName::projection_view(&tok("x"))
    );
    assert_eq!(
        DurableName::projection_view_generation(&tok("balances"), 0),
        DurableName::projection_view(&tok("balances"))
    );
    assert_eq!(
        DurableName::projection_view_generation(&tok("balances"), 3).as_str(),
        "cloudlysis-projection-view-balances=g3"
    );
}

#[test]
fn durable_names_do_not_collide_across_modes_and_roles() {
    // A view called "all" must not take the Single-mode consumer, and a workflow and an effect
    // of the same name must not share one.
    let mut names = vec![
        DurableName::projection_single(),
        DurableName::projection_view(&tok("all")),
        DurableName::runner_workflow(&tok("all")),
        DurableName::runner_effect(&tok("all")),
        DurableName::projection_view(&tok("view-all")),
        DurableName::projection_view_generation(&tok("all"), 1),
        DurableName::projection_view(&tok("all-g1")),
        DurableName::projection_view(&tok("all_g1")),
    ];
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n);
}

#[test]
fn pull_config_follows_the_policy() {
    let policy = ConsumerPolicy {
        durable: DurableName::projection_single(),
        filter_subjects: vec!["tenant.*.aggregate.*.*".into()],
        settings: ConsumerSettings {
            max_in_flight: 12,
            max_deliver: 4,
            ack_wait: Duration::from_secs(9),
            ..Default::default()
        },
    };
    let c = policy.pull_config();
    assert_eq!(c.durable_name.as_deref(), Some("cloudlysis-projection-all"));
    assert_eq!(c.ack_policy, AckPolicy::Explicit);
    assert_eq!(c.ack_wait, Duration::from_secs(9));
    assert_eq!(c.max_deliver, 4);
    assert_eq!(c.max_ack_pending, 12);
    assert_eq!(c.filter_subject, "tenant.*.aggregate.*.*");
    assert!(c.filter_subjects.is_empty());

    let two = ConsumerPolicy {
        filter_subjects: vec!["a.*".into(), "b.*".into()],
        ..policy
    };
    let c = two.pull_config();
    assert_eq!(c.filter_subject, "");
    assert_eq!(c.filter_subjects, ["a.*", "b.*"]);
}

#[test]
fn nak_backoff_grows_and_caps() {
    let b = NakBackoff::default();
    assert_eq!(b.delay(1), Duration::from_secs(1));
    assert_eq!(b.delay(2), Duration::from_secs(2));
    assert_eq!(b.delay(3), Duration::from_secs(4));
    assert_eq!(b.delay(7), Duration::from_secs(60));
    assert_eq!(b.delay(u64::MAX), Duration::from_secs(60));
    assert_eq!(b.delay(0), Duration::from_secs(1));
}

proptest::proptest! {
    #[test]
    fn nak_backoff_is_monotone_and_bounded(a in 0u64..200, b in 0u64..200, init in 1u64..5000, max in 1u64..600_000, mult in 1u32..10) {
        let backoff = NakBackoff {
            initial: Duration::from_millis(init),
            max: Duration::from_millis(max),
            multiplier: mult,
        };
        let (lo, hi) = (a.min(b), a.max(b));
        proptest::prop_assert!(backoff.delay(lo) <= backoff.delay(hi));
        proptest::prop_assert!(backoff.delay(hi) <= backoff.max);
    }
}
