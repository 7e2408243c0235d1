//! A crash-looping child exhausts its supervisor's intensity; that supervisor fails, its parent
//! restarts it until the parent's own intensity is exhausted, and the parent fails too.

mod common;

use std::time::Duration;

use cloudlysis_runtime::metrics;
use cloudlysis_supervision::{Backoff, ChildSpec, SupervisorConfig, SupervisorRef};
use common::{Log, worker_with};

#[tokio::test(start_paused = true)]
async fn intensity_escalates_from_worker_to_mid_to_root() {
    let handle = metrics::install().unwrap();
    let log = Log::default();
    let (crashing, _m) = worker_with("w", &log, true, None);
    let mid = SupervisorConfig::new("escalation-mid")
        .intensity(2, Duration::from_secs(60))
        .backoff(Backoff::none())
        .child(crashing);
    let root = SupervisorRef::start(
        SupervisorConfig::new("escalation-root")
            .intensity(1, Duration::from_secs(60))
            .backoff(Backoff::none())
            .child(ChildSpec::supervisor(mid)),
        None,
    )
    .await
    .unwrap();

    // mid allows 2 restarts of w (3 starts), fails on the 3rd crash; root restarts mid once
    // (3 more starts of w), mid fails again, and root exceeds its intensity of 1.
    for _ in 0..2000 {
        if !root.is_running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !root.is_running(),
        "root failed after its intensity was exceeded"
    );
    assert_eq!(log.count("start:w"), 6);

    let text = handle.render();
    assert!(
        text.contains(r#"cloudlysis_supervisor_escalations_total{supervisor="escalation-mid"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"cloudlysis_supervisor_escalations_total{supervisor="escalation-root"} 1"#),
        "{text}"
    );
    // Restarts that happened (the crash that escalated is not a restart).
    assert!(
        text.contains(r#"cloudlysis_actor_restarts_total{supervisor="escalation-root",child_kind="supervisor",reason="error"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"cloudlysis_actor_restarts_total{supervisor="escalation-mid",child_kind="worker",reason="error"} 4"#),
        "{text}"
    );
}
