//! A client for effects that send commands to aggregates (`CommandService`): the effect's
//! tenant travels in a node credential the client signs (subject `runner`, the one right
//! `commands:<aggregate type>`; see [`cloudlysis_runtime::credential`]), its correlation and
//! trace in metadata, its `command_id` is the command's
//! `Idempotency-Key` (so a retried attempt never commits twice), its deadline is the call's,
//! and every gRPC status is classified as permanent, retryable or unknown.
//!
//! | status | effect error |
//! |---|---|
//! | `INVALID_ARGUMENT`, `NOT_FOUND`, `FAILED_PRECONDITION` (rejected), `PERMISSION_DENIED`, `OUT_OF_RANGE` | permanent |
//! | `ABORTED` (version conflict), `RESOURCE_EXHAUSTED` (busy) | retryable |
//! | `UNAUTHENTICATED` (the node refused the credential before any handler ran: a secret being rotated, clock skew) | retryable |
//! | `UNAVAILABLE` because no connection could be made (connect refused, DNS) | retryable (never sent) |
//! | any status the node marked `not-committed` ([`cloudlysis_runtime::outcome`]) | retryable |
//! | other `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `CANCELLED`, others | unknown (the command may have committed; a retry with the same key tells) |

use std::sync::Arc;
use std::time::Duration;

use cloudlysis_proto::aggregate::command_service_client::CommandServiceClient;
use cloudlysis_proto::aggregate::command_service_server::CommandService;
use cloudlysis_proto::aggregate::{EXECUTE_PATH, ExecuteRequest, ExecuteResponse};
use cloudlysis_runtime::outcome::ErrorKind;
use serde::Serialize;
use tonic::Code;

use super::effect::{EffectContext, EffectError};

/// Sends commands to an aggregate node on behalf of effects. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CommandClient {
    route: Route,
    keys: cloudlysis_runtime::credential::NodeKeys,
}

/// Where an entity's commands go by placement: the channel to the aggregate node that owns
/// `(tenant, aggregate type, aggregate id)`, or why there is none yet (no placement, no live
/// node serving the type) — nothing was sent, so the effect is retried.
pub type Placement = Arc<
    dyn Fn(&str, &str, &str) -> Result<cloudlysis_runtime::local::NodeChannel, String>
        + Send
        + Sync,
>;

/// Which aggregate node a command goes to.
#[derive(Clone)]
enum Route {
    /// Always this one.
    Fixed(cloudlysis_runtime::local::NodeChannel),
    /// The entity's node by the placement.
    Placed(Placement),
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Fixed(c) => f.debug_tuple("Fixed").field(c).finish(),
            Route::Placed(_) => f.write_str("Placed"),
        }
    }
}

impl CommandClient {
    /// A client of the `CommandService` at `addr` (`http://host:port`, or `https://host:port`
    /// over TLS with `tls`), connecting lazily and reconnecting by itself; calls carry
    /// credentials signed with `keys`.
    pub fn lazy(
        addr: &str,
        keys: cloudlysis_runtime::credential::NodeKeys,
        tls: &cloudlysis_runtime::tls::ClientTls,
    ) -> Result<Self, String> {
        let endpoint = tls
            .endpoint(addr)
            .map_err(|e| format!("aggregate address: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        Ok(Self {
            route: Route::Fixed(endpoint.connect_lazy().into()),
            keys,
        })
    }

    /// A client of the `CommandService` of an aggregate node in this process (see
    /// [`cloudlysis_runtime::local`]): no network, the same credential check and statuses;
    /// calls carry credentials signed with `keys`.
    pub fn local(
        node: cloudlysis_runtime::local::LocalNode,
        keys: cloudlysis_runtime::credential::NodeKeys,
    ) -> Self {
        Self {
            route: Route::Fixed(cloudlysis_runtime::local::NodeChannel::Local(node)),
            keys,
        }
    }

    /// A client that sends each entity's commands to the aggregate node `place` names for it —
    /// the one a Gateway placing by the node registry picks, in this process or not. When it
    /// names none (its view of the registry not loaded yet, no live node serving the type), the
    /// command is not sent and the effect is retried, as the Gateway answers a client 503. What
    /// `cloudlysis all` under registry placement uses, so that every entity lives on one node.
    pub fn placed(place: Placement, keys: cloudlysis_runtime::credential::NodeKeys) -> Self {
        Self {
            route: Route::Placed(place),
            keys,
        }
    }

