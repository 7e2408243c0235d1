//! Each strategy restarts exactly the right children.

mod common;

use cloudlysis_supervision::{Backoff, Strategy, SupervisorConfig, SupervisorRef};
use common::{Cmd, Log, until, until_logged, worker};

async fn three(
    strategy: Strategy,
    log: &Log,
) -> (
    SupervisorRef,
    Vec<cloudlysis_runtime::mailbox::BoundedRef<Cmd>>,
) {
    let (a, ma) = worker("a", log);
    let (b, mb) = worker("b", log);
    let (c, mc) = worker("c", log);
    let sup = SupervisorRef::start(
        SupervisorConfig::new("sup")
            .strategy(strategy)
            .backoff(Backoff::none())
            .child(a)
            .child(b)
            .child(c),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        log.take(),
        ["start:a", "start:b", "start:c"],
        "started in order"
    );
    (sup, vec![ma, mb, mc])
}

fn restarts(s: &cloudlysis_supervision::SupervisorSnapshot) -> Vec<u64> {
    s.children.iter().map(|c| c.restarts).collect()
}

#[tokio::test]
async fn one_for_one_restarts_only_the_failed_child() {
    let log = Log::default();
    let (sup, m) = three(Strategy::OneForOne, &log).await;
    m[1].send(Cmd::Fail).await.unwrap();
    until_logged(&log, "start:b", 1).await;
    let s = until(&sup, |s| {
        s.children.iter().all(|c| c.status.as_str() == "running")
    })
    .await;
    assert_eq!(restarts(&s), [0, 1, 0]);
    assert_eq!(log.take(), ["start:b"], "nobody else stopped or started");
    // The same mailbox reaches the restarted child.
    m[1].send(Cmd::Fail).await.unwrap();
    until(&sup, |s| s.children[1].restarts == 2).await;
}

#[tokio::test]
async fn one_for_all_stops_the_others_and_restarts_every_child_in_order() {
    let log = Log::default();
    let (sup, m) = three(Strategy::OneForAll, &log).await;
    m[1].send(Cmd::Fail).await.unwrap();
    until_logged(&log, "start:c", 1).await;
    let s = until(&sup, |s| {
        s.children.iter().all(|c| c.status.as_str() == "running")
    })
    .await;
    assert_eq!(restarts(&s), [1, 1, 1]);
    let events = log.take();
    let stops: Vec<_> = events.iter().filter(|e| e.starts_with("stop")).collect();
    let starts: Vec<_> = events.iter().filter(|e| e.starts_with("start")).collect();
    assert_eq!(stops.len(), 2, "a and c stopped, b had failed: {events:?}");
    assert_eq!(
        starts,
        ["start:a", "start:b", "start:c"],
        "restarted in order"
    );
}

#[tokio::test]
async fn rest_for_one_restarts_the_failed_child_and_those_after_it() {
    let log = Log::default();
    let (sup, m) = three(Strategy::RestForOne, &log).await;
    m[1].send(Cmd::Fail).await.unwrap();
    until_logged(&log, "start:c", 1).await;
    let s = until(&sup, |s| {
        s.children.iter().all(|c| c.status.as_str() == "running")
    })
    .await;
    assert_eq!(restarts(&s), [0, 1, 1]);
    let events = log.take();
    assert!(
        !events.iter().any(|e| e.ends_with(":a")),
        "a untouched: {events:?}"
    );
    let starts: Vec<_> = events.iter().filter(|e| e.starts_with("start")).collect();
    assert_eq!(starts, ["start:b", "start:c"]);
}
