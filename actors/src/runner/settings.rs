//! Runner settings: what a runner node reads at start ([`RunnerSettings`]) and what it can
//! re-read while it runs ([`LiveSettings`], `RunnerAdmin/Reload`).
//!
//! | live setting | changes | on reload |
//! |---|---|---|
//! | `runner.max_in_flight`, `runner.effect_concurrency` | effect commands of one type executed at once | the effect's consumer is drained (in-flight commands finish) and restarted with the new bound |
//! | `runner.enabled_workflows` | which workflows take inputs and starts here | a disabled workflow's consumers are drained and stopped; its starts are refused |
//! | `runner.effect_max_attempts` | attempts per command, per effect type | the next decision to retry uses it |

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cloudlysis_runtime::config::{ConfigError, ConfigSource, Origin, Setting};
use cloudlysis_runtime::consumer::{ConsumerRole, ConsumerSettings};

use super::instance::InstanceSettings;

macro_rules! setting {
    ($name:ident, $key:literal, $env:literal, $flag:literal, $doc:literal) => {
        #[doc = $doc]
        pub const $name: Setting = Setting {
            key: $key,
            env: $env,
            flag: $flag,
            doc: $doc,
        };
    };
}

setting!(
    GRPC_ADDR,
    "runner.grpc_addr",
    "CLOUDLYSIS_RUNNER_GRPC_ADDR",
    "--grpc-addr",
    "gRPC listen address of the runner node [default: 127.0.0.1:50053]"
);
setting!(
    LANES,
    "runner.lanes",
    "CLOUDLYSIS_RUNNER_LANES",
    "",
    "input lanes per workflow consumer: one instance's inputs stay on one lane [default: 8] [1..=64]"
);
setting!(
    INSTANCE_MAILBOX,
    "runner.instance_mailbox",
    "CLOUDLYSIS_RUNNER_INSTANCE_MAILBOX",
    "",
    "mailbox capacity of a workflow instance actor [default: 64]"
);
setting!(
    INSTANCE_IDLE_TIMEOUT_MS,
    "runner.instance_idle_timeout_ms",
    "CLOUDLYSIS_RUNNER_INSTANCE_IDLE_TIMEOUT_MS",
    "",
    "idle time before an instance actor is passivated, milliseconds [default: 60000]"
);
setting!(
    MAX_INSTANCES,
    "runner.max_instances",
    "CLOUDLYSIS_RUNNER_MAX_INSTANCES",
    "",
    "most live instance actors per workflow; beyond it starts get 429 [default: 100000]"
);
setting!(
    RELAY_LANES,
    "runner.relay_lanes",
    "CLOUDLYSIS_RUNNER_RELAY_LANES",
    "",
    "outbox relay actors (publishing in parallel) [default: 4] [1..=64]"
);
setting!(
    OUTBOX_SWEEP_MS,
    "runner.outbox_sweep_ms",
    "CLOUDLYSIS_RUNNER_OUTBOX_SWEEP_MS",
    "",
    "how often the outbox index is swept for unpublished steps, milliseconds [default: 5000]"
);
setting!(
    MAX_ARMED_TIMERS,
    "runner.max_armed_timers",
    "CLOUDLYSIS_RUNNER_MAX_ARMED_TIMERS",
    "",
    "timers waiting on the server at once (the timer consumer's max_ack_pending); more fire late [default: 100000]"
);
setting!(
    AGGREGATE_ADDR,
    "runner.aggregate_addr",
    "CLOUDLYSIS_RUNNER_AGGREGATE_ADDR",
    "--aggregate-addr",
    "gRPC address of the aggregate node that effects send commands to [default: http://127.0.0.1:50051]"
);

