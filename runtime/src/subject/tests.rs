use super::*;

fn tok(s: &str) -> SubjectToken {
    SubjectToken::new(s).unwrap()
}

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

#[test]
fn valid_tokens_are_accepted() {
    for t in [
        "a",
        "acme",
        "A-Z_09",
        "account-1",
        &"x".repeat(MAX_TOKEN_LEN),
    ] {
        assert!(SubjectToken::new(t).is_ok(), "{t}");
    }
}

#[test]
fn dots_and_wildcards_are_rejected() {
    for (t, c) in [("a.b", '.'), ("a*", '*'), (">", '>'), ("a>b", '>')] {
        assert_eq!(
            SubjectToken::new(t),
            Err(SubjectTokenError::InvalidChar { found: c }),
            "{t}"
        );
    }
}

#[test]
fn whitespace_is_rejected() {
    for t in ["a b", " a", "a\t", "a\n", "a\r"] {
        assert!(
            matches!(
                SubjectToken::new(t),
                Err(SubjectTokenError::InvalidChar { .. })
            ),
            "{t:?}"
        );
    }
}

#[test]
fn non_ascii_is_rejected() {
    assert_eq!(
        SubjectToken::new("café"),
        Err(SubjectTokenError::InvalidChar { found: 'é' })
    );
    assert!(SubjectToken::new("ａ").is_err(), "fullwidth letter");
}

#[test]
fn empty_is_rejected() {
    assert_eq!(SubjectToken::new(""), Err(SubjectTokenError::Empty));
}

#[test]
fn over_long_is_rejected() {
    let t = "x".repeat(MAX_TOKEN_LEN + 1);
    assert_eq!(
        SubjectToken::new(t),
        Err(SubjectTokenError::TooLong {
            len: MAX_TOKEN_LEN + 1
        })
    );
}

#[test]
fn other_punctuation_is_rejected() {
    for t in ["a/b", "a:b", "a$", "a,b", "a\"", "a\0"] {
        assert!(SubjectToken::new(t).is_err(), "{t:?}");
    }
}

#[test]
fn builders_produce_exact_subjects() {
    assert_eq!(
        aggregate_event(&tenant(), &tok("account"), &tok("a-1")),
        "tenant.acme.aggregate.account.a-1"
    );
    assert_eq!(
        effect_command(&tenant(), &tok("send_email")),
        "tenant.acme.effect.send_email"
    );
    assert_eq!(
        effect_result(&tenant(), &tok("send_email")),
        "tenant.acme.effect_result.send_email"
    );
    assert_eq!(
        workflow_event(&tenant(), &tok("transfer"), &tok("t-9")),
        "tenant.acme.workflow.transfer.t-9"
    );
}

#[test]
fn filters_produce_exact_subjects() {
    assert_eq!(filter::all_aggregate_events(), "tenant.*.aggregate.*.*");
    assert_eq!(
        filter::aggregate_type_events(&tok("account")),
        "tenant.*.aggregate.account.*"
    );
    assert_eq!(
        filter::tenant_aggregate_events(&tenant()),
        "tenant.acme.aggregate.*.*"
    );
    assert_eq!(filter::all_effect_commands(), "tenant.*.effect.*");
    assert_eq!(filter::effect_commands(&tok("pay")), "tenant.*.effect.pay");
    assert_eq!(filter::all_effect_results(), "tenant.*.effect_result.*");
    assert_eq!(
        filter::effect_results(&tok("pay")),
        "tenant.*.effect_result.pay"
    );
    assert_eq!(filter::all_workflow_events(), "tenant.*.workflow.*.*");
    assert_eq!(
        filter::workflow_events(&tok("transfer")),
        "tenant.*.workflow.transfer.*"
    );
}

#[test]
fn every_built_subject_is_covered_by_its_filter() {
    let t = tenant();
    let s = aggregate_event(&t, &tok("account"), &tok("a-1"));
    assert!(covers(&filter::all_aggregate_events(), &s));
    assert!(covers(&filter::aggregate_type_events(&tok("account")), &s));
    assert!(covers(&filter::tenant_aggregate_events(&t), &s));
    assert!(!covers(&filter::aggregate_type_events(&tok("order")), &s));
    let s = workflow_event(&t, &tok("transfer"), &tok("i"));
    assert!(covers(&filter::all_workflow_events(), &s));
    assert!(!covers(&filter::all_aggregate_events(), &s));
}

#[test]
fn coverage_follows_nats_wildcard_rules() {
    assert!(covers(">", "a"));
    assert!(covers("a.>", "a.b.c"));
    assert!(covers("a.>", "a.*.>"));
    assert!(!covers("a.>", "a"));
    assert!(covers("a.*", "a.*"));
    assert!(!covers("a.*", "a.>"));
    assert!(!covers("a.b", "a.*"));
    assert!(!covers("a.*.c", "a.b"));
    assert!(!covers("a.b.c", "a.b"));
}

proptest::proptest! {
    #[test]
    fn accepted_tokens_never_contain_subject_syntax(s in "\\PC{0,140}") {
        if let Ok(t) = SubjectToken::new(s.clone()) {
            proptest::prop_assert!(!t.as_str().contains(['.', '*', '>', ' ']));
            proptest::prop_assert!(t.as_str().is_ascii());
            proptest::prop_assert!(!t.as_str().is_empty() && t.as_str().len() <= MAX_TOKEN_LEN);
        }
    }

    #[test]
    fn tokens_from_the_allowed_alphabet_are_accepted(s in "[A-Za-z0-9_-]{1,128}") {
        proptest::prop_assert!(SubjectToken::new(s).is_ok());
    }
}
