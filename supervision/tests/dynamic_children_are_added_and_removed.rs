//! Children can be added and removed at run time, one per entity.

mod common;

use std::time::Duration;

use cloudlysis_supervision::{Restart, SupervisorConfig, SupervisorError, SupervisorRef};
use common::{Cmd, Log, until, until_logged, worker};

#[tokio::test]
async fn entities_come_and_go_under_a_dynamic_supervisor() {
    let log = Log::default();
    let sup = SupervisorRef::start(SupervisorConfig::new("entities"), None)
        .await
        .unwrap();
    let mut mailboxes = Vec::new();
    for i in 0..10 {
        let (spec, m) = worker(&format!("e{i}"), &log);
        sup.start_child(spec.restart(Restart::Transient))
            .await
            .unwrap();
        mailboxes.push(m);
    }
    let s = sup.snapshot(Duration::from_secs(1)).await.unwrap();
    assert_eq!(s.children.len(), 10);

    let (dup, _) = worker("e3", &log);
    assert!(matches!(
        sup.start_child(dup).await,
        Err(SupervisorError::DuplicateChild { .. })
    ));

    sup.stop_child("e3").await.unwrap();
    assert_eq!(log.count("stop:e3"), 1);
    assert!(matches!(
        sup.stop_child("e3").await,
        Err(SupervisorError::NoSuchChild { .. })
    ));

    // An entity that passivates (stops normally) leaves the tree.
    mailboxes[5].send(Cmd::Exit).await.unwrap();
    until_logged(&log, "stop:e5", 1).await;
    let s = until(&sup, |s| s.children.len() == 8).await;
    assert!(s.children.iter().all(|c| c.name != "e5" && c.name != "e3"));
}