setting!(
    DRAIN_GRACE_MS,
    "runner.drain_grace_ms",
    "CLOUDLYSIS_RUNNER_DRAIN_GRACE_MS",
    "",
    "how long a drain waits for in-flight work before it gives up on it (the work is redelivered to other runners), milliseconds [default: 30000]"
);
setting!(
    EFFECT_CONCURRENCY,
    "runner.effect_concurrency",
    "CLOUDLYSIS_RUNNER_EFFECT_CONCURRENCY",
    "",
    "per effect type, commands executed at once, e.g. `withdraw=4,deposit=8`; other types use runner.max_in_flight [default: none] [reloadable]"
);
setting!(
    ENABLED_WORKFLOWS,
    "runner.enabled_workflows",
    "CLOUDLYSIS_RUNNER_ENABLED_WORKFLOWS",
    "",
    "workflows this node runs, e.g. `transfer`, or `*` for every registered one [default: *] [reloadable]"
);
setting!(
    EFFECT_MAX_ATTEMPTS,
    "runner.effect_max_attempts",
    "CLOUDLYSIS_RUNNER_EFFECT_MAX_ATTEMPTS",
    "",
    "per effect type, attempts per command instead of the effect's retry policy, e.g. `deposit=3` [default: none] [reloadable]"
);

/// Every runner-node setting.
pub const SETTINGS: &[&Setting] = &[
    &GRPC_ADDR,
    &LANES,
    &INSTANCE_MAILBOX,
    &INSTANCE_IDLE_TIMEOUT_MS,
    &MAX_INSTANCES,
    &RELAY_LANES,
    &OUTBOX_SWEEP_MS,
    &MAX_ARMED_TIMERS,
    &AGGREGATE_ADDR,
    &DRAIN_GRACE_MS,
    &EFFECT_CONCURRENCY,
    &ENABLED_WORKFLOWS,
    &EFFECT_MAX_ATTEMPTS,
];

/// Most lanes of a consumer.
pub const MAX_LANES: usize = 64;

/// Tunables of the runner node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunnerSettings {
    /// Consumer settings (`RUNNER_*`): ack wait, max deliver, max in flight. Effect workers
    /// run up to `max_in_flight` commands of one effect type at once.
    pub consumer: ConsumerSettings,
    /// Input lanes per workflow consumer (default 8).
    pub lanes: usize,
    /// Instance actors.
    pub instances: InstanceSettings,
    /// Outbox relay actors (default 4).
    pub relay_lanes: usize,
    /// Sweep interval of the outbox index (default 5 s).
    pub sweep_interval: Duration,
    /// Timers waiting on the server at once (default 100 000).
    pub max_armed_timers: u64,
    /// Deadline of each NATS call (default 5 s).
    pub io_timeout: Duration,
    /// How long a drain waits for in-flight work (default 30 s).
    pub drain_grace: Duration,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        Self {
            consumer: ConsumerSettings::default(),
            lanes: 8,
            instances: InstanceSettings::default(),
            relay_lanes: 4,
            sweep_interval: Duration::from_secs(5),
            max_armed_timers: 100_000,
            io_timeout: Duration::from_secs(5),
            drain_grace: Duration::from_secs(30),
        }
    }
}

