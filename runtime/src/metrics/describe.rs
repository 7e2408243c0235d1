//! The HELP text of every metric the runtime names ([`super::names`]), registered when the
//! recorder is installed.

use super::names;

/// Registers the descriptions.
pub(super) fn describe() {
    metrics::describe_gauge!(
        names::BUILD_INFO,
        "Cloudlysis build information (always 1)."
    );
    metrics::describe_counter!(
        names::NATS_CONNECTION_EVENTS,
        "NATS connection events (connected, disconnected, ...)."
    );
    metrics::describe_counter!(
        names::DEV_NATS_RESTARTS,
        "nats-server processes cloudlysis dev started again after its own died."
    );
    metrics::describe_counter!(
        names::READINESS_CHECK_FAILURES,
        "Readiness checks that failed or timed out."
    );
    metrics::describe_counter!(
        names::HTTP_REQUESTS,
        "HTTP requests served by the node's service endpoints."
    );
    metrics::describe_gauge!(
        names::ACTOR_MAILBOX_DEPTH,
        "Messages queued or being processed, summed over the live actors of a kind."
    );
    metrics::describe_gauge!(
        names::ACTOR_MAILBOX_CAPACITY,
        "Mailbox capacity (max_in_flight), summed over the live mailboxes of a kind."
    );
    metrics::describe_counter!(names::ACTOR_MESSAGES, "Messages handled, by outcome.");
    metrics::describe_counter!(
        names::ACTOR_MAILBOX_REJECTED,
        "Messages refused by a full mailbox (load shedding)."
    );
    metrics::describe_histogram!(
        names::ACTOR_MESSAGE_DURATION,
        metrics::Unit::Seconds,
        "Time a handler took per message."
    );
    metrics::describe_gauge!(names::ACTORS, "Live actors.");
    metrics::describe_counter!(
        names::ACTOR_RESTARTS,
        "Child actor restarts by supervisors."
    );
    metrics::describe_counter!(
        names::SUPERVISOR_ESCALATIONS,
        "Supervisors that exceeded their restart intensity and failed."
    );
    metrics::describe_counter!(
        names::COMMANDS,
        "Commands handled by aggregate nodes, by outcome."
    );
    metrics::describe_counter!(
        names::SNAPSHOTS,
        "Aggregate snapshots written, failed to write, loaded in rehydration, or ignored as unreadable."
    );
    metrics::describe_counter!(
        names::REHYDRATIONS,
        "Entity rehydrations by how the state was read: no history, a snapshot alone, the last commit alone, message by message, or through an ad-hoc consumer."
    );
    metrics::describe_counter!(
        names::IDEMPOTENCY_RECORDS,
        "Idempotency records written after a command's answer, stored or failed."
    );
    metrics::describe_gauge!(
        names::IDEMPOTENCY_RECORDS_PENDING,
        "Idempotency-record writes started and not yet finished."
    );
    metrics::describe_gauge!(names::ENTITIES, "Live entities per aggregate type.");
    metrics::describe_histogram!(
        names::COMMAND_DURATION,
        metrics::Unit::Seconds,
        "Command handling time in an aggregate node."
    );
    metrics::describe_counter!(
        names::GATEWAY_REQUESTS,
        "Gateway HTTP requests, by route and status."
    );
    metrics::describe_counter!(
        names::NODE_CALL_PANICS,
        "Node gRPC calls whose service panicked (a bug), answered INTERNAL."
    );
    metrics::describe_counter!(
        names::GATEWAY_HANDLER_PANICS,
        "Gateway request handlers that panicked (a bug), answered 500."
    );
    metrics::describe_gauge!(
        names::GATEWAY_IN_FLIGHT,
        "Gateway API requests being handled now."
    );
    metrics::describe_histogram!(
        names::GATEWAY_REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Gateway request handling time."
    );
    metrics::describe_counter!(
        names::GATEWAY_ADMISSION_REJECTIONS,
        "Gateway API requests refused at admission, by reason (full, tenant_share, tenant_limit)."
    );
    metrics::describe_gauge!(
        names::NODE_CALLS_IN_FLIGHT,
        "gRPC calls a node is serving now (health and reflection aside)."
    );
    metrics::describe_counter!(
        names::NODE_ADMISSION_REJECTIONS,
        "gRPC calls a node refused at its node.max_in_flight limit (UNAVAILABLE with a retry hint)."
    );
    metrics::describe_counter!(
        names::NODE_CALLS_ABANDONED,
        "gRPC calls a node stopped because the caller's deadline passed or the caller cancelled, by reason."
    );
    metrics::describe_counter!(
        names::GATEWAY_RETRIES,
        "The Gateway's retry decisions after a retryable failure, by profile and outcome (retried, exhausted, throttled, pushback, deadline)."
    );
    metrics::describe_gauge!(
        names::GATEWAY_CHANNELS,
        "Channels in the Gateway's channel pool (registry placement)."
    );
    metrics::describe_counter!(
        names::GATEWAY_CHANNEL_POOL,
        "Gateway channel-pool lookups and removals, by result (hit, miss, evicted, expired)."
    );
    metrics::describe_gauge!(
        names::GATEWAY_LIVE_NODES,
        "Live nodes in the Gateway's view of the node registry, by role."
    );
    metrics::describe_gauge!(
        names::GATEWAY_RETRY_TOKENS,
        "Tokens in the Gateway's retry throttle (retries only while more than half are left)."
    );
    metrics::describe_counter!(
        names::NODE_CREDENTIAL_CACHE,
        "Look-ups of the caches of node credentials this process verified or signed (each at most 8192), by cache (verified, signed) and outcome (hit, miss)."
    );
    metrics::describe_counter!(
        names::NODE_CALL_REJECTIONS,
        "gRPC calls a node refused for their node credential, by reason (missing, expired, invalid, tenant_mismatch, forbidden)."
    );
    metrics::describe_gauge!(
        names::GATEWAY_LOCAL_NODES,
        "The Gateway's static node addresses it calls in its own process, without the network, by role (0: every call goes over gRPC)."
    );
    metrics::describe_counter!(
        names::GATEWAY_NODE_UNREACHABLE,
        "Requests answered 503 because the node did not take the call, by role and reason (no_connection: refused, DNS, connect timeout, untrusted TLS certificate; going_away: the node was closing, HTTP/2 GOAWAY; refused_stream: HTTP/2 REFUSED_STREAM; connection_closed: the connection closed before the call was written)."
    );
    metrics::describe_counter!(
        names::GATEWAY_TOKEN_CACHE,
        "Look-ups of the Gateway's cache of verified HS256 tokens, by outcome (hit, miss)."
    );
    metrics::describe_counter!(
        names::GATEWAY_JWKS_FETCHES,
        "Fetches of the identity provider's JWK set (gateway.jwks_url), by result (ok, error)."
    );
    metrics::describe_counter!(
        names::GATEWAY_PROBES,
        "Gateway node-probe requests, by result (fanout, cached, rejected)."
    );
    metrics::describe_counter!(names::CONSUMER_MESSAGES, "Consumed messages, by outcome.");
    metrics::describe_counter!(names::CONSUMER_REDELIVERIES, "Redelivered messages.");
    metrics::describe_counter!(
        names::CONSUMER_PROGRESS,
        "In-progress acks sent for messages still queued or being handled."
    );
    metrics::describe_counter!(names::CONSUMER_POISON, "Messages quarantined as poison.");
    metrics::describe_counter!(
        names::CONSUMER_POISON_WRITE_FAILURES,
        "Poison-record writes that failed; on the server's last delivery the message is held and the write retried."
    );
    metrics::describe_gauge!(
        names::CONSUMER_IN_FLIGHT,
        "Messages fetched and not yet acked, nak'ed or termed."
    );
    metrics::describe_gauge!(
        names::VIEW_CHECKPOINT,
        "Contiguous applied stream sequence of the view generation answering queries."
    );
    metrics::describe_gauge!(
        names::VIEW_GENERATION,
        "Generation of the view answering queries (0 until the first rebuild)."
    );
    metrics::describe_gauge!(names::VIEW_REBUILDING, "1 while the view is being rebuilt.");
    metrics::describe_gauge!(
        names::STREAM_LAST_SEQUENCE,
        "Last sequence of the stream as a projection node last read it (view lag = this - checkpoint)."
    );
    metrics::describe_gauge!(
        names::VIEW_REBUILD_CHECKPOINT,
        "Checkpoint of the generation a rebuild is building."
    );
    metrics::describe_counter!(
        names::VIEW_CACHE,
        "View document-cache lookups before a write, by outcome."
    );
    metrics::describe_counter!(
        names::HANDLER_RETRIES,
        "Deliveries handled again because the handler's store did not answer (held, not poisoned)."
    );
    metrics::describe_gauge!(names::HTTP_CONNECTIONS, "HTTP connections open now.");
    metrics::describe_counter!(
        names::HTTP_HEADER_TIMEOUTS,
        "HTTP connections closed because their request headers did not arrive in time (http.header_read_timeout_ms)."
    );
    metrics::describe_gauge!(
        names::HANDLER_OLDEST_HELD,
        "Seconds the oldest delivery held through an outage of the handler's store has waited (0 when none)."
    );
    metrics::describe_gauge!(
        names::VIEW_STORE_OLDEST_HELD,
        "Seconds the oldest view document held through an outage of the view's store has waited (0 when none)."
    );
    metrics::describe_counter!(
        names::VIEW_STORE_RETRIES,
        "View document writes tried again because the view's store did not answer (events held, not poisoned)."
    );
    metrics::describe_counter!(
        names::VIEW_REBUILDS,
        "Completed view rebuilds (switches to a new generation)."
    );
    metrics::describe_counter!(
        names::VIEW_GETS,
        "Get queries answered by this node, by view and outcome (found, not_found, error)."
    );
    metrics::describe_counter!(
        names::VIEW_LISTS,
        "List queries by outcome (busy: refused by the node's admission bound)."
    );
    metrics::describe_counter!(
        names::WORKFLOW_INSTANCES_STARTED,
        "Workflow instances started."
    );
    metrics::describe_counter!(
        names::WORKFLOW_INSTANCES_FINISHED,
        "Workflow instances that completed or failed."
    );
    metrics::describe_counter!(
        names::WORKFLOW_INPUTS,
        "Workflow inputs, by kind and outcome."
    );
    metrics::describe_gauge!(
        names::WORKFLOW_INSTANCES_LIVE,
        "Live workflow instance actors on this node."
    );
    metrics::describe_counter!(
        names::TIMERS_FIRED,
        "Durable timers that fired into their instance."
    );
    metrics::describe_histogram!(
        names::TIMER_LATENESS,
        metrics::Unit::Seconds,
        "How late durable timers fired."
    );
    metrics::describe_counter!(names::OUTBOX_PUBLISHED, "Outbox messages published.");
    metrics::describe_counter!(
        names::OUTBOX_DUPLICATES,
        "Outbox publishes the stream dropped as duplicates (republishes)."
    );
    metrics::describe_counter!(
        names::OUTBOX_FAILURES,
        "Outbox publishes that failed or timed out (left for the sweep)."
    );
    metrics::describe_counter!(
        names::OUTBOX_SWEPT,
        "Outbox entries published by the sweep."
    );
    metrics::describe_gauge!(
        names::RUNNER_DRAIN_STATE,
        "Drain state: 0 serving, 1 intake stopped, 2 in flight zero, 3 outbox flushed, 4 drained."
    );
    metrics::describe_gauge!(
        names::OUTBOX_DEPTH,
        "Outbox steps not yet published, as last counted."
    );
    metrics::describe_counter!(names::EFFECTS, "Effect commands settled, by outcome.");
    metrics::describe_counter!(names::EFFECT_ATTEMPTS, "Effect attempts, by outcome.");
    metrics::describe_histogram!(
        names::EFFECT_DURATION,
        metrics::Unit::Seconds,
        "Effect attempt durations."
    );
}
