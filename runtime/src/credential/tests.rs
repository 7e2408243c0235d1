//! Unit tests of node credentials.

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const OTHER: &[u8] = b"fedcba9876543210fedcba9876543210";

fn request(path: &str, credential: Option<&str>, tenant: Option<&str>) -> http::Request<()> {
    let mut b = http::Request::post(path);
    if let Some(c) = credential {
        b = b.header(headers::NODE_CREDENTIAL, c);
    }
    if let Some(t) = tenant {
        b = b.header(headers::TENANT_ID, t);
    }
    b.header(headers::ACTOR, "forged").body(()).unwrap()
}

const EXECUTE: &str = "/aggregate.gateway.v1.CommandService/Execute";

#[test]
fn a_signed_credential_pins_tenant_and_actor() {
    let keys = NodeKeys::new(SECRET).unwrap();
    let token = keys.sign("ops", "acme", &["commands:*".into()]).unwrap();
    let mut req = request(EXECUTE, Some(&token), None);
    keys.admit(&mut req).unwrap();
    assert_eq!(req.headers()[headers::TENANT_ID], "acme");
    assert_eq!(req.headers()[headers::ACTOR], "ops");
    assert_eq!(
        req.extensions().get::<Caller>().unwrap().tenant.as_str(),
        "acme"
    );
}

#[test]
fn missing_foreign_expired_and_overlong_credentials_are_unauthenticated() {
    let keys = NodeKeys::new(SECRET).unwrap();
    let foreign = NodeKeys::new(OTHER).unwrap();
    let rights = ["commands:*".to_string()];
    let now = now_secs();
    let cases = [
        (None, CredentialError::Missing),
        (
            Some(foreign.sign("x", "acme", &rights).unwrap()),
            CredentialError::Invalid(String::new()),
        ),
        (
            Some(
                keys.sign_at("x", "acme", &rights, now - 120, now - 60)
                    .unwrap(),
            ),
            CredentialError::Expired,
        ),
        (
            Some(keys.sign_at("x", "acme", &rights, now, now + 3600).unwrap()),
            CredentialError::TooLong(3600),
        ),
        (
            // A lifetime within bounds, but issued far in the future.
            Some(
                keys.sign_at("x", "acme", &rights, now + 86_400, now + 86_460)
                    .unwrap(),
            ),
            CredentialError::TooLong(0),
        ),
        (
            Some("not.a.jwt".to_string()),
            CredentialError::Invalid(String::new()),
        ),
    ];
    for (token, want) in cases {
        let mut req = request(EXECUTE, token.as_deref(), None);
        let got = keys.admit(&mut req).unwrap_err();
        assert_eq!(
            std::mem::discriminant(&got),
            std::mem::discriminant(&want),
            "{got}"
        );
        assert_eq!(got.to_status().code(), tonic::Code::Unauthenticated);
        assert!(req.extensions().get::<Caller>().is_none());
    }
}

#[test]
fn a_forged_tenant_or_a_missing_right_is_permission_denied() {
    let keys = NodeKeys::new(SECRET).unwrap();
    let token = keys.sign("ops", "acme", &["queries:*".into()]).unwrap();
    let mut req = request(EXECUTE, Some(&token), Some("acme"));
    let e = keys.admit(&mut req).unwrap_err();
    assert!(matches!(e, CredentialError::Forbidden(_)), "{e}");
    let token = keys.sign("ops", "acme", &["commands:*".into()]).unwrap();
    let mut req = request(EXECUTE, Some(&token), Some("globex"));
    let e = keys.admit(&mut req).unwrap_err();
    assert_eq!(e.to_status().code(), tonic::Code::PermissionDenied);
    let admin = keys.sign("ops", "acme", &["admin:read".into()]).unwrap();
    for (path, ok) in [
        ("/node.admin.v1.NodeAdmin/Describe", true),
        ("/ops.admin.v1.OpsAdmin/ListPoison", true),
        ("/ops.admin.v1.OpsAdmin/PurgePoison", false),
        ("/projection.admin.v1.ProjectionAdmin/RebuildView", false),
        ("/ops.admin.v1.OpsAdmin/SomethingNew", false),
        ("/runner.admin.v1.RunnerAdmin/Drain", false),
    ] {
        let mut req = request(path, Some(&admin), None);
        assert_eq!(keys.admit(&mut req).is_ok(), ok, "{path}");
    }
}

