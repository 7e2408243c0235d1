//! Prometheus metrics: the process-wide recorder and every metric name Cloudlysis emits.
//!
//! Names follow Prometheus conventions (`cloudlysis_` prefix, base units, `_total` counters);
//! labels are bounded (actor kind, stream, consumer, route, status) — never tenant, entity or
//! message ids.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets (seconds) of every `*_seconds` metric: 100 µs to 10 s.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Every metric name, in one place.
pub mod names {
    /// Gauge, always 1, labelled with `version` and `role`.
    pub const BUILD_INFO: &str = "cloudlysis_build_info";
    /// Counter of NATS connection events, labelled `event`.
    pub const NATS_CONNECTION_EVENTS: &str = "cloudlysis_nats_connection_events_total";
    /// Counter of nats-server restarts by `cloudlysis dev` (its own server died while it ran).
    pub const DEV_NATS_RESTARTS: &str = "cloudlysis_dev_nats_restarts_total";
    /// Counter of failed readiness checks, labelled `check`.
    pub const READINESS_CHECK_FAILURES: &str = "cloudlysis_readiness_check_failures_total";
    /// Counter of HTTP requests served by the service endpoints, labelled `route`, `status`.
    pub const HTTP_REQUESTS: &str = "cloudlysis_http_requests_total";

    /// Gauge of messages queued or being processed, summed over the live actors of a `kind`.
    pub const ACTOR_MAILBOX_DEPTH: &str = "cloudlysis_actor_mailbox_depth";
    /// Gauge of mailbox capacity (`max_in_flight`), summed over the live mailboxes of a `kind`.
    pub const ACTOR_MAILBOX_CAPACITY: &str = "cloudlysis_actor_mailbox_capacity";
    /// Counter of handled messages, labelled `kind` and `outcome` (`ok`, `error`, `panic`).
    pub const ACTOR_MESSAGES: &str = "cloudlysis_actor_messages_total";
    /// Counter of messages refused by a full mailbox (`try_send`), labelled `kind`.
    pub const ACTOR_MAILBOX_REJECTED: &str = "cloudlysis_actor_mailbox_rejected_total";
    /// Histogram of handler durations in seconds, labelled `kind`.
    pub const ACTOR_MESSAGE_DURATION: &str = "cloudlysis_actor_message_duration_seconds";
    /// Gauge of live actors, labelled `kind`.
    pub const ACTORS: &str = "cloudlysis_actors";
    /// Counter of child restarts, labelled `supervisor`, `child_kind`, `reason`
    /// (`panic`, `error`, `exit`).
    pub const ACTOR_RESTARTS: &str = "cloudlysis_actor_restarts_total";
    /// Counter of supervisors that exceeded their restart intensity, labelled `supervisor`.
    pub const SUPERVISOR_ESCALATIONS: &str = "cloudlysis_supervisor_escalations_total";

