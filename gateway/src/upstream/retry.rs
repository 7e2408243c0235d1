//! Retry profiles for calls to nodes, after gRFC A6: a profile names the attempts (at most
//! [`MAX_ATTEMPTS`]), a jittered exponential backoff and the status codes worth retrying; a
//! token bucket per Gateway ([`RetryThrottle`]) stops retries while calls keep failing; a node's
//! `grpc-retry-pushback-ms` trailer overrides the backoff (a negative or malformed one stops
//! retrying). Retries also stop at the call's deadline.
//!
//! | profile | attempts | backoff | retried on |
//! |---|---|---|---|
//! | [`READ`] (queries, admin reads) | 3 | 25 ms doubling to 400 ms, full jitter | `UNAVAILABLE` |
//! | [`COMMAND`] (commands with an `Idempotency-Key`) | 3 | 50 ms doubling to 400 ms, full jitter | only failures the node could not have acted on: no connection, or marked `not-committed` |
//!
//! A command without an idempotency key is never retried (only the client can make it safe).

use std::sync::Mutex;
use std::time::Duration;

use cloudlysis_runtime::metrics::names;
use tonic::Code;

/// Most attempts any profile makes (gRFC A6 caps `maxAttempts` at 5).
pub const MAX_ATTEMPTS: u32 = 5;

/// The gRPC trailer in which a server asks a client to wait (milliseconds) or not to retry.
pub const PUSHBACK_TRAILER: &str = "grpc-retry-pushback-ms";

/// How a class of calls is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryProfile {
    /// The `profile` label of [`names::GATEWAY_RETRIES`].
    pub name: &'static str,
    /// Attempts in all, the first included (1 – [`MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// Upper bound of the first backoff.
    pub initial_backoff: Duration,
    /// Upper bound of any backoff.
    pub max_backoff: Duration,
    /// Growth of the bound per attempt.
    pub multiplier: u32,
    /// Status codes worth another attempt.
    pub retryable: &'static [Code],
}

/// Reads: safe to repeat.
pub const READ: RetryProfile = RetryProfile {
    name: "read",
    max_attempts: 3,
    initial_backoff: Duration::from_millis(25),
    max_backoff: Duration::from_millis(400),
    multiplier: 2,
    retryable: &[Code::Unavailable],
};

/// Commands with an idempotency key, on failures before the node could have acted.
pub const COMMAND: RetryProfile = RetryProfile {
    name: "command",
    max_attempts: 3,
    initial_backoff: Duration::from_millis(50),
    max_backoff: Duration::from_millis(400),
    multiplier: 2,
    retryable: &[Code::Unavailable],
};

impl RetryProfile {
    /// The backoff before attempt `attempt + 1` (after `attempt` failed ones, ≥ 1): uniformly
    /// random up to `min(initial × multiplier^(attempt-1), max)` (gRFC A6's full jitter).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let grow = self
            .multiplier
            .max(1)
            .saturating_pow(attempt.saturating_sub(1));
        let bound = self
            .initial_backoff
            .saturating_mul(grow)
            .min(self.max_backoff);
        let r = (uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0;
        bound.mul_f64(r)
    }

    /// Whether `status` is one of the profile's retryable codes, or a call the node certainly
    /// did not take (no connection; refused at the HTTP/2 layer, whatever code tonic gave it —
    /// `runtime::outcome::not_taken`).
    pub fn retryable(&self, status: &tonic::Status) -> bool {
        self.retryable.contains(&status.code()) || cloudlysis_runtime::outcome::never_sent(status)
    }
}

/// What a node's pushback says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushback {
    /// No pushback: use the profile's backoff.
    None,
    /// Wait this long before the next attempt.
    Wait(Duration),
    /// Do not retry.
    Stop,
}

/// The pushback in `status`'s metadata (gRFC A6: a non-negative integer of milliseconds; any
/// other value means "do not retry").
pub fn pushback(status: &tonic::Status) -> Pushback {
    match status.metadata().get(PUSHBACK_TRAILER) {
        None => Pushback::None,
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(ms) => Pushback::Wait(Duration::from_millis(ms)),
            None => Pushback::Stop,
        },
    }
}

/// gRFC A6's retry throttle: `max_tokens` tokens; each failed call takes one, each success gives
/// back `token_ratio`; retries are allowed only while more than half are left.
#[derive(Debug)]
pub struct RetryThrottle {
    max_tokens: f64,
    token_ratio: f64,
    tokens: Mutex<f64>,
}

impl Default for RetryThrottle {
    /// 10 tokens, 0.1 back per success.
    fn default() -> Self {
        Self::new(10, 0.1)
    }
}

/// [`names::GATEWAY_RETRY_TOKENS`], resolved once (every call to a node moves it).
static RETRY_TOKENS: std::sync::LazyLock<metrics::Gauge> =
    std::sync::LazyLock::new(|| metrics::gauge!(names::GATEWAY_RETRY_TOKENS));

impl RetryThrottle {
    /// A full bucket of `max_tokens` (1 – 1000) refilled by `token_ratio` per success.
    pub fn new(max_tokens: u32, token_ratio: f64) -> Self {
        let max = f64::from(max_tokens.clamp(1, 1000));
        metrics::gauge!(names::GATEWAY_RETRY_TOKENS).set(max);
        Self {
            max_tokens: max,
            token_ratio: token_ratio.clamp(0.001, 1.0),
            tokens: Mutex::new(max),
        }
    }

