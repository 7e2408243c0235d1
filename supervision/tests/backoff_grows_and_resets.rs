//! Restart delays grow exponentially and reset after a stable period (paused tokio time).

mod common;

use std::time::Duration;

use cloudlysis_supervision::{Backoff, SupervisorConfig, SupervisorRef};
use common::{Cmd, Log, until_logged, worker};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn restart_delays_double_then_reset_after_a_stable_period() {
    let log = Log::default();
    let (spec, m) = worker("w", &log);
    let sup = SupervisorRef::start(
        SupervisorConfig::new("sup")
            .intensity(100, Duration::from_secs(3600))
            .backoff(Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(2),
                jitter: 0.0,
                reset_after: Duration::from_secs(30),
            })
            .child(spec),
        None,
    )
    .await
    .unwrap();

    let mut delays = Vec::new();
    for n in 2..=6 {
        let t = Instant::now();
        m.send(Cmd::Fail).await.unwrap();
        until_logged(&log, "start:w", n).await;
        delays.push(t.elapsed());
    }
    // Polling adds at most one 10 ms tick to each measured delay.
    for (d, want) in delays.iter().zip([100u128, 200, 400, 800, 1600]) {
        assert!((want..want + 20).contains(&d.as_millis()), "{delays:?}");
    }

    // Stable for longer than reset_after: the next restart waits the initial delay again.
    tokio::time::sleep(Duration::from_secs(31)).await;
    let t = Instant::now();
    m.send(Cmd::Fail).await.unwrap();
    until_logged(&log, "start:w", 7).await;
    assert!(
        (100..120).contains(&t.elapsed().as_millis()),
        "{:?}",
        t.elapsed()
    );
    drop(sup);
}
