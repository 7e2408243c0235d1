//! Tasks owned by a value: a background task (a sweeper, a tracker, a controller) that must not
//! outlive what started it is held as an [`AbortOnDrop`]; a loop that waits for NATS to answer
//! again spaces its tries by [`retry_delay`].

use std::time::Duration;

/// Delay before retry number `attempt` (1-based) of something waiting for NATS to answer again:
/// 100 ms doubling, capped at 5 s.
pub(crate) fn retry_delay(attempt: u32) -> Duration {
    (Duration::from_millis(100) * 2u32.saturating_pow(attempt.saturating_sub(1).min(6)))
        .min(Duration::from_secs(5))
}

/// Aborts its task when dropped — also when the owner is dropped on failure, unlike a
/// `post_stop` hook.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
