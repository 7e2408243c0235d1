//! Permanent children always come back, transient ones only after a failure, temporary ones
//! never.

mod common;

use cloudlysis_supervision::{Backoff, Restart, SupervisorConfig, SupervisorRef};
use common::{Cmd, Log, until, until_logged, worker};

#[tokio::test]
async fn a_transient_child_that_stops_normally_is_not_restarted() {
    let log = Log::default();
    let (spec, m) = worker("t", &log);
    let sup = SupervisorRef::start(
        SupervisorConfig::new("sup")
            .backoff(Backoff::none())
            .child(spec.restart(Restart::Transient)),
        None,
    )
    .await
    .unwrap();
    m.send(Cmd::Exit).await.unwrap();
    let s = until(&sup, |s| s.children.is_empty()).await;
    assert_eq!(s.restarts, 0);
    assert_eq!(log.count("start:t"), 1);
}

#[tokio::test]
async fn a_transient_child_that_fails_is_restarted() {
    let log = Log::default();
    let (spec, m) = worker("t", &log);
    let sup = SupervisorRef::start(
        SupervisorConfig::new("sup")
            .backoff(Backoff::none())
            .child(spec.restart(Restart::Transient)),
        None,
    )
    .await
    .unwrap();
    m.send(Cmd::Fail).await.unwrap();
    until_logged(&log, "start:t", 2).await;
    until(&sup, |s| s.children[0].restarts == 1).await;
}

#[tokio::test]
async fn a_permanent_child_that_stops_normally_is_restarted() {
    let log = Log::default();
    let (spec, m) = worker("p", &log);
    let sup = SupervisorRef::start(
        SupervisorConfig::new("sup")
            .backoff(Backoff::none())
            .child(spec),
        None,
    )
    .await
    .unwrap();
    m.send(Cmd::Exit).await.unwrap();
    until_logged(&log, "start:p", 2).await;
    let s = until(&sup, |s| s.children[0].restarts == 1).await;
    assert_eq!(s.children[0].last_failure.as_deref(), Some("exited: done"));
}

#[tokio::test]
async fn a_temporary_child_is_never_restarted() {
    let log = Log::default();
    let (spec, m) = worker("tmp", &log);
    let sup = SupervisorRef::start(
        SupervisorConfig::new("sup")
            .backoff(Backoff::none())
            .child(spec.restart(Restart::Temporary)),
        None,
    )
    .await
    .unwrap();
    m.send(Cmd::Panic).await.unwrap();
    until(&sup, |s| s.children.is_empty()).await;
    assert_eq!(log.count("start:tmp"), 1);
}
