//! NATS subjects: token validation, the builders every producer uses, the filter subjects
//! consumers use, and subject-pattern coverage for stream validation.
//!
//! | stream | subject | builder |
//! |---|---|---|
//! | `AGGREGATE_EVENTS` | `tenant.<t>.aggregate.<type>.<id>` | [`aggregate_event`] |
//! | `WORKFLOW_COMMANDS` | `tenant.<t>.effect.<effect_type>` | [`effect_command`] |
//! | `WORKFLOW_EVENTS` | `tenant.<t>.effect_result.<effect_type>` | [`effect_result`] |
//! | `WORKFLOW_EVENTS` | `tenant.<t>.workflow.<name>.<instance>` | [`workflow_event`] |
//!
//! Producers publish concrete subjects only; every variable part is a [`SubjectToken`]:
//! `[A-Za-z0-9_-]`, 1..=[`MAX_TOKEN_LEN`] bytes. A `.`, `*`, `>`, whitespace or non-ASCII
//! character can never reach a subject.
//!
//! ```
//! use cloudlysis_runtime::subject::{aggregate_event, SubjectToken};
//! use cloudlysis_runtime::context::TenantId;
//!
//! let t = TenantId::new("acme").unwrap();
//! let ty = SubjectToken::new("account").unwrap();
//! let id = SubjectToken::new("a-1").unwrap();
//! assert_eq!(aggregate_event(&t, &ty, &id), "tenant.acme.aggregate.account.a-1");
//! assert!(SubjectToken::new("a.b").is_err());
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::context::TenantId;

/// Longest accepted subject token, in bytes.
pub const MAX_TOKEN_LEN: usize = 128;

/// Why a string is not a subject token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectTokenError {
    /// The token is empty.
    #[error("subject token is empty")]
    Empty,
    /// The token is longer than [`MAX_TOKEN_LEN`] bytes.
    #[error("subject token is {len} bytes long, the maximum is {MAX_TOKEN_LEN}")]
    TooLong {
        /// Length in bytes.
        len: usize,
    },
    /// The token holds a character outside `[A-Za-z0-9_-]`.
    #[error("subject token contains {found:?}; only A-Z, a-z, 0-9, '_' and '-' are allowed")]
    InvalidChar {
        /// The first offending character.
        found: char,
    },
}

/// One validated token of a NATS subject.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SubjectToken(String);

impl SubjectToken {
    /// Validates `value` as a subject token.
    pub fn new(value: impl Into<String>) -> Result<Self, SubjectTokenError> {
        let value = value.into();
        validate_token(&value)?;
        Ok(Self(value))
    }

    /// The token as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks `value` against the subject-token rules without allocating.
pub fn validate_token(value: &str) -> Result<(), SubjectTokenError> {
    if value.is_empty() {
        return Err(SubjectTokenError::Empty);
    }
    // Bytes, not chars: every allowed character is ASCII, and a token is checked several times
    // on every command. The first byte not allowed starts the character reported.
    if let Some(at) = value
        .bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    {
        let found = value[at..].chars().next().unwrap_or('\u{fffd}');
        return Err(SubjectTokenError::InvalidChar { found });
    }
    if value.len() > MAX_TOKEN_LEN {
        return Err(SubjectTokenError::TooLong { len: value.len() });
    }
    Ok(())
}

impl TryFrom<String> for SubjectToken {
    type Error = SubjectTokenError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<&str> for SubjectToken {
    type Error = SubjectTokenError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<SubjectToken> for String {
    fn from(value: SubjectToken) -> Self {
        value.0
    }
}

impl fmt::Display for SubjectToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SubjectToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectToken({})", self.0)
    }
}

/// `tenant.<t>.aggregate.<type>.<id>`: one aggregate instance's events.
pub fn aggregate_event(
    tenant: &TenantId,
    aggregate_type: &SubjectToken,
    id: &SubjectToken,
) -> String {
    // One allocation, no formatting machinery: built for every command and every read.
    [
        "tenant.",
        tenant.as_str(),
        ".aggregate.",
        &aggregate_type.0,
        ".",
        &id.0,
    ]
    .concat()
}

/// `tenant.<t>.effect.<effect_type>`: an effect command.
pub fn effect_command(tenant: &TenantId, effect_type: &SubjectToken) -> String {
    format!("tenant.{tenant}.effect.{effect_type}")
}

/// `tenant.<t>.effect_result.<effect_type>`: an effect result.
pub fn effect_result(tenant: &TenantId, effect_type: &SubjectToken) -> String {
    format!("tenant.{tenant}.effect_result.{effect_type}")
}

/// `tenant.<t>.workflow.<name>.<instance>`: a workflow instance's events.
pub fn workflow_event(tenant: &TenantId, name: &SubjectToken, instance: &SubjectToken) -> String {
    format!("tenant.{tenant}.workflow.{name}.{instance}")
}

/// Core NATS subject (no stream captures it) on which a runner asks every runner node to wake
/// the effect attempts of a command waiting in backoff (`retry-now`); the payload is the
/// command id.
pub const RUNNER_RETRY_NOW: &str = "cloudlysis.runner.retry_now";

/// Filter subjects for consumers. Wildcards appear only here and in stream configs.
pub mod filter {
    use super::SubjectToken;
    use crate::context::TenantId;

