//! Children start in order and stop in reverse order; a child that does not stop within its
//! shutdown timeout is killed.

mod common;

use std::time::Duration;

use cloudlysis_supervision::{SupervisorConfig, SupervisorRef};
use common::{Log, worker, worker_with};

#[tokio::test]
async fn children_stop_in_reverse_start_order() {
    let log = Log::default();
    let (a, _) = worker("a", &log);
    let (b, _) = worker("b", &log);
    let (c, _) = worker("c", &log);
    let sup = SupervisorRef::start(
        SupervisorConfig::new("sup").child(a).child(b).child(c),
        None,
    )
    .await
    .unwrap();
    sup.shutdown(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        log.take(),
        [
            "start:a", "start:b", "start:c", "stop:c", "stop:b", "stop:a"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_child_that_does_not_stop_in_time_is_killed() {
    let log = Log::default();
    let (slow, _) = worker_with("slow", &log, false, Some(Duration::from_secs(3600)));
    let (fast, _) = worker("fast", &log);
    let sup = SupervisorRef::start(
        SupervisorConfig::new("sup")
            .child(fast)
            .child(slow.shutdown(Duration::from_millis(200))),
        None,
    )
    .await
    .unwrap();
    let t = tokio::time::Instant::now();
    sup.shutdown(Duration::from_secs(60)).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(3600),
        "did not wait for the slow child"
    );
    assert_eq!(
        log.count("stop:slow"),
        0,
        "the slow child was killed, not stopped"
    );
    assert_eq!(log.count("stop:fast"), 1);
}

#[tokio::test]
async fn a_child_that_fails_to_start_fails_the_supervisor_start() {
    let log = Log::default();
    let (a, _) = worker("a", &log);
    let bad = cloudlysis_supervision::ChildSpec::new("bad", "worker", |_| async {
        Err::<cloudlysis_supervision::Started, _>("no database".to_string())
    });
    let err = SupervisorRef::start(SupervisorConfig::new("sup").child(a).child(bad), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no database"), "{err}");
    assert_eq!(
        log.take(),
        ["start:a", "stop:a"],
        "started children are stopped again"
    );
}