impl RunnerSettings {
    /// Reads the settings (env over file over defaults); errors name the setting.
    pub fn load(src: &ConfigSource) -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            consumer: ConsumerSettings::load(ConsumerRole::Runner, src)?,
            lanes: src.get_in_range(&LANES, None, d.lanes as u64, 1, MAX_LANES as u64)? as usize,
            instances: InstanceSettings {
                mailbox: src.get_in_range(
                    &INSTANCE_MAILBOX,
                    None,
                    d.instances.mailbox as u64,
                    1,
                    100_000,
                )? as usize,
                idle_timeout: src.get_millis(
                    &INSTANCE_IDLE_TIMEOUT_MS,
                    None,
                    d.instances.idle_timeout,
                    Duration::from_millis(10),
                    Duration::from_secs(24 * 3600),
                )?,
                max_instances: src.get_in_range(
                    &MAX_INSTANCES,
                    None,
                    d.instances.max_instances as u64,
                    1,
                    10_000_000,
                )? as usize,
                input_timeout: d.instances.input_timeout,
            },
            relay_lanes: src.get_in_range(
                &RELAY_LANES,
                None,
                d.relay_lanes as u64,
                1,
                MAX_LANES as u64,
            )? as usize,
            sweep_interval: src.get_millis(
                &OUTBOX_SWEEP_MS,
                None,
                d.sweep_interval,
                Duration::from_millis(50),
                Duration::from_secs(3600),
            )?,
            max_armed_timers: src.get_in_range(
                &MAX_ARMED_TIMERS,
                None,
                d.max_armed_timers,
                1,
                10_000_000,
            )?,
            io_timeout: d.io_timeout,
            drain_grace: src.get_millis(
                &DRAIN_GRACE_MS,
                None,
                d.drain_grace,
                cloudlysis_runtime::workflow::DRAIN_GRACE_MIN,
                cloudlysis_runtime::workflow::DRAIN_GRACE_MAX,
            )?,
        })
    }
}

/// The settings a runner applies again on `RunnerAdmin/Reload`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LiveSettings {
    /// Commands of one effect type executed at once, when no override names the type
    /// (`runner.max_in_flight`).
    pub default_concurrency: u64,
    /// Per effect type overrides (`runner.effect_concurrency`).
    pub effect_concurrency: BTreeMap<String, u64>,
    /// Workflows that run here (`None`: every registered one).
    pub enabled_workflows: Option<BTreeSet<String>>,
    /// Per effect type attempts (`runner.effect_max_attempts`).
    pub effect_max_attempts: BTreeMap<String, u32>,
}