    /// Every aggregate event of every tenant: `tenant.*.aggregate.*.*`.
    pub fn all_aggregate_events() -> String {
        "tenant.*.aggregate.*.*".to_string()
    }

    /// Every event of one aggregate type, all tenants: `tenant.*.aggregate.<type>.*`.
    pub fn aggregate_type_events(aggregate_type: &SubjectToken) -> String {
        format!("tenant.*.aggregate.{aggregate_type}.*")
    }

    /// Every aggregate event of one tenant: `tenant.<t>.aggregate.*.*`.
    pub fn tenant_aggregate_events(tenant: &TenantId) -> String {
        format!("tenant.{tenant}.aggregate.*.*")
    }

    /// Every effect command, all tenants and types: `tenant.*.effect.*`.
    pub fn all_effect_commands() -> String {
        "tenant.*.effect.*".to_string()
    }

    /// Effect commands of one type, all tenants: `tenant.*.effect.<effect_type>`.
    pub fn effect_commands(effect_type: &SubjectToken) -> String {
        format!("tenant.*.effect.{effect_type}")
    }

    /// Every effect result, all tenants and types: `tenant.*.effect_result.*`.
    pub fn all_effect_results() -> String {
        "tenant.*.effect_result.*".to_string()
    }

    /// Effect results of one type, all tenants: `tenant.*.effect_result.<effect_type>`.
    pub fn effect_results(effect_type: &SubjectToken) -> String {
        format!("tenant.*.effect_result.{effect_type}")
    }

    /// Every workflow event, all tenants: `tenant.*.workflow.*.*`.
    pub fn all_workflow_events() -> String {
        "tenant.*.workflow.*.*".to_string()
    }

    /// Events of one workflow, all tenants and instances: `tenant.*.workflow.<name>.*`.
    pub fn workflow_events(name: &SubjectToken) -> String {
        format!("tenant.*.workflow.{name}.*")
    }
}

/// Where a new poison record is announced as it happens (core NATS, the record as JSON):
/// `cloudlysis.poison.<consumer>` — subscribe to `cloudlysis.poison.>` for all of them.
pub fn poison_notification(consumer: &str) -> String {
    format!("cloudlysis.poison.{consumer}")
}

/// The JetStream advisory the server publishes when it gives up redelivering a message of
/// `durable` on `stream` because `max_deliver` was reached without an ack or term (every
/// delivery expired): `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<durable>`.
pub fn max_deliveries_advisory(stream: &str, durable: &str) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{durable}")
}

/// True when every subject matched by `pattern` is also matched by `covering` (NATS wildcard
/// rules: `*` matches one token, a trailing `>` one or more).
///
/// ```
/// use cloudlysis_runtime::subject::covers;
/// assert!(covers("tenant.>", "tenant.*.aggregate.*.*"));
/// assert!(covers("tenant.*.aggregate.*.*", "tenant.acme.aggregate.account.a-1"));
/// assert!(!covers("tenant.*.aggregate.account.*", "tenant.*.aggregate.*.*"));
/// ```
pub fn covers(covering: &str, pattern: &str) -> bool {
    let mut c = covering.split('.');
    let mut p = pattern.split('.');
    loop {
        match (c.next(), p.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(pt)) if pt != ">" => {}
            (Some(ct), Some(pt)) if ct == pt => {
                if ct == ">" {
                    return true;
                }
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests;
