//! Refused workflow requests: each is problem+json with the right status, publishes nothing,
//! and no tenant reaches another tenant's instances.

mod common;

use common::{Platform, body_json, query};

async fn platform() -> Platform {
    let mut p = Platform::start().await;
    p.start_transfer_runner().await;
    p
}

/// Path, token, headers, body, expected status and problem slug.
type Case<'a> = (
    &'a str,
    Option<String>,
    Vec<(&'a str, &'a str)>,
    &'a str,
    u16,
    &'a str,
);

async fn published(p: &Platform) -> usize {
    p.stream_messages("WORKFLOW_COMMANDS").await.len()
        + p.stream_messages("WORKFLOW_EVENTS").await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_starts_are_problems_and_publish_nothing() {
    let p = platform().await;
    let token = p.token("acme", &["workflows:transfer", "commands:*"]);
    let ok = r#"{"from":"a","to":"b","amount":5}"#;
    let cases: Vec<Case> = vec![
        (
            "/v1/workflows/transfer/t-1",
            None,
            vec![],
            ok,
            401,
            "unauthorized",
        ),
        (
            "/v1/workflows/transfer/t-1",
            Some(p.token("acme", &["workflows:other"])),
            vec![],
            ok,
            403,
            "forbidden",
        ),
        (
            "/v1/workflows/transfer/t-1",
            Some(token.clone()),
            vec![("x-tenant-id", "globex")],
            ok,
            403,
            "forbidden",
        ),
        (
            "/v1/workflows/nope/t-1",
            Some(p.token("acme", &["workflows:*"])),
            vec![],
            ok,
            404,
            "not-found",
        ),
        (
            "/v1/workflows/transfer/a.b",
            Some(token.clone()),
            vec![],
            ok,
            400,
            "bad-request",
        ),
        (
            "/v1/workflows/transfer/t-1",
            Some(token.clone()),
            vec![],
            "{not json",
            400,
            "bad-request",
        ),
        (
            "/v1/workflows/transfer/t-1",
            Some(token.clone()),
            vec![],
            r#"{"from":"a"}"#,
            400,
            "bad-request",
        ),
        (
            "/v1/workflows/transfer/t-1",
            Some(token.clone()),
            vec![],
            r#"{"from":"a","to":"a","amount":5}"#,
            422,
            "rejected",
        ),
        (
            "/v1/workflows/transfer/t-1",
            Some(token.clone()),
            vec![],
            r#"{"from":"a","to":"b","amount":0}"#,
            422,
            "rejected",
        ),
        // Found by using the platform: a transfer of more than an account can move was started,
        // then failed with the account's refusal.
        (
            "/v1/workflows/transfer/t-1",
            Some(token.clone()),
            vec![],
            r#"{"from":"a","to":"b","amount":9007199254740992}"#,
            422,
            "rejected",
        ),
    ];
    for (path, t, headers, body, status, slug) in cases {
        let (s, resp) = p.command(path, t.as_deref(), &headers, body).await;
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let json = body_json(resp).await;
        assert_eq!(s, status, "{path} {body}: {json}");
        assert_eq!(ctype.as_deref(), Some("application/problem+json"), "{path}");
        assert_eq!(
            json["type"],
            format!("urn:cloudlysis:problem:{slug}"),
            "{json}"
        );
        assert!(
            json["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{json}"
        );
    }
    assert_eq!(
        published(&p).await,
        0,
        "nothing was published for refused requests"
    );

    // A start of an instance that exists: 409, and nothing more published.
    let (s, _) = p
        .command("/v1/workflows/transfer/t-2", Some(&token), &[], ok)
        .await;
    assert_eq!(s, 201);
    let before = p.stream_messages("WORKFLOW_COMMANDS").await.len();
    let (s, resp) = p
        .command("/v1/workflows/transfer/t-2", Some(&token), &[], ok)
        .await;
    let json = body_json(resp).await;
    assert_eq!(s, 409, "{json}");
    assert_eq!(json["type"], "urn:cloudlysis:problem:conflict");
    assert_eq!(p.stream_messages("WORKFLOW_COMMANDS").await.len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_read_or_start_another_tenants_instance() {
    let p = platform().await;
    let acme = p.token("acme", &["workflows:*", "commands:*"]);
    let globex = p.token("globex", &["workflows:*"]);
    let (s, _) = p
        .command(
            "/v1/workflows/transfer/shared-id",
            Some(&acme),
            &[],
            r#"{"from":"a","to":"b","amount":5}"#,
        )
        .await;
    assert_eq!(s, 201);
    let (s, body) = p.workflow(&acme, "transfer", "shared-id").await;
    assert_eq!(s, 200, "{body}");

    // Globex does not see acme's instance ...
    let (s, body) = query(&p, "/v1/workflows/transfer/shared-id", &globex, &[]).await;
    assert_eq!(s, 404, "{body}");
    assert_eq!(body["type"], "urn:cloudlysis:problem:not-found");
    // ... and a start of the same id is globex's own instance, leaving acme's untouched.
    let (s, resp) = p
        .command(
            "/v1/workflows/transfer/shared-id",
            Some(&globex),
            &[],
            r#"{"from":"x","to":"y","amount":7}"#,
        )
        .await;
    let json = body_json(resp).await;
    assert_eq!(s, 201, "{json}");
    let (_, mine) = p.workflow(&acme, "transfer", "shared-id").await;
    assert_eq!(mine["state"]["from"], "a");
    assert_eq!(mine["state"]["amount"], 5);
    let (_, theirs) = p.workflow(&globex, "transfer", "shared-id").await;
    assert_eq!(theirs["state"]["from"], "x");
    // Their commands are published under their own tenant's subjects only.
    for (subject, cmd, _) in p.stream_messages("WORKFLOW_COMMANDS").await {
        let tenant = cmd["tenant_id"].as_str().unwrap();
        assert!(
            subject.starts_with(&format!("tenant.{tenant}.")),
            "{subject}"
        );
    }
    // Reading without the right is 403; an unknown instance 404.
    let none = p.token("acme", &["commands:*"]);
    let (s, _) = query(&p, "/v1/workflows/transfer/shared-id", &none, &[]).await;
    assert_eq!(s, 403);
    let (s, _) = query(&p, "/v1/workflows/transfer/never", &acme, &[]).await;
    assert_eq!(s, 404);
}