impl LiveSettings {
    /// Reads them (env over file over defaults) and checks every name against what this node
    /// registered; errors name the setting.
    pub fn load(
        src: &ConfigSource,
        workflows: &[&str],
        effects: &[&str],
    ) -> Result<Self, ConfigError> {
        let consumer = ConsumerSettings::load(ConsumerRole::Runner, src)?;
        let invalid = |setting: &Setting, value: String, reason: String| {
            let origin = src
                .raw(setting, None)
                .map_or(Origin::Env(setting.env), |(_, o)| o);
            ConfigError::Invalid {
                setting: setting.key,
                origin,
                value,
                reason,
            }
        };
        let pairs = |setting: &Setting, max: u64| -> Result<BTreeMap<String, u64>, ConfigError> {
            let Some((raw, _)) = src.raw(setting, None) else {
                return Ok(BTreeMap::new());
            };
            let mut out = BTreeMap::new();
            for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (name, n) = part.split_once('=').ok_or_else(|| {
                    invalid(
                        setting,
                        raw.clone(),
                        format!("`{part}` is not `<effect type>=<number>`"),
                    )
                })?;
                let (name, n) = (name.trim(), n.trim());
                if !effects.contains(&name) {
                    return Err(invalid(
                        setting,
                        raw.clone(),
                        format!(
                            "`{name}` is not an effect type of this runner (it runs: {})",
                            effects.join(", ")
                        ),
                    ));
                }
                let n: u64 = n
                    .parse()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        invalid(
                            setting,
                            raw.clone(),
                            format!("`{n}` is not a number in 1..={max}"),
                        )
                    })?;
                if out.insert(name.to_string(), n).is_some() {
                    return Err(invalid(
                        setting,
                        raw.clone(),
                        format!("`{name}` is given twice; give each effect type once"),
                    ));
                }
            }
            Ok(out)
        };
        let effect_concurrency = pairs(&EFFECT_CONCURRENCY, 10_000)?;
        let effect_max_attempts = pairs(&EFFECT_MAX_ATTEMPTS, 1_000)?
            .into_iter()
            .map(|(k, v)| (k, v as u32))
            .collect();
        let enabled_workflows = match src.raw(&ENABLED_WORKFLOWS, None) {
            None => None,
            Some((raw, _)) if raw.trim() == "*" => None,
            Some((raw, _)) => {
                let mut set = BTreeSet::new();
                for name in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    if !workflows.contains(&name) {
                        return Err(invalid(
                            &ENABLED_WORKFLOWS,
                            raw.clone(),
                            format!(
                                "`{name}` is not a workflow of this runner (it runs: {})",
                                workflows.join(", ")
                            ),
                        ));
                    }
                    set.insert(name.to_string());
                }
                Some(set)
            }
        };
        Ok(Self {
            default_concurrency: consumer.max_in_flight,
            effect_concurrency,
            enabled_workflows,
            effect_max_attempts,
        })
    }

    /// Commands of `effect_type` executed at once.
    pub fn concurrency(&self, effect_type: &str) -> u64 {
        self.effect_concurrency
            .get(effect_type)
            .copied()
            .unwrap_or(self.default_concurrency)
    }

    /// True when `workflow` runs here.
    pub fn enabled(&self, workflow: &str) -> bool {
        self.enabled_workflows
            .as_ref()
            .is_none_or(|set| set.contains(workflow))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(pairs: &[(&str, &str)]) -> ConfigSource {
        ConfigSource::from_env(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn live_settings_read_their_lists_and_name_what_is_wrong() {
        let s = LiveSettings::load(
            &src(&[
                (
                    "CLOUDLYSIS_RUNNER_EFFECT_CONCURRENCY",
                    "withdraw=4, deposit=8",
                ),
                ("CLOUDLYSIS_RUNNER_ENABLED_WORKFLOWS", "transfer"),
                ("CLOUDLYSIS_RUNNER_EFFECT_MAX_ATTEMPTS", "deposit=3"),
                ("RUNNER_MAX_IN_FLIGHT", "16"),
            ]),
            &["transfer", "other"],
            &["withdraw", "deposit", "mail"],
        )
        .unwrap();
        assert_eq!(s.concurrency("withdraw"), 4);
        assert_eq!(s.concurrency("mail"), 16);
        assert!(s.enabled("transfer") && !s.enabled("other"));
        assert_eq!(s.effect_max_attempts["deposit"], 3);
        for (env, value, named) in [
            (
                "CLOUDLYSIS_RUNNER_EFFECT_CONCURRENCY",
                "nope=4",
                "runner.effect_concurrency",
            ),
            (
                "CLOUDLYSIS_RUNNER_EFFECT_CONCURRENCY",
                "withdraw=0",
                "runner.effect_concurrency",
            ),
            (
                "CLOUDLYSIS_RUNNER_EFFECT_CONCURRENCY",
                "withdraw=3,withdraw=4",
                "given twice",
            ),
            (
                "CLOUDLYSIS_RUNNER_EFFECT_MAX_ATTEMPTS",
                "deposit=3, deposit=5",
                "given twice",
            ),
            (
                "CLOUDLYSIS_RUNNER_EFFECT_CONCURRENCY",
                "withdraw",
                "runner.effect_concurrency",
            ),
            (
                "CLOUDLYSIS_RUNNER_ENABLED_WORKFLOWS",
                "ghost",
                "runner.enabled_workflows",
            ),
            (
                "CLOUDLYSIS_RUNNER_EFFECT_MAX_ATTEMPTS",
                "deposit=x",
                "runner.effect_max_attempts",
            ),
        ] {
            let e = LiveSettings::load(
                &src(&[(env, value)]),
                &["transfer"],
                &["withdraw", "deposit"],
            )
            .unwrap_err();
            assert!(e.to_string().contains(named), "{e}");
        }
        let all = LiveSettings::load(&src(&[]), &["transfer"], &["withdraw"]).unwrap();
        assert!(all.enabled("transfer"));
        assert_eq!(all.concurrency("withdraw"), 64);
    }
}