    /// Executes `command_type` with `payload` on `aggregate_type/aggregate_id` for the effect's
    /// tenant, with the effect's `command_id` as idempotency key, within the effect's deadline.
    pub async fn execute(
        &self,
        ctx: &EffectContext,
        aggregate_type: &str,
        aggregate_id: &str,
        command_type: &str,
        payload: &impl Serialize,
    ) -> Result<ExecuteResponse, EffectError> {
        let payload_json = serde_json::to_vec(payload)
            .map_err(|e| EffectError::permanent(format!("command payload does not encode: {e}")))?;
        let mut request = tonic::Request::new(ExecuteRequest {
            aggregate_type: aggregate_type.to_string(),
            aggregate_id: aggregate_id.to_string(),
            command_type: command_type.to_string(),
            payload_json,
            expected_version: None,
        });
        let mut rctx = ctx.request.clone();
        rctx.idempotency_key = Some(ctx.command_id.clone());
        rctx.inject(request.metadata_mut());
        self.keys
            .stamp(
                request.metadata_mut(),
                "runner",
                rctx.tenant.as_str(),
                &[format!("commands:{aggregate_type}")],
            )
            .map_err(|e| EffectError::permanent(format!("no node credential: {e}")))?;
        let remaining = ctx.remaining();
        if remaining.is_zero() {
            return Err(EffectError::retryable("no time left before the deadline"));
        }
        request.set_timeout(remaining);
        let channel = match &self.route {
            Route::Fixed(channel) => channel.clone(),
            Route::Placed(place) => place(rctx.tenant.as_str(), aggregate_type, aggregate_id)
                .map_err(|why| {
                    EffectError::retryable(format!(
                        "{aggregate_type}/{aggregate_id}: {why}; nothing was sent"
                    ))
                })?,
        };
        let call = channel.unary(
            EXECUTE_PATH,
            request,
            |node: Arc<dyn CommandService>, r| async move { node.execute(r).await },
            |channel, r| async move { CommandServiceClient::new(channel).execute(r).await },
        );
        match tokio::time::timeout(remaining, call).await {
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            Ok(Err(status)) => Err(classify(&status)),
            Err(_) => Err(EffectError::unknown(format!(
                "{aggregate_type}/{aggregate_id} did not answer within {remaining:?}"
            ))),
        }
    }
}

/// Classifies a `CommandService` status.
pub fn classify(status: &tonic::Status) -> EffectError {
    let msg = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::PermissionDenied
        | Code::OutOfRange => EffectError::permanent(msg),
        // Refused before any handler ran: nothing was done, and a fixed secret or clock heals it.
        Code::Aborted | Code::ResourceExhausted | Code::Unauthenticated => {
            EffectError::retryable(msg)
        }
        // The node knows nothing was committed (its deadline passed before a publish).
        _ if ErrorKind::of(status) == Some(ErrorKind::NotCommitted) => EffectError::retryable(msg),
        // No connection could be made, or the node refused the call at the HTTP/2 layer (it was
        // closing): the command was never processed.
        _ if cloudlysis_runtime::outcome::never_sent(status) => EffectError::retryable(msg),
        _ => EffectError::unknown(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::effect::EffectErrorKind;

    #[test]
    fn statuses_are_classified_by_whether_a_retry_is_safe_and_useful() {
        let kind = |c: Code| classify(&tonic::Status::new(c, "x")).kind;
        assert_eq!(kind(Code::FailedPrecondition), EffectErrorKind::Permanent);
        assert_eq!(kind(Code::InvalidArgument), EffectErrorKind::Permanent);
        assert_eq!(kind(Code::Aborted), EffectErrorKind::Retryable);
        assert_eq!(kind(Code::ResourceExhausted), EffectErrorKind::Retryable);
        assert_eq!(kind(Code::DeadlineExceeded), EffectErrorKind::Unknown);
        assert_eq!(kind(Code::Unavailable), EffectErrorKind::Unknown);
        let refused =
            tonic::Status::unavailable("tcp connect error: Connection refused (os error 111)");
        assert_eq!(classify(&refused).kind, EffectErrorKind::Retryable);
    }
}
