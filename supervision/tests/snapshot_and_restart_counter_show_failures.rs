//! The tree snapshot and the restart counter show failures with their reasons; the snapshot is
//! served as JSON at `GET /admin/supervision`.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use cloudlysis_runtime::metrics;
use cloudlysis_supervision::{
    Backoff, ChildSpec, Status, SupervisorConfig, SupervisorRef, snapshot,
};
use common::{Cmd, Log, until, worker};
use tower::ServiceExt;

#[tokio::test]
async fn snapshot_and_metrics_show_failures_with_reasons() {
    let handle = metrics::install().unwrap();
    let log = Log::default();
    let (a, ma) = worker("a", &log);
    let (b, _mb) = worker("b", &log);
    let root = SupervisorRef::start(
        SupervisorConfig::new("snapshot-root")
            .backoff(Backoff::none())
            .child(a)
            .child(ChildSpec::supervisor(
                SupervisorConfig::new("snapshot-inner").child(b),
            )),
        None,
    )
    .await
    .unwrap();

    ma.send(Cmd::Panic).await.unwrap();
    let s = until(&root, |s| {
        s.children[0].restarts == 1 && s.children[0].status == Status::Running
    })
    .await;
    let a = &s.children[0];
    assert_eq!(a.kind, "worker");
    assert_eq!(
        a.last_failure.as_deref(),
        Some("panicked: a was told to panic")
    );
    assert!(a.last_failure_at.as_deref().unwrap().ends_with('Z'));
    let mb = a.mailbox.unwrap();
    assert_eq!(mb.capacity, 8);
    assert_eq!(s.strategy, "one_for_one");
    assert_eq!(s.restarts, 1);
    let inner = s
        .find_supervisor("snapshot-inner")
        .expect("nested supervisor in the tree");
    assert_eq!(inner.children[0].name, "b");
    assert_eq!(s.children[1].kind, "supervisor");

    ma.send(Cmd::Fail).await.unwrap();
    let s = until(&root, |s| {
        s.children[0].restarts == 2 && s.children[0].status == Status::Running
    })
    .await;
    assert_eq!(
        s.children[0].last_failure.as_deref(),
        Some("a was told to fail")
    );

    let text = handle.render();
    for reason in ["panic", "error"] {
        let line = format!(
            r#"cloudlysis_actor_restarts_total{{supervisor="snapshot-root",child_kind="worker",reason="{reason}"}} 1"#
        );
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }
    assert!(
        text.contains(r#"cloudlysis_actors{kind="worker"}"#),
        "{text}"
    );

    // The HTTP view of the same tree.
    let resp = snapshot::router(root.clone())
        .oneshot(
            Request::get("/admin/supervision")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["name"], "snapshot-root");
    assert_eq!(json["children"][0]["restarts"], 2);
    assert_eq!(json["children"][0]["mailbox"]["capacity"], 8);
    assert_eq!(json["supervisors"][0]["name"], "snapshot-inner");

    root.shutdown(Duration::from_secs(5)).await.unwrap();
    let resp = snapshot::router(root)
        .oneshot(
            Request::get("/admin/supervision")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
}