    fn update(&self, f: impl FnOnce(f64) -> f64) -> f64 {
        let mut t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        *t = f(*t).clamp(0.0, self.max_tokens);
        RETRY_TOKENS.set(*t);
        *t
    }

    /// A call failed with a retryable status.
    pub fn on_failure(&self) {
        self.update(|t| t - 1.0);
    }

    /// A call succeeded.
    pub fn on_success(&self) {
        let ratio = self.token_ratio;
        self.update(|t| t + ratio);
    }

    /// Whether a retry may be made now.
    pub fn allows_retry(&self) -> bool {
        self.update(|t| t) > self.max_tokens / 2.0
    }
}

/// Why a call was not tried again, or that it was: the `outcome` label of
/// [`names::GATEWAY_RETRIES`].
pub fn count(profile: &RetryProfile, outcome: &'static str) {
    metrics::counter!(names::GATEWAY_RETRIES, "profile" => profile.name, "outcome" => outcome)
        .increment(1);
}

/// Makes the retry series exist at 0.
pub fn register_metrics() {
    for p in [READ, COMMAND] {
        for outcome in ["retried", "throttled", "pushback", "exhausted", "deadline"] {
            metrics::counter!(names::GATEWAY_RETRIES, "profile" => p.name, "outcome" => outcome)
                .increment(0);
        }
    }
}

/// The decision after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait, then try again.
    RetryAfter(Duration),
    /// Answer with this failure.
    GiveUp,
}

/// Decides what follows the failed `attempt` (1-based) of a call under `profile`, with
/// `remaining` time before its deadline. Counts the decision.
pub fn decide(
    profile: &RetryProfile,
    throttle: &RetryThrottle,
    status: &tonic::Status,
    attempt: u32,
    remaining: Duration,
) -> Next {
    if !profile.retryable(status) {
        return Next::GiveUp;
    }
    throttle.on_failure();
    if attempt >= profile.max_attempts.min(MAX_ATTEMPTS) {
        count(profile, "exhausted");
        return Next::GiveUp;
    }
    let wait = match pushback(status) {
        Pushback::Stop => {
            count(profile, "pushback");
            return Next::GiveUp;
        }
        Pushback::Wait(d) => d,
        Pushback::None => profile.backoff(attempt),
    };
    if !throttle.allows_retry() {
        count(profile, "throttled");
        return Next::GiveUp;
    }
    if wait >= remaining {
        count(profile, "deadline");
        return Next::GiveUp;
    }
    count(profile, "retried");
    Next::RetryAfter(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> tonic::Status {
        tonic::Status::unavailable("down")
    }

    #[test]
    fn backoff_is_jittered_under_a_growing_capped_bound() {
        for attempt in 1..=6 {
            let bound = Duration::from_millis(25 * 2u64.pow(attempt - 1)).min(READ.max_backoff);
            for _ in 0..50 {
                assert!(READ.backoff(attempt) <= bound, "{attempt}");
            }
        }
    }

    #[test]
    fn retries_stop_when_the_throttle_bucket_is_half_empty() {
        let throttle = RetryThrottle::new(10, 0.1);
        let far = Duration::from_secs(60);
        let mut retried = 0;
        // Every call fails on every attempt: each failure takes a token.
        for _ in 0..20 {
            let mut attempt = 1;
            while let Next::RetryAfter(_) = decide(&READ, &throttle, &unavailable(), attempt, far) {
                retried += 1;
                attempt += 1;
            }
        }
        // 10 tokens, retries only above 5: the first failures may retry, then none.
        assert!(retried <= 5, "{retried}");
        assert!(!throttle.allows_retry());
        assert_eq!(
            decide(&READ, &throttle, &unavailable(), 1, far),
            Next::GiveUp
        );
        // Successes refill it.
        for _ in 0..60 {
            throttle.on_success();
        }
        assert!(throttle.allows_retry());
    }

    #[test]
    fn pushback_overrides_the_backoff_or_stops() {
        let throttle = RetryThrottle::default();
        let far = Duration::from_secs(60);
        let mut s = unavailable();
        s.metadata_mut()
            .insert(PUSHBACK_TRAILER, "250".parse().unwrap());
        assert_eq!(
            decide(&READ, &throttle, &s, 1, far),
            Next::RetryAfter(Duration::from_millis(250))
        );
        let mut s = unavailable();
        s.metadata_mut()
            .insert(PUSHBACK_TRAILER, "-1".parse().unwrap());
        assert_eq!(decide(&READ, &throttle, &s, 1, far), Next::GiveUp);
    }

    #[test]
    fn attempts_codes_and_the_deadline_bound_retries() {
        let throttle = RetryThrottle::default();
        let far = Duration::from_secs(60);
        assert_eq!(
            decide(
                &READ,
                &throttle,
                &tonic::Status::invalid_argument("x"),
                1,
                far
            ),
            Next::GiveUp
        );
        assert_eq!(
            decide(&READ, &throttle, &unavailable(), READ.max_attempts, far),
            Next::GiveUp
        );
        let mut s = unavailable();
        s.metadata_mut()
            .insert(PUSHBACK_TRAILER, "500".parse().unwrap());
        assert_eq!(
            decide(&READ, &throttle, &s, 1, Duration::from_millis(100)),
            Next::GiveUp
        );
    }
}
