// Response and request types of the Gateway's operator routes, as docs/control-api.md gives them.
// Times are RFC 3339 UTC strings, or Unix milliseconds where the field name ends in `_ms`.

/** `GET /admin/whoami`. */
export interface WhoAmI {
  subject: string;
  tenant: string;
  rights: string[];
  expires_at_ms: number;
}

// ---------------------------------------------------------------- nodes and supervision

export type NodeRole = 'aggregate' | 'projection' | 'runner';
export type NodeHealth = 'serving' | 'not_serving' | 'unreachable';
export type DrainState = 'serving' | 'intake_stopped' | 'in_flight_zero' | 'outbox_flushed' | 'drained';

/** One entry of `GET /admin/nodes`; with `health: "unreachable"` most fields may be null. */
export interface NodeInfo {
  role: NodeRole;
  node_id: string | null;
  address: string;
  health: NodeHealth;
  version: string | null;
  uptime_seconds: number | null;
  /** Set for runners: a `DrainState`. */
  drain_state: string | null;
  behaviours: string[] | null;
  /** What the node holds because a store does not answer (empty when nothing; absent from older nodes). */
  held?: HeldInfo[];
  error: string | null;
}

/** Messages one view or handler holds through a store outage (kept and tried again, not failed). */
export interface HeldInfo {
  kind: 'view' | 'handler';
  /** The view's name or the handler's kind (e.g. `balances`, `effect_worker`). */
  name: string;
  messages: number;
  /** How long the oldest of them has been held. */
  oldest_seconds: number;
}

export interface NodesResponse {
  nodes: NodeInfo[];
}

export type ActorStatus = 'running' | 'restarting' | 'stopped' | 'failed';

export interface Mailbox {
  depth: number;
  capacity: number;
}

export interface ChildSnapshot {
  name: string;
  /** e.g. `jetstream_consumer`, `supervisor`. */
  kind: string;
  /** An `ActorStatus`. */
  status: string;
  restarts: number;
  last_failure?: string | null;
  last_failure_at?: string | null;
  /** Absent for actors without a bounded mailbox. */
  mailbox?: Mailbox | null;
}

export interface SupervisorSnapshot {
  name: string;
  strategy: string;
  /** An `ActorStatus`. */
  status: string;
  restarts: number;
  children: ChildSnapshot[];
  /** One entry per child of kind `supervisor` (same `name`). */
  supervisors?: SupervisorSnapshot[];
}

export interface NodeSupervision {
  role: NodeRole;
  node_id: string | null;
  address: string;
  tree: SupervisorSnapshot | null;
  error: string | null;
}

export interface SupervisionResponse {
  nodes: NodeSupervision[];
}

// ---------------------------------------------------------------- views

export interface ViewRebuilding {
  generation: number;
  checkpoint: number;
}

export interface ViewStatus {
  view: string;
  generation: number;
  checkpoint: number;
  stream_last_sequence: number;
  /** Null when not known (the node could not read the stream). */
  lag: number | null;
  rebuilding: ViewRebuilding | null;
}

export interface ViewsResponse {
  views: ViewStatus[];
  stream_last_sequence: number;
}

/** `POST /admin/views/{view}/rebuild`. */
export interface RebuildStarted {
  view: string;
  generation: number;
  active_generation: number;
}

/** `POST /admin/views/{view}/rebuild/cancel`. */
export interface RebuildCancelled {
  view: string;
  cancelled_generation: number;
  active_generation: number;
}

// ---------------------------------------------------------------- poison

export type PoisonSourceKind = 'view' | 'effect' | 'consumer';

export interface PoisonSummary {
  id: string;
  /** `kind` is a `PoisonSourceKind`. */
  source: { kind: string; name: string };
  consumer: string;
  stream: string;
  sequence: number;
  subject: string;
  error: string;
  attempts: number;
  time: string;
}

export interface PoisonPage {
  records: PoisonSummary[];
  next_cursor: string | null;
}

