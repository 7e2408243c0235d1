//! Consumer policy: durable pull consumers with explicit acks, `ack_wait`, `max_deliver`,
//! `max_ack_pending = max_in_flight` and a nak backoff; durable names derived from the role so
//! they are stable across replicas and never collide. [`ensure_consumer`] creates a durable or
//! validates an existing one — it never rewrites one in place.
//!
//! | setting | env (projection / runner) | default | bounds |
//! |---|---|---|---|
//! | ack wait | `PROJECTION_ACK_TIMEOUT_MS` / `RUNNER_ACK_TIMEOUT_MS` | 30 000 ms | 100 ms – 1 h |
//! | max deliver | `PROJECTION_MAX_DELIVER` / `RUNNER_MAX_DELIVER` | 5 | 1 – 1 000 |
//! | max in flight | `PROJECTION_MAX_IN_FLIGHT` / `RUNNER_MAX_IN_FLIGHT` | 64 | 1 – 10 000 |
//! | deliver group | `PROJECTION_DELIVER_GROUP` / `RUNNER_DELIVER_GROUP` | — | refused: push consumers are not used |
//!
//! Each is also a key in the TOML file (`projection.ack_timeout_ms`, …).
//!
//! | durable name | used by |
//! |---|---|
//! | `cloudlysis-projection-all` | projection node, Single mode (one consumer for all views) |
//! | `cloudlysis-projection-view-<view>` | projection node, PerView mode |
//! | `cloudlysis-runner-workflow-<name>` | runner node, one per workflow |
//! | `cloudlysis-runner-effect-<effect_type>` | runner node, one per effect type |
//! | `cloudlysis-runner-timers` | runner node: durable timers (`WORKFLOW_COMMANDS`, effect type `_timer`) |

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, ReplayPolicy, pull};

use crate::config::{ConfigError, ConfigSource, Setting};
use crate::subject::SubjectToken;

mod ensure;

pub use ensure::{ConsumerError, ensure_consumer};

/// Which role's settings to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerRole {
    /// Projection nodes (`PROJECTION_*`).
    Projection,
    /// Runner nodes (`RUNNER_*`).
    Runner,
}

/// The settings of one role, for `--help` and the operations guide.
pub mod settings {
    use super::Setting;

    macro_rules! role_settings {
        ($ack:ident, $deliver:ident, $inflight:ident, $group:ident, $role:literal, $ENV:literal) => {
            /// Ack wait: how long the server waits for an ack before redelivering.
            pub const $ack: Setting = Setting {
                key: concat!($role, ".ack_timeout_ms"),
                env: concat!($ENV, "_ACK_TIMEOUT_MS"),
                flag: "",
                doc: "ack wait before redelivery, milliseconds [default: 30000]",
            };
            /// Deliveries before a message becomes poison.
            pub const $deliver: Setting = Setting {
                key: concat!($role, ".max_deliver"),
                env: concat!($ENV, "_MAX_DELIVER"),
                flag: "",
                doc: "deliveries before a message is quarantined as poison [default: 5]",
            };
            /// Messages in flight (= server-side max_ack_pending = mailbox capacity).
            pub const $inflight: Setting = Setting {
                key: concat!($role, ".max_in_flight"),
                env: concat!($ENV, "_MAX_IN_FLIGHT"),
                flag: "",
                doc: "messages in flight per consumer (= max_ack_pending) [default: 64]",
            };
            /// Push-consumer deliver group: refused.
            pub const $group: Setting = Setting {
                key: concat!($role, ".deliver_group"),
                env: concat!($ENV, "_DELIVER_GROUP"),
                flag: "",
                doc: "refused: Cloudlysis uses durable pull consumers; replicas share one durable",
            };
        };
    }

    role_settings!(
        PROJECTION_ACK_TIMEOUT_MS,
        PROJECTION_MAX_DELIVER,
        PROJECTION_MAX_IN_FLIGHT,
        PROJECTION_DELIVER_GROUP,
        "projection",
        "PROJECTION"
    );
    role_settings!(
        RUNNER_ACK_TIMEOUT_MS,
        RUNNER_MAX_DELIVER,
        RUNNER_MAX_IN_FLIGHT,
        RUNNER_DELIVER_GROUP,
        "runner",
        "RUNNER"
    );
}

/// Default ack wait.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// Default deliveries before poison.
pub const DEFAULT_MAX_DELIVER: u64 = 5;
/// Default messages in flight.
pub const DEFAULT_MAX_IN_FLIGHT: u64 = 64;

/// Delay before a nak'ed message is redelivered: `initial * multiplier^(attempt-1)`, capped.
///
/// | attempt (delivery that failed) | default delay |
/// |---|---|
/// | 1 | 1 s |
/// | 2 | 2 s |
/// | 3 | 4 s |
/// | n | min(2^(n-1) s, 60 s) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NakBackoff {
    /// Delay after the first failed delivery.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Growth factor per attempt (at least 1).
    pub multiplier: u32,
}

impl Default for NakBackoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier: 2,
        }
    }
}

impl NakBackoff {
    /// The nak delay after delivery `attempt` (1-based) failed.
    pub fn delay(&self, attempt: u64) -> Duration {
        let exp = attempt.saturating_sub(1).min(63) as u32;
        let factor = u64::from(self.multiplier.max(1)).saturating_pow(exp);
        let nanos = (self.initial.as_nanos() as u64).saturating_mul(factor);
        Duration::from_nanos(nanos).min(self.max)
    }
}