    /// Counter of commands handled by aggregate nodes, labelled `aggregate_type` and `outcome`
    /// (`ok`, `replayed`, `invalid`, `rejected`, `conflict`, `busy`, `unavailable`, `timeout`,
    /// `unknown_type`).
    pub const COMMANDS: &str = "cloudlysis_commands_total";
    /// Counter of aggregate snapshot operations, labelled `aggregate_type` and `outcome`
    /// (`written`, `write_failed`, `loaded`, `ignored`); only for types that take snapshots.
    pub const SNAPSHOTS: &str = "cloudlysis_snapshots_total";
    /// Counter of entity rehydrations, labelled `aggregate_type` and `path` (`empty`,
    /// `snapshot`, `last_commit`, `direct`, `consumer`): how the state was read back.
    pub const REHYDRATIONS: &str = "cloudlysis_rehydrations_total";
    /// Counter of idempotency-record writes finished in the background, labelled
    /// `aggregate_type` and `outcome` (`stored`, `failed`).
    pub const IDEMPOTENCY_RECORDS: &str = "cloudlysis_idempotency_records_total";
    /// Gauge of idempotency-record writes started and not finished, labelled `aggregate_type`.
    pub const IDEMPOTENCY_RECORDS_PENDING: &str = "cloudlysis_idempotency_records_pending";
    /// Gauge of live entities in an aggregate node, labelled `aggregate_type`.
    pub const ENTITIES: &str = "cloudlysis_entities";
    /// Histogram of command handling time in an aggregate node, labelled `aggregate_type`.
    pub const COMMAND_DURATION: &str = "cloudlysis_command_duration_seconds";
    /// Counter of Gateway HTTP requests, labelled `route` and `status`.
    pub const GATEWAY_REQUESTS: &str = "cloudlysis_gateway_requests_total";
    /// Counter of node calls whose service panicked (answered `INTERNAL`).
    pub const NODE_CALL_PANICS: &str = "cloudlysis_node_call_panics_total";
    /// Counter of Gateway handlers that panicked (answered 500).
    pub const GATEWAY_HANDLER_PANICS: &str = "cloudlysis_gateway_handler_panics_total";
    /// Gauge of Gateway API requests being handled.
    pub const GATEWAY_IN_FLIGHT: &str = "cloudlysis_gateway_in_flight";
    /// Histogram of Gateway request time, labelled `route`.
    pub const GATEWAY_REQUEST_DURATION: &str = "cloudlysis_gateway_request_duration_seconds";
    /// API requests the Gateway refused at admission, by `reason` (`full`, `tenant_share`,
    /// `tenant_limit`).
    pub const GATEWAY_ADMISSION_REJECTIONS: &str = "cloudlysis_gateway_admission_rejections_total";
    /// Node probe requests of the Gateway by `result` (`fanout`, `cached`, `rejected`).
    pub const GATEWAY_PROBES: &str = "cloudlysis_gateway_probes_total";
    /// Fetches of the identity provider's JWK set (`gateway.jwks_url`), by `result` (`ok`,
    /// `error`).
    pub const GATEWAY_JWKS_FETCHES: &str = "cloudlysis_gateway_jwks_fetches_total";
    /// Counter of look-ups of the Gateway's cache of verified HS256 tokens, labelled
    /// `outcome` (`hit`, `miss`).
    pub const GATEWAY_TOKEN_CACHE: &str = "cloudlysis_gateway_token_cache_total";
    /// gRPC calls a node refused for their node credential, by `reason` (`missing`,
    /// `expired`, `invalid`, `tenant_mismatch`, `forbidden`).
    pub const NODE_CALL_REJECTIONS: &str = "cloudlysis_node_call_rejections_total";
    /// Look-ups of the caches of node credentials a process verified or signed, by `cache`
    /// (`verified`, `signed`) and `outcome` (`hit`, `miss`).
    pub const NODE_CREDENTIAL_CACHE: &str = "cloudlysis_node_credential_cache_total";
    /// gRPC calls a node stopped because the caller's deadline passed or the caller cancelled,
    /// by `reason` (`deadline`, `cancelled`).
    pub const NODE_CALLS_ABANDONED: &str = "cloudlysis_node_calls_abandoned_total";
    /// gRPC calls a node is serving now (health and reflection aside).
    pub const NODE_CALLS_IN_FLIGHT: &str = "cloudlysis_node_calls_in_flight";
    /// gRPC calls a node refused at its `node.max_in_flight` limit.
    pub const NODE_ADMISSION_REJECTIONS: &str = "cloudlysis_node_admission_rejections_total";
    /// The Gateway's retry decisions, by `profile` and `outcome` (`retried`, `exhausted`,
    /// `throttled`, `pushback`, `deadline`).
    pub const GATEWAY_RETRIES: &str = "cloudlysis_gateway_retries_total";
    /// Tokens in the Gateway's retry throttle.
    pub const GATEWAY_RETRY_TOKENS: &str = "cloudlysis_gateway_retry_tokens";
    /// Channels in the Gateway's channel pool.
    pub const GATEWAY_CHANNELS: &str = "cloudlysis_gateway_channels";
    /// Channel-pool lookups and removals, by `result` (`hit`, `miss`, `evicted`, `expired`).
    pub const GATEWAY_CHANNEL_POOL: &str = "cloudlysis_gateway_channel_pool_total";
    /// Live nodes in the Gateway's registry view, by `role`.
    pub const GATEWAY_LIVE_NODES: &str = "cloudlysis_gateway_live_nodes";
    /// Requests the Gateway answered 503 because the node certainly did not take the call, by
    /// `role` and `reason`: `no_connection` (refused, DNS, connect timeout, untrusted TLS
    /// certificate), `going_away` (the node was closing: HTTP/2 GOAWAY), `refused_stream`,
    /// `connection_closed` (closed before the call was written).
    pub const GATEWAY_NODE_UNREACHABLE: &str = "cloudlysis_gateway_node_unreachable_total";
    /// Gauge of the Gateway's static node addresses (settings) it calls in its own process,
    /// without the network (`runtime::local`), by `role`.
    pub const GATEWAY_LOCAL_NODES: &str = "cloudlysis_gateway_local_nodes";

