//! Create or validate a durable consumer — never rewrite one in place.
//!
//! A durable is shared by every node of its role. JetStream's create-or-update would let one node
//! with another filter, `ack_wait` or `max_in_flight` silently rewrite it for all (a view that
//! starts following a new aggregate type would never see that type's history; two nodes with
//! different settings would overwrite each other and break `max_ack_pending == max_in_flight`).
//! So [`ensure_consumer`] creates a missing durable, binds to an identical one, and refuses a
//! different one with the field named and what to do — like streams ([`crate::stream`]).

use async_nats::jetstream::consumer::{PullConsumer, pull};
use async_nats::jetstream::stream::{ConsumerCreateStrictErrorKind, Stream};

use super::ConsumerPolicy;

/// Why a durable consumer could not be created or bound.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The existing durable differs from this node's policy; it was left unchanged.
    #[error(
        "consumer {durable} on {stream} exists with {field} = {existing}, but this node wants \
         {wanted}: the durable was left unchanged. {hint}"
    )]
    Incompatible {
        /// Stream name.
        stream: String,
        /// Durable name.
        durable: String,
        /// The differing field (`filter_subjects`, `ack_wait`, …).
        field: &'static str,
        /// Its value on the server.
        existing: String,
        /// Its value in this node's policy.
        wanted: String,
        /// What to do about it.
        hint: String,
    },
    /// NATS failed or timed out.
    #[error("consumer {durable} on {stream}: {operation} failed: {reason}")]
    Nats {
        /// Stream name.
        stream: String,
        /// Durable name.
        durable: String,
        /// What was attempted.
        operation: &'static str,
        /// Why.
        reason: String,
    },
}

/// Creates the durable of `policy` on `stream`, or binds to the existing one when it is the
/// same; refuses one that differs (see the module docs).
pub async fn ensure_consumer(
    stream: &Stream,
    stream_name: &str,
    policy: &ConsumerPolicy,
) -> Result<PullConsumer, ConsumerError> {
    let wanted = policy.pull_config();
    let durable = policy.durable.to_string();
    let nats = |operation: &'static str, reason: String| ConsumerError::Nats {
        stream: stream_name.to_string(),
        durable: durable.clone(),
        operation,
        reason,
    };
    match stream.create_consumer_strict(wanted.clone()).await {
        Ok(c) => return Ok(c),
        Err(e) if e.kind() == ConsumerCreateStrictErrorKind::AlreadyExists => {}
        Err(e) => return Err(nats("create", e.to_string())),
    }
    let info = stream
        .consumer_info(&durable)
        .await
        .map_err(|e| nats("info", e.to_string()))?;
    if let Some((field, existing, want)) = difference(&info.config, &wanted) {
        return Err(ConsumerError::Incompatible {
            stream: stream_name.to_string(),
            durable: durable.clone(),
            field,
            existing,
            wanted: want,
            hint: hint(&durable, field),
        });
    }
    stream
        .get_consumer(&durable)
        .await
        .map_err(|e| nats("bind", e.to_string()))
}

/// The first field in which the server's config differs from the wanted one.
fn difference(
    existing: &async_nats::jetstream::consumer::Config,
    wanted: &pull::Config,
) -> Option<(&'static str, String, String)> {
    let mut have_filters: Vec<String> = existing.filter_subjects.clone();
    if !existing.filter_subject.is_empty() {
        have_filters.push(existing.filter_subject.clone());
    }
    let mut want_filters: Vec<String> = wanted.filter_subjects.clone();
    if !wanted.filter_subject.is_empty() {
        want_filters.push(wanted.filter_subject.clone());
    }
    have_filters.sort();
    want_filters.sort();
    if have_filters != want_filters {
        return Some((
            "filter_subjects",
            format!("{have_filters:?}"),
            format!("{want_filters:?}"),
        ));
    }
    let fields: [(&'static str, String, String); 6] = [
        (
            "ack_policy",
            format!("{:?}", existing.ack_policy),
            format!("{:?}", wanted.ack_policy),
        ),
        (
            "deliver_policy",
            format!("{:?}", existing.deliver_policy),
            format!("{:?}", wanted.deliver_policy),
        ),
        (
            "ack_wait",
            format!("{:?}", existing.ack_wait),
            format!("{:?}", wanted.ack_wait),
        ),
        (
            "max_deliver",
            existing.max_deliver.to_string(),
            wanted.max_deliver.to_string(),
        ),
        (
            "max_ack_pending",
            existing.max_ack_pending.to_string(),
            wanted.max_ack_pending.to_string(),
        ),
        (
            "replay_policy",
            format!("{:?}", existing.replay_policy),
            format!("{:?}", wanted.replay_policy),
        ),
    ];
    fields.into_iter().find(|(_, have, want)| have != want)
}

/// What an operator does about a differing field of `durable`.
fn hint(durable: &str, field: &str) -> String {
    let role = if durable.starts_with("cloudlysis-runner-") {
        "runner"
    } else {
        "projection"
    };
    match field {
        "filter_subjects" if durable.starts_with("cloudlysis-projection-view-") => {
            "The view now follows other aggregate types: rebuild it (`cloudlysis projection \
             rebuild <view>`) so the new generation reads their whole history under its own \
             durable."
                .to_string()
        }
        "filter_subjects" => {
            "The subjects this consumer follows changed: run every node of it with \
             the same behaviours, or rebuild."
                .to_string()
        }
        "ack_wait" => {
            format!("Run every node of this consumer with the same `{role}.ack_timeout_ms`.")
        }
        "max_deliver" => {
            format!("Run every node of this consumer with the same `{role}.max_deliver`.")
        }
        "max_ack_pending" => format!(
            "Run every node of this consumer with the same `{role}.max_in_flight` \
             (max_ack_pending = max_in_flight end to end)."
        ),
        _ => "The durable was made by another program or version; delete it only if you know \
              its position can be lost."
            .to_string(),
    }
}
