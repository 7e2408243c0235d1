//! Supervision policies: what happens when a child stops.
//!
//! | [`Restart`] | child fails (error or panic) | child stops normally |
//! |---|---|---|
//! | `Permanent` (default) | restarted | restarted |
//! | `Transient` | restarted | removed |
//! | `Temporary` | removed | removed |
//!
//! | [`Strategy`] | when a child is restarted |
//! |---|---|
//! | `OneForOne` (default) | only that child restarts |
//! | `OneForAll` | every other child is stopped (in reverse start order), then all restart in order |
//! | `RestForOne` | the children started after it are stopped (reverse order), then it and they restart in order |
//!
//! [`Intensity`]: more than `max_restarts` restarts within `within` makes the supervisor stop
//! its children and fail, escalating to its parent (Erlang's `intensity`/`period`).
//!
//! [`Backoff`]: restarts of one child wait `initial · 2^attempt`, capped at `max`, minus up to
//! `jitter` of it at random; the attempt counter resets when the child ran longer than
//! `reset_after` since its last restart.

use std::time::Duration;

use serde::Serialize;

/// When a stopped child is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always restarted.
    #[default]
    Permanent,
    /// Restarted only after a failure; a normal stop removes it.
    Transient,
    /// Never restarted; removed when it stops.
    Temporary,
}

/// Which children restart together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the child that stopped.
    #[default]
    OneForOne,
    /// Every child.
    OneForAll,
    /// The child that stopped and every child started after it.
    RestForOne,
}

impl Strategy {
    /// The snake_case name used in snapshots.
    pub fn as_str(&self) -> &'static str {
        match self {
            Strategy::OneForOne => "one_for_one",
            Strategy::OneForAll => "one_for_all",
            Strategy::RestForOne => "rest_for_one",
        }
    }
}

/// Restart intensity: at most `max_restarts` restarts within `within`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed in the window (default 5).
    pub max_restarts: u32,
    /// The sliding window (default 10 s).
    pub within: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            within: Duration::from_secs(10),
        }
    }
}

/// Delay between restarts of one child.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first restart (default 100 ms).
    pub initial: Duration,
    /// Largest delay (default 10 s).
    pub max: Duration,
    /// Fraction of the delay taken off at random, 0.0–1.0 (default 0.2).
    pub jitter: f64,
    /// A child that ran this long since its last restart starts over at `initial`
    /// (default 30 s).
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            jitter: 0.2,
            reset_after: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// No delay at all (tests, or children that must come back at once).
    pub fn none() -> Self {
        Self {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            jitter: 0.0,
            reset_after: Duration::ZERO,
        }
    }

    /// The delay before restart number `attempt` (0-based), with `unit` in `[0, 1)` drawing
    /// the jitter: `base · (1 − jitter · unit)` where `base = min(initial · 2^attempt, max)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        let base = self.initial.saturating_mul(factor).min(self.max);
        let jitter = self.jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0);
        base.mul_f64(1.0 - jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps_without_jitter() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            jitter: 0.0,
            reset_after: Duration::from_secs(5),
        };
        let delays: Vec<_> = (0..6).map(|a| b.delay(a, 0.5).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn jitter_only_shortens_within_its_fraction() {
        let b = Backoff {
            jitter: 0.5,
            ..Backoff::default()
        };
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(100));
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(50));
    }

    proptest::proptest! {
        #[test]
        fn delays_stay_within_bounds(attempt in 0u32..100, unit in 0.0f64..1.0, jitter in 0.0f64..1.0) {
            let b = Backoff { jitter, ..Backoff::default() };
            let d = b.delay(attempt, unit);
            proptest::prop_assert!(d <= b.max);
            let base = b.initial.saturating_mul(2u32.saturating_pow(attempt.min(31))).min(b.max);
            proptest::prop_assert!(d >= base.mul_f64(1.0 - jitter) - Duration::from_nanos(1));
        }
    }
}