    /// Counter of consumed messages, labelled `stream`, `consumer`, `outcome`
    /// (`ack`, `nak`, `term`, `skip`, `defer`).
    pub const CONSUMER_MESSAGES: &str = "cloudlysis_consumer_messages_total";
    /// Counter of in-progress acks sent for messages still queued or being handled (they keep
    /// the server from redelivering them), labelled `stream`, `consumer`.
    pub const CONSUMER_PROGRESS: &str = "cloudlysis_consumer_progress_acks_total";
    /// Counter of redelivered messages (delivery count above 1), labelled `stream`, `consumer`.
    pub const CONSUMER_REDELIVERIES: &str = "cloudlysis_consumer_redeliveries_total";
    /// Counter of messages quarantined as poison, labelled `stream`, `consumer`.
    pub const CONSUMER_POISON: &str = "cloudlysis_consumer_poison_total";
    /// Counter of poison-record writes that failed (the poison bucket did not answer); on the
    /// server's last delivery the message is held and the write tried again; labelled
    /// `stream`, `consumer`.
    pub const CONSUMER_POISON_WRITE_FAILURES: &str =
        "cloudlysis_consumer_poison_write_failures_total";
    /// Gauge of messages fetched and not yet acked, nak'ed or termed, labelled `stream`,
    /// `consumer`.
    pub const CONSUMER_IN_FLIGHT: &str = "cloudlysis_consumer_in_flight";

    /// Gauge of a view's checkpoint (contiguous applied stream sequence) in the generation that
    /// answers queries, labelled `view`.
    pub const VIEW_CHECKPOINT: &str = "cloudlysis_view_checkpoint";
    /// Last sequence of a stream, as a projection node last read it (`stream`): a view's lag
    /// is this minus its checkpoint.
    pub const STREAM_LAST_SEQUENCE: &str = "cloudlysis_stream_last_sequence";
    /// Gauge of the checkpoint of the generation a rebuild is building, labelled `view`
    /// (progress: compare with `cloudlysis_view_checkpoint`).
    pub const VIEW_REBUILD_CHECKPOINT: &str = "cloudlysis_view_rebuild_checkpoint";
    /// Gauge of the generation of a view that answers queries, labelled `view`.
    pub const VIEW_GENERATION: &str = "cloudlysis_view_generation";
    /// Gauge: 1 while a rebuild of the view is in progress, else 0; labelled `view`.
    pub const VIEW_REBUILDING: &str = "cloudlysis_view_rebuilding";
    /// Counter of completed rebuilds (switches to a new generation), counted by the node that
    /// made the switch; labelled `view`.
    pub const VIEW_REBUILDS: &str = "cloudlysis_view_rebuilds_total";
    /// Counter of document-cache lookups before a view write, labelled `view`, `outcome` (`hit`:
    /// the KV read was skipped; `miss`).
    pub const VIEW_CACHE: &str = "cloudlysis_view_document_cache_total";
    /// Counter of a view's document reads or writes tried again because its store did not
    /// answer (the deliveries are held meanwhile, not failed towards poison); labelled `view`.
    pub const VIEW_STORE_RETRIES: &str = "cloudlysis_view_store_retries_total";
    /// Counter of deliveries handled again because the handler's store did not answer
    /// (`HandlerError::unavailable`; held meanwhile, not failed towards poison); labelled
    /// `handler` (its kind: `workflow_inputs`, `effect_worker`, `timer_worker`, …).
    pub const HANDLER_RETRIES: &str = "cloudlysis_handler_retries_total";
    /// Gauge: HTTP connections open now (every process's HTTP server).
    pub const HTTP_CONNECTIONS: &str = "cloudlysis_http_connections";
    /// Counter of HTTP connections closed because their request headers did not arrive within
    /// `http.header_read_timeout_ms`.
    pub const HTTP_HEADER_TIMEOUTS: &str = "cloudlysis_http_header_timeouts_total";
    /// Gauge: seconds the oldest delivery a handler holds through an outage of its store has
    /// been held (0 when none), set at every try; labelled `handler`.
    pub const HANDLER_OLDEST_HELD: &str = "cloudlysis_handler_oldest_held_seconds";
    /// Gauge: seconds the oldest document a view holds through an outage of its store has been
    /// held (0 when none), set at every try; labelled `view`.
    pub const VIEW_STORE_OLDEST_HELD: &str = "cloudlysis_view_store_oldest_held_seconds";
    /// `List` queries by view and outcome (`ok`, `busy`: refused by the node's admission,
    /// `timeout`, `error`).
    pub const VIEW_LISTS: &str = "cloudlysis_view_lists_total";
    /// `Get` queries by view and outcome (`found`, `not_found`, `error`).
    pub const VIEW_GETS: &str = "cloudlysis_view_gets_total";

