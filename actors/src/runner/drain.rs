//! Draining a runner node, as an observable state machine — for a rolling deploy without lost
//! or duplicated work.
//!
//! | state | entered when | meanwhile |
//! |---|---|---|
//! | `serving` | start, or `Undrain` | consumers fetch; `/ready` 200; gRPC health `SERVING` |
//! | `intake_stopped` | at once on `Drain` (or SIGTERM) | no consumer fetches; starts are refused (`UNAVAILABLE`); `/ready` 503; gRPC health `NOT_SERVING` |
//! | `in_flight_zero` | every message this node held is settled | effects in flight finish (in-progress acks keep them) |
//! | `outbox_flushed` | the relay's queue is empty and the outbox index was swept | unpublished steps are published |
//! | `drained` | — | the node does nothing; a SIGTERM'd process exits 0 |
//!
//! When in-flight work outlasts the grace, the drain goes on to `drained` and its detail names
//! what was left: those messages are not acknowledged, so the server redelivers them to another
//! runner after `runner.ack_timeout_ms`. `Drain` is idempotent: a second call reports the state
//! of the one in progress. `Undrain` returns to `serving` from any state, without a restart.

use std::time::Duration;

use tokio::sync::watch;

use super::node::RunnerNode;
use crate::consumer::ConsumerMsg;
use crate::task::AbortOnDrop;

/// Where a drain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DrainState {
    /// Taking work.
    #[default]
    Serving,
    /// No new fetches or starts.
    IntakeStopped,
    /// Nothing in flight any more.
    InFlightZero,
    /// The outbox is published.
    OutboxFlushed,
    /// Done.
    Drained,
}

impl DrainState {
    /// The state's name on the wire and in metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Serving => "serving",
            Self::IntakeStopped => "intake_stopped",
            Self::InFlightZero => "in_flight_zero",
            Self::OutboxFlushed => "outbox_flushed",
            Self::Drained => "drained",
        }
    }

    /// Its value in `cloudlysis_runner_drain_state` (0 serving … 4 drained).
    pub fn ordinal(&self) -> f64 {
        *self as u8 as f64
    }
}

/// A drain's progress.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DrainProgress {
    /// The state.
    pub state: DrainState,
    /// Messages this node holds.
    pub in_flight: u64,
    /// Outbox steps not yet published (outbox index entries).
    pub pending_outbox: u64,
    /// True once the drain reached `drained` with nothing left in flight.
    pub drained: bool,
    /// What happened; when the grace passed, what was left and what becomes of it.
    pub detail: String,
}

/// The drain of one node.
#[derive(Default)]
pub(crate) struct Drainer {
    progress: std::sync::Mutex<Option<watch::Sender<DrainProgress>>>,
    task: std::sync::Mutex<Option<AbortOnDrop>>,
}

impl Drainer {
    fn sender(&self) -> watch::Sender<DrainProgress> {
        let mut guard = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .get_or_insert_with(|| watch::channel(DrainProgress::default()).0)
            .clone()
    }

    /// The current progress.
    pub(crate) fn current(&self) -> DrainProgress {
        self.sender().borrow().clone()
    }
}

fn set(node: &RunnerNode, p: DrainProgress) {
    metrics::gauge!(cloudlysis_runtime::metrics::names::RUNNER_DRAIN_STATE).set(p.state.ordinal());
    node.inner.drain.sender().send_replace(p);
}

impl RunnerNode {
    /// True from the moment a drain is requested until `undrain`.
    pub fn draining(&self) -> bool {
        *self.inner.intake.borrow()
    }

    /// The drain's progress (state `serving` when none runs).
    pub fn drain_progress(&self) -> DrainProgress {
        self.inner.drain.current()
    }

    /// Starts a drain (or joins the one in progress) with `grace` for in-flight work; with
    /// `wait`, answers once it finished.
    pub async fn drain(&self, grace: Duration, wait: bool) -> DrainProgress {
        let started = {
            let mut task = self
                .inner
                .drain
                .task
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if task.is_none() {
                // Intake stops at once, before this call returns.
                self.inner.intake.send_replace(true);
                set(
                    self,
                    DrainProgress {
                        state: DrainState::IntakeStopped,
                        detail: "intake stopped: no new fetches or starts".into(),
                        ..Default::default()
                    },
                );
                let node = self.clone();
                *task = Some(AbortOnDrop(tokio::spawn(async move {
                    node.run_drain(grace).await;
                })));
                true
            } else {
                false
            }
        };
        if started {
            // gRPC health follows before this call returns (as `/ready` does, from the intake
            // switch); an undrain that raced this call wins.
            self.set_health(!self.draining()).await;
        }
        if wait {
            let mut rx = self.inner.drain.sender().subscribe();
            let _ = tokio::time::timeout(
                grace + self.inner.ctx.settings.io_timeout * 4,
                rx.wait_for(|p| p.state == DrainState::Drained),
            )
            .await;
        }
        self.drain_progress()
    }