#[test]
fn health_and_reflection_are_open() {
    let keys = NodeKeys::new(SECRET).unwrap();
    for path in [
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ] {
        keys.admit(&mut request(path, None, None)).unwrap();
    }
}

#[test]
fn during_a_rotation_both_secrets_verify_and_the_new_one_signs() {
    let old = NodeKeys::new(OTHER).unwrap();
    let rotating = NodeKeys::new(SECRET).unwrap().with_previous(OTHER).unwrap();
    let rights = ["commands:*".to_string()];
    rotating
        .verify(&old.sign("x", "acme", &rights).unwrap())
        .unwrap();
    let fresh = rotating.sign("x", "acme", &rights).unwrap();
    NodeKeys::new(SECRET).unwrap().verify(&fresh).unwrap();
    assert!(old.verify(&fresh).is_err());
}

#[test]
fn weak_secrets_are_refused() {
    assert_eq!(
        NodeKeys::new(b"short").unwrap_err(),
        CredentialError::WeakSecret(5)
    );
}

#[test]
fn a_remembered_credential_is_decoded_once_and_still_expires() {
    let keys = NodeKeys::new(SECRET).unwrap();
    let token = keys.sign("ops", "acme", &["commands:*".into()]).unwrap();
    let first = keys.verify(&token).unwrap();
    assert_eq!(keys.verify(&token).unwrap(), first);
    assert_eq!(keys.verified.lock().unwrap().len(), 1, "remembered once");

    // A credential remembered while it was valid and expired since: checked in full again, and
    // refused as expired.
    let now = now_secs();
    let expired = keys
        .sign_at(
            "ops",
            "acme",
            &["commands:*".into()],
            now - 70,
            now - LEEWAY_SECS - 1,
        )
        .unwrap();
    keys.verified.lock().unwrap().insert(
        expired.as_str().into(),
        (first.clone(), now - LEEWAY_SECS - 1),
    );
    assert_eq!(keys.verify(&expired), Err(CredentialError::Expired));

    // What fails to verify is not remembered; another secret's keys share nothing.
    let foreign = NodeKeys::new(OTHER).unwrap();
    let forged = foreign.sign("ops", "acme", &["commands:*".into()]).unwrap();
    assert!(keys.verify(&forged).is_err());
    assert!(keys.verify(&forged).is_err());
    assert!(!keys.verified.lock().unwrap().contains_key(forged.as_str()));
    assert!(foreign.verify(&token).is_err());
}

#[test]
fn a_signed_credential_is_handed_out_again_only_within_half_its_lifetime() {
    let keys = NodeKeys::new(SECRET).unwrap();
    let rights = ["commands:account".to_string()];
    let token = keys.sign("ops", "acme", &rights).unwrap();
    assert_eq!(keys.sign("ops", "acme", &rights).unwrap(), token);
    assert_ne!(
        keys.sign("ops", "beta", &rights).unwrap(),
        token,
        "another tenant gets its own"
    );
    assert_ne!(
        keys.sign("ops", "acme", &["queries:*".to_string()])
            .unwrap(),
        token,
        "other rights get their own"
    );
    // Issued more than half a lifetime ago: a fresh one, with a full lifetime ahead.
    let half = DEFAULT_TTL.as_secs() / 2;
    let key = signed_key("ops", "acme", &rights);
    keys.signed.lock().unwrap().get_mut(&key).unwrap().1 -= half;
    let before = now_secs();
    let fresh = keys.sign("ops", "acme", &rights).unwrap();
    let issued = keys.signed.lock().unwrap()[&key].1;
    assert!(issued >= before, "issued again now, not {half} s ago");
    let caller = keys.verify(&fresh).unwrap();
    assert_eq!(caller.tenant.as_str(), "acme");
}

/// A credential naming no one — signed by hand or by an older Gateway — is refused: nodes audit
/// calls by the credential's subject. (Signing one is refused too.)
#[test]
fn a_credential_without_a_subject_is_refused() {
    let keys = NodeKeys::new(SECRET).unwrap();
    assert!(matches!(
        keys.sign(" ", "acme", &[]),
        Err(CredentialError::Invalid(_))
    ));
    let now = now_secs();
    let claims = Claims {
        aud: AUDIENCE.into(),
        sub: String::new(),
        tenant: "acme".into(),
        rights: vec!["commands:*".into()],
        iat: now,
        exp: now + 30,
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    match keys.verify(&token) {
        Err(CredentialError::Invalid(m)) => assert!(m.contains("subject is empty"), "{m}"),
        other => panic!("{other:?}"),
    }
}