    /// Counter of started workflow instances, labelled `workflow`.
    pub const WORKFLOW_INSTANCES_STARTED: &str = "cloudlysis_workflow_instances_started_total";
    /// Counter of instances that ended, labelled `workflow`, `status` (`completed`, `failed`).
    pub const WORKFLOW_INSTANCES_FINISHED: &str = "cloudlysis_workflow_instances_finished_total";
    /// Counter of workflow inputs, labelled `workflow`, `input` (`start`, `result`, `timer`,
    /// `event`) and `outcome` (`applied`, `duplicate`, `stale`, `ignored`, `failed`).
    pub const WORKFLOW_INPUTS: &str = "cloudlysis_workflow_inputs_total";
    /// Gauge of live instance actors on a runner node, labelled `workflow`.
    pub const WORKFLOW_INSTANCES_LIVE: &str = "cloudlysis_workflow_instances_live";
    /// Counter of timers that fired into their instance, labelled `workflow`.
    pub const TIMERS_FIRED: &str = "cloudlysis_timers_fired_total";
    /// Histogram of how late timers fired, in seconds.
    pub const TIMER_LATENESS: &str = "cloudlysis_timer_lateness_seconds";
    /// Counter of outbox messages published (acknowledged by the stream), labelled `kind`
    /// (`command`, `event`).
    pub const OUTBOX_PUBLISHED: &str = "cloudlysis_outbox_published_total";
    /// Counter of outbox publishes the stream recognised as duplicates (a republish after a
    /// crash or a sweep).
    pub const OUTBOX_DUPLICATES: &str = "cloudlysis_outbox_duplicates_total";
    /// Counter of outbox publishes that failed or timed out (left for the sweep).
    pub const OUTBOX_FAILURES: &str = "cloudlysis_outbox_failures_total";
    /// Counter of outbox entries the sweep published (left behind by a crash or a failure).
    pub const OUTBOX_SWEPT: &str = "cloudlysis_outbox_swept_total";
    /// Gauge of a runner node's drain state: 0 serving, 1 intake stopped, 2 in flight zero,
    /// 3 outbox flushed, 4 drained.
    pub const RUNNER_DRAIN_STATE: &str = "cloudlysis_runner_drain_state";
    /// Gauge of outbox steps not yet published (entries of the outbox index, all nodes), as
    /// last counted by this node (at every status request and drain).
    pub const OUTBOX_DEPTH: &str = "cloudlysis_outbox_depth";
    /// Counter of effect commands settled by effect workers, labelled `effect_type` and
    /// `outcome` (`ok`, `failed`, `replayed`: the recorded result re-published; `deferred`:
    /// another worker holds it; `cancelled`: an operator cancelled its instance).
    pub const EFFECTS: &str = "cloudlysis_effects_total";
    /// Counter of effect attempts, labelled `effect_type` and `outcome` (`ok`, `permanent`,
    /// `retryable`, `unknown`, `timeout`).
    pub const EFFECT_ATTEMPTS: &str = "cloudlysis_effect_attempts_total";
    /// Histogram of effect attempt durations in seconds, labelled `effect_type`.
    pub const EFFECT_DURATION: &str = "cloudlysis_effect_duration_seconds";