    /// Ends a drain: consumers fetch again, starts are taken, readiness returns.
    pub async fn undrain(&self) -> DrainProgress {
        let task = self
            .inner
            .drain
            .task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(task);
        self.inner.intake.send_replace(false);
        self.set_health(true).await;
        set(
            self,
            DrainProgress {
                detail: "serving".into(),
                ..Default::default()
            },
        );
        self.drain_progress()
    }

    async fn in_flight(&self) -> (u64, Vec<String>) {
        let controls: Vec<_> = self
            .inner
            .consumers
            .lock()
            .await
            .iter()
            .map(|c| c.control.clone())
            .collect();
        let mut total = 0;
        let mut holding = Vec::new();
        for c in controls {
            if let Ok(s) = c.ask(ConsumerMsg::Status, Duration::from_secs(2)).await {
                if s.in_flight > 0 {
                    total += s.in_flight;
                    holding.push(format!("{} ({})", s.durable, s.in_flight));
                } else if s.fetching {
                    // Its last pull is still open (at most the fetch expiry): a message the
                    // server sends to it is handed back, but only while this process runs.
                    holding.push(format!("{} (pull open)", s.durable));
                }
            }
        }
        (total, holding)
    }

    async fn run_drain(&self, grace: Duration) {
        let started = tokio::time::Instant::now();
        let deadline = started + grace;
        // 1. In-flight work finishes.
        let mut left = Vec::new();
        let mut in_flight;
        loop {
            let (n, holding) = self.in_flight().await;
            in_flight = n;
            let mut p = self.drain_progress();
            p.in_flight = n;
            set(self, p);
            if n == 0 && holding.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                left = holding;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if left.is_empty() {
            set(
                self,
                DrainProgress {
                    state: DrainState::InFlightZero,
                    detail: format!("in-flight work finished after {:?}", started.elapsed()),
                    ..Default::default()
                },
            );
        }
        // 2. The outbox: the relay's queue empties, then one sweep publishes what is pending.
        while self.inner.relay.depth() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let swept = self
            .inner
            .relay
            .sweep_now(self.inner.ctx.settings.io_timeout * 6)
            .await;
        let pending_outbox = self.outbox_depth().await;
        set(
            self,
            DrainProgress {
                state: DrainState::OutboxFlushed,
                in_flight,
                pending_outbox,
                detail: match swept {
                    Ok(()) => format!("outbox flushed; {pending_outbox} steps pending"),
                    Err(e) => format!(
                        "outbox sweep failed ({e}); {pending_outbox} steps pending for the other runners' sweeps"
                    ),
                },
                ..Default::default()
            },
        );
        // 3. Drained.
        let detail = drained_detail(grace, in_flight, &left, started.elapsed());
        tracing::info!(%detail, "runner drain finished");
        set(
            self,
            DrainProgress {
                state: DrainState::Drained,
                in_flight,
                pending_outbox,
                drained: left.is_empty(),
                detail,
            },
        );
    }

    /// Outbox steps not yet published (entries of the outbox index; bounded count); 0 when
    /// they could not be counted, and then the gauge keeps its last count.
    pub async fn outbox_depth(&self) -> u64 {
        let Some(n) = super::outbox::index_depth(&self.inner.relay_ctx).await else {
            return 0;
        };
        metrics::gauge!(cloudlysis_runtime::metrics::names::OUTBOX_DEPTH).set(n as f64);
        n
    }
}

/// What a finished drain says: how long it took, or what was left when its grace passed.
fn drained_detail(grace: Duration, in_flight: u64, left: &[String], took: Duration) -> String {
    if left.is_empty() {
        format!("drained in {took:?}")
    } else if in_flight == 0 {
        // Only open pulls were left: nothing is held, but a message the server sends to one of
        // them before it expires is handed back only while this process runs.
        format!(
            "the grace of {grace:?} passed with no message in flight but pulls still open on {}: \
             a message the server delivers to them is redelivered to another runner after \
             runner.ack_timeout_ms",
            left.join(", ")
        )
    } else {
        format!(
            "the grace of {grace:?} passed with {in_flight} messages in flight on {}: they are \
             not acknowledged, so the server redelivers them to another runner after \
             runner.ack_timeout_ms",
            left.join(", ")
        )
    }
}

#[cfg(test)]
mod detail_tests {
    use super::*;

    /// Found by using the platform: a drain whose grace passed with only open pulls said
    /// "0 messages in flight …: they are not acknowledged".
    #[test]
    fn a_drain_says_what_was_left_truthfully() {
        let grace = Duration::from_millis(100);
        let took = Duration::from_millis(120);
        assert!(drained_detail(grace, 0, &[], took).starts_with("drained in"));
        let pulls = drained_detail(grace, 0, &["effects-withdraw (pull open)".into()], took);
        assert!(pulls.contains("no message in flight"), "{pulls}");
        assert!(!pulls.contains("0 messages"), "{pulls}");
        let held = drained_detail(grace, 2, &["effects-withdraw (2)".into()], took);
        assert!(held.contains("2 messages in flight"), "{held}");
    }
}