export interface PoisonMessage {
  /** False once the stream no longer holds the message. */
  available: boolean;
  payload: unknown;
  /** Set when the payload is not JSON. */
  payload_text?: string | null;
}

export interface PoisonRecord extends PoisonSummary {
  headers: Record<string, string[]>;
  message: PoisonMessage;
}

export interface RedriveResult {
  id: string;
  outcome: 'applied' | 'failed' | 'already_gone';
  detail: string | null;
}

export interface PurgeResult {
  id: string;
  outcome: 'purged' | 'already_gone';
}

// ---------------------------------------------------------------- audit

export type AuditAction =
  | 'poison.redrive'
  | 'poison.purge'
  | 'view.rebuild'
  | 'view.rebuild_cancel'
  | 'runner.drain'
  | 'runner.undrain'
  | 'runner.reload'
  | 'workflow.pause'
  | 'workflow.resume'
  | 'workflow.cancel'
  | 'workflow.retry_now';

export interface AuditEntry {
  time: string;
  actor: string;
  tenant: string;
  /** An `AuditAction` (others may come). */
  action: string;
  target: string;
  outcome: string;
  detail: string | null;
}

export interface AuditPage {
  entries: AuditEntry[];
  next_cursor: string | null;
}

// ---------------------------------------------------------------- runners

export interface RunnerEffect {
  effect_type: string;
  in_flight: number;
  concurrency: number;
  max_attempts: number;
}

export interface RunnerConsumer {
  stream: string;
  durable: string;
  pending: number;
  ack_pending: number;
  redelivered: number;
  in_flight: number;
  fetching: boolean;
}

export interface RunnerStatus {
  node_id: string;
  address: string;
  version: string;
  uptime_seconds: number;
  draining: boolean;
  /** A `DrainState`. */
  drain_state: string;
  in_flight: number;
  outbox_depth: number;
  enabled_workflows: string[];
  effect_types: string[];
  effects: RunnerEffect[];
  consumers: RunnerConsumer[];
}

/** A runner the Gateway routes to but could not ask. */
export interface RunnerUnreachable {
  address: string;
  error: string;
}

export type RunnerEntry = RunnerStatus | RunnerUnreachable;

export interface RunnerNodesResponse {
  nodes: RunnerEntry[];
}

export function isRunnerStatus(entry: RunnerEntry): entry is RunnerStatus {
  return 'node_id' in entry && !('error' in entry);
}

/** `POST /admin/runner/nodes/{node}/drain` and `/undrain`. */
export interface DrainResult {
  node_id: string;
  state: string;
  drained: boolean;
  in_flight: number;
  pending_outbox: number;
  detail: string;
}

/** `POST /admin/runner/nodes/{node}/reload`. */
export interface ReloadResult {
  node_id: string;
  changes?: string[];
  enabled_workflows?: string[];
  effects?: { effect_type: string; concurrency: number; max_attempts?: number }[];
  [key: string]: unknown;
}

export type RunnerVerb = 'drain' | 'undrain' | 'reload';

// ---------------------------------------------------------------- workflows

export type InstanceStatusFilter = 'running' | 'completed' | 'failed' | 'paused';

export interface PendingCommand {
  command_id: string;
  effect_type: string;
  label: string;
  issued_at_ms: number;
  attempts: number;
  ledger_status: string;
  last_error: string | null;
}

export interface ArmedTimer {
  name: string;
  fire_at_ms: number;
}

export interface AppliedEvent {
  stream_sequence: number;
  index: number;
}

export interface Instance {
  workflow: string;
  instance: string;
  /** `running`, `completed` or `failed`. */
  status: string;
  state: unknown;
  step: number;
  paused: boolean;
  cancel_requested: boolean;
  pending: PendingCommand[];
  timers: ArmedTimer[];
  applied_events: AppliedEvent[];
  failure: string | null;
  created_at_ms: number;
  updated_at_ms: number;
}

export interface InstancePage {
  instances: Instance[];
  /** Empty string: no more. */
  next_cursor: string;
}

export type InstanceVerb = 'pause' | 'resume' | 'cancel' | 'retry-now';