    /// Every metric name above (docs/operations.md lists each; a test keeps it so).
    pub const ALL: &[&str] = &[
        BUILD_INFO,
        NATS_CONNECTION_EVENTS,
        DEV_NATS_RESTARTS,
        READINESS_CHECK_FAILURES,
        HTTP_REQUESTS,
        ACTOR_MAILBOX_DEPTH,
        ACTOR_MAILBOX_CAPACITY,
        ACTOR_MESSAGES,
        ACTOR_MAILBOX_REJECTED,
        ACTOR_MESSAGE_DURATION,
        ACTORS,
        ACTOR_RESTARTS,
        SUPERVISOR_ESCALATIONS,
        COMMANDS,
        SNAPSHOTS,
        REHYDRATIONS,
        IDEMPOTENCY_RECORDS,
        IDEMPOTENCY_RECORDS_PENDING,
        ENTITIES,
        COMMAND_DURATION,
        GATEWAY_REQUESTS,
        GATEWAY_HANDLER_PANICS,
        NODE_CALL_PANICS,
        GATEWAY_IN_FLIGHT,
        GATEWAY_REQUEST_DURATION,
        GATEWAY_PROBES,
        GATEWAY_JWKS_FETCHES,
        GATEWAY_TOKEN_CACHE,
        GATEWAY_ADMISSION_REJECTIONS,
        NODE_CALL_REJECTIONS,
        NODE_CREDENTIAL_CACHE,
        NODE_CALLS_ABANDONED,
        NODE_CALLS_IN_FLIGHT,
        NODE_ADMISSION_REJECTIONS,
        GATEWAY_RETRIES,
        GATEWAY_RETRY_TOKENS,
        GATEWAY_CHANNELS,
        GATEWAY_CHANNEL_POOL,
        GATEWAY_LIVE_NODES,
        GATEWAY_NODE_UNREACHABLE,
        GATEWAY_LOCAL_NODES,
        CONSUMER_MESSAGES,
        CONSUMER_PROGRESS,
        CONSUMER_REDELIVERIES,
        CONSUMER_POISON,
        CONSUMER_POISON_WRITE_FAILURES,
        CONSUMER_IN_FLIGHT,
        VIEW_CHECKPOINT,
        STREAM_LAST_SEQUENCE,
        VIEW_REBUILD_CHECKPOINT,
        VIEW_GENERATION,
        VIEW_REBUILDING,
        VIEW_REBUILDS,
        VIEW_CACHE,
        VIEW_STORE_RETRIES,
        HANDLER_RETRIES,
        HANDLER_OLDEST_HELD,
        VIEW_STORE_OLDEST_HELD,
        HTTP_CONNECTIONS,
        HTTP_HEADER_TIMEOUTS,
        VIEW_LISTS,
        VIEW_GETS,
        WORKFLOW_INSTANCES_STARTED,
        WORKFLOW_INSTANCES_FINISHED,
        WORKFLOW_INPUTS,
        WORKFLOW_INSTANCES_LIVE,
        TIMERS_FIRED,
        TIMER_LATENESS,
        OUTBOX_PUBLISHED,
        OUTBOX_DUPLICATES,
        OUTBOX_FAILURES,
        OUTBOX_SWEPT,
        RUNNER_DRAIN_STATE,
        OUTBOX_DEPTH,
        EFFECTS,
        EFFECT_ATTEMPTS,
        EFFECT_DURATION,
    ];
}

mod describe;

/// The metrics recorder could not be installed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("could not install the Prometheus recorder: {0}")]
pub struct MetricsError(String);

static HANDLE: OnceLock<Result<PrometheusHandle, MetricsError>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle; later (and
/// concurrent) calls return the same handle. Registers the descriptions of the runtime's metrics.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
                .map_err(|e| MetricsError(e.to_string()))?
                .install_recorder()
                .map_err(|e| MetricsError(e.to_string()))?;
            describe::describe();
            Ok(handle)
        })
        .clone()
}

/// Sets `cloudlysis_build_info{version, role} 1`.
pub fn record_build_info(role: &'static str) {
    metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "role" => role)
        .set(1.0);
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_is_documented_in_the_operations_guide() {
        let guide = include_str!("../../docs/operations.md");
        for name in super::names::ALL {
            assert!(
                guide.contains(&format!("`{name}`")),
                "{name} is not in docs/operations.md"
            );
        }
    }
}