/// A role's consumer settings after defaults and overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerSettings {
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Deliveries before a message is poison (the last one is the poison decision).
    pub max_deliver: u64,
    /// Messages in flight; also the server's `max_ack_pending` and the mailbox capacity.
    pub max_in_flight: u64,
    /// Nak delays.
    pub nak_backoff: NakBackoff,
    /// Server-side `max_ack_pending` when it must exceed `max_in_flight` (`None`, the default:
    /// equal to `max_in_flight`). Only for consumers whose handler defers messages (timers):
    /// a deferred message waits on the server, counted as ack-pending, not in the mailbox.
    pub server_max_ack_pending: Option<u64>,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            ack_wait: DEFAULT_ACK_WAIT,
            max_deliver: DEFAULT_MAX_DELIVER,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            nak_backoff: NakBackoff::default(),
            server_max_ack_pending: None,
        }
    }
}

impl ConsumerSettings {
    /// Reads a role's settings: env over file over defaults. A configured deliver group is
    /// refused.
    pub fn load(role: ConsumerRole, src: &ConfigSource) -> Result<Self, ConfigError> {
        use settings::*;
        let (ack, deliver, inflight, group) = match role {
            ConsumerRole::Projection => (
                &PROJECTION_ACK_TIMEOUT_MS,
                &PROJECTION_MAX_DELIVER,
                &PROJECTION_MAX_IN_FLIGHT,
                &PROJECTION_DELIVER_GROUP,
            ),
            ConsumerRole::Runner => (
                &RUNNER_ACK_TIMEOUT_MS,
                &RUNNER_MAX_DELIVER,
                &RUNNER_MAX_IN_FLIGHT,
                &RUNNER_DELIVER_GROUP,
            ),
        };
        src.refuse(
            group,
            "Cloudlysis uses durable pull consumers; replicas share work by binding the same \
             durable, so remove the deliver group",
        )?;
        Ok(Self {
            ack_wait: src.get_millis(
                ack,
                None,
                DEFAULT_ACK_WAIT,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            )?,
            max_deliver: src.get_in_range(deliver, None, DEFAULT_MAX_DELIVER, 1, 1000)?,
            max_in_flight: src.get_in_range(inflight, None, DEFAULT_MAX_IN_FLIGHT, 1, 10_000)?,
            nak_backoff: NakBackoff::default(),
            server_max_ack_pending: None,
        })
    }
}

/// A durable consumer name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DurableName(String);

impl DurableName {
    /// Projection node, Single mode: one consumer feeds every view.
    pub fn projection_single() -> Self {
        Self("cloudlysis-projection-all".into())
    }

    /// Projection node, PerView mode: one consumer per view.
    pub fn projection_view(view: &SubjectToken) -> Self {
        Self(format!("cloudlysis-projection-view-{view}"))
    }

    /// Projection node, PerView mode, generation `generation` of a view: generation 0 is
    /// [`DurableName::projection_view`]; each rebuild reads the stream again under
    /// `…-view-<view>=g<n>` (`=` is not a token character, so no view name collides with it).
    pub fn projection_view_generation(view: &SubjectToken, generation: u32) -> Self {
        match generation {
            0 => Self::projection_view(view),
            n => Self(format!("cloudlysis-projection-view-{view}=g{n}")),
        }
    }

    /// Runner node: one consumer per workflow.
    pub fn runner_workflow(workflow: &SubjectToken) -> Self {
        Self(format!("cloudlysis-runner-workflow-{workflow}"))
    }

    /// Runner node: the durable timer consumer (armed timers wait on it until due).
    pub fn runner_timers() -> Self {
        Self("cloudlysis-runner-timers".into())
    }

    /// Runner node: one consumer per effect type.
    pub fn runner_effect(effect_type: &SubjectToken) -> Self {
        Self(format!("cloudlysis-runner-effect-{effect_type}"))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DurableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DurableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DurableName({})", self.0)
    }
}

/// Everything needed to create (or bind to) one durable pull consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerPolicy {
    /// Durable name.
    pub durable: DurableName,
    /// Filter subjects (from [`crate::subject::filter`]).
    pub filter_subjects: Vec<String>,
    /// Role settings.
    pub settings: ConsumerSettings,
}

impl ConsumerPolicy {
    /// The pull consumer config: durable, explicit ack, deliver all, instant replay,
    /// `max_ack_pending = max_in_flight`.
    pub fn pull_config(&self) -> pull::Config {
        let (filter_subject, filter_subjects) = match self.filter_subjects.as_slice() {
            [one] => (one.clone(), Vec::new()),
            many => (String::new(), many.to_vec()),
        };
        pull::Config {
            durable_name: Some(self.durable.as_str().to_string()),
            description: Some(format!("Cloudlysis consumer {}", self.durable)),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.settings.ack_wait,
            max_deliver: self.settings.max_deliver as i64,
            max_ack_pending: self
                .settings
                .server_max_ack_pending
                .unwrap_or(self.settings.max_in_flight)
                .max(self.settings.max_in_flight) as i64,
            replay_policy: ReplayPolicy::Instant,
            filter_subject,
            filter_subjects,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests;
