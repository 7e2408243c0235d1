// The one typed client of the Gateway's operator routes (docs/control-api.md). Screens never call
// `fetch` themselves: every call goes through here, which adds the bearer token and turns every
// error — problem+json or not, or no answer at all — into an `ApiProblem`.

import type {
  AuditPage,
  DrainResult,
  Instance,
  InstancePage,
  InstanceStatusFilter,
  InstanceVerb,
  NodesResponse,
  PoisonPage,
  PoisonRecord,
  PurgeResult,
  RebuildCancelled,
  RebuildStarted,
  RedriveResult,
  ReloadResult,
  RunnerNodesResponse,
  RunnerStatus,
  SupervisionResponse,
  ViewsResponse,
  WhoAmI,
} from './types';

/** An RFC 9457 problem (or a failure dressed as one): what every API call throws. */
export class ApiProblem extends Error {
  /** HTTP status; 0 when the Gateway did not answer at all. */
  readonly status: number;
  readonly title: string;
  readonly detail: string;
  /** The problem type URI, e.g. `urn:cloudlysis:problem:forbidden` (`about:blank` when none). */
  readonly type: string;
  /** Seconds after which a retry may succeed, from `Retry-After`. */
  readonly retryAfter: number | null;
  readonly correlationId: string | null;

  constructor(init: {
    status: number;
    title: string;
    detail?: string;
    type?: string;
    retryAfter?: number | null;
    correlationId?: string | null;
  }) {
    super(init.detail ? `${init.title}: ${init.detail}` : init.title);
    this.name = 'ApiProblem';
    this.status = init.status;
    this.title = init.title;
    this.detail = init.detail ?? '';
    this.type = init.type ?? 'about:blank';
    this.retryAfter = init.retryAfter ?? null;
    this.correlationId = init.correlationId ?? null;
  }
}

/** Any thrown value as an `ApiProblem` (for code that catches `unknown`). */
export function toProblem(err: unknown): ApiProblem {
  if (err instanceof ApiProblem) return err;
  if (err instanceof Error) return new ApiProblem({ status: 0, title: 'Unexpected error', detail: err.message });
  return new ApiProblem({ status: 0, title: 'Unexpected error', detail: String(err) });
}

/** `Retry-After` as seconds: delta-seconds or an HTTP date. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | null {
  if (value === null || value.trim() === '') return null;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const at = Date.parse(trimmed);
  if (Number.isNaN(at)) return null;
  return Math.max(0, Math.ceil((at - now) / 1000));
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const STATUS_TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  409: 'Conflict',
  422: 'Unprocessable Content',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/** Reads an error response into an `ApiProblem`, whatever its body. */
export async function problemFromResponse(res: Response): Promise<ApiProblem> {
  const retryAfter = parseRetryAfter(res.headers.get('retry-after'));
  const headerCorrelation = res.headers.get('x-correlation-id');
  const fallbackTitle = STATUS_TITLES[res.status] ?? (res.statusText || `HTTP ${res.status}`);
  let text = '';
  try {
    text = await res.text();
  } catch {
    // An unreadable body still makes a problem from the status.
  }
  let body: unknown = undefined;
  if (text !== '') {
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
  }
  if (isRecord(body)) {
    const str = (k: string): string | undefined => (typeof body[k] === 'string' ? body[k] : undefined);
    return new ApiProblem({
      status: typeof body.status === 'number' ? body.status : res.status,
      title: str('title') ?? fallbackTitle,
      detail: str('detail') ?? '',
      type: str('type') ?? 'about:blank',
      retryAfter,
      correlationId: str('correlation_id') ?? headerCorrelation,
    });
  }
  const snippet = text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 300);
  return new ApiProblem({
    status: res.status,
    title: fallbackTitle,
    detail: snippet || `The Gateway answered ${res.status} without a problem description.`,
    retryAfter,
    correlationId: headerCorrelation,
  });
}

export interface ApiClientOptions {
  /** Origin (and path prefix) of the Gateway; '' for the page's own origin. */
  baseUrl?: string;
  /** The bearer token to send, read at each call. */
  getToken: () => string | null;
  /** Called with the problem of every 401 (the token is bad or expired), before it is thrown. */
  onUnauthorized?: (problem: ApiProblem) => void;
  /** For tests; defaults to the global `fetch` at call time. */
  fetch?: typeof fetch;
}

export interface PageQuery {
  limit?: number;
  cursor?: string | null;
}

type Query = Record<string, string | number | boolean | null | undefined>;

function queryString(query: Query | undefined): string {
  if (!query) return '';
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined || v === null || v === '') continue;
    params.set(k, String(v));
  }
  const s = params.toString();
  return s ? `?${s}` : '';
}

const seg = encodeURIComponent;

export type ApiClient = ReturnType<typeof createApiClient>;

export function createApiClient(options: ApiClientOptions) {
  const base = (options.baseUrl ?? '').replace(/\/+$/, '');

  async function request<T>(
    method: 'GET' | 'POST' | 'DELETE',
    path: string,
    opts: { query?: Query; body?: unknown; signal?: AbortSignal } = {},
  ): Promise<T> {
    const headers: Record<string, string> = { Accept: 'application/json, application/problem+json' };
    const token = options.getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    let body: string | undefined;
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    let res: Response;
    try {
      res = await doFetch(`${base}${path}${queryString(opts.query)}`, {
        method,
        headers,
        body,
        signal: opts.signal,
        cache: 'no-store',
      });
    } catch (err) {
      if (err instanceof DOMException && err.name === 'AbortError') throw err;
      throw new ApiProblem({
        status: 0,
        title: 'The Gateway did not answer',
        detail: err instanceof Error ? err.message : String(err),
      });
    }
    if (!res.ok) {
      const problem = await problemFromResponse(res);
      if (res.status === 401) options.onUnauthorized?.(problem);
      throw problem;
    }
    if (res.status === 204) return undefined as T;
    const text = await res.text();
    if (text === '') return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ApiProblem({
        status: res.status,
        title: 'Unreadable answer',
        detail: `The Gateway answered ${method} ${path} with something that is not JSON.`,
      });
    }
  }

  const get = <T>(path: string, query?: Query, signal?: AbortSignal) => request<T>('GET', path, { query, signal });

  return {
    // Session
    whoami: (signal?: AbortSignal) => get<WhoAmI>('/admin/whoami', undefined, signal),

    // Nodes and supervision
    nodes: (signal?: AbortSignal) => get<NodesResponse>('/admin/nodes', undefined, signal),
    supervision: (signal?: AbortSignal) => get<SupervisionResponse>('/admin/supervision', undefined, signal),

    // Views
    views: (signal?: AbortSignal) => get<ViewsResponse>('/admin/views', undefined, signal),
    rebuildView: (view: string) => request<RebuildStarted>('POST', `/admin/views/${seg(view)}/rebuild`),
    cancelRebuild: (view: string) => request<RebuildCancelled>('POST', `/admin/views/${seg(view)}/rebuild/cancel`),

    // Poison
    poisonList: (q: PageQuery & { source?: string } = {}, signal?: AbortSignal) =>
      get<PoisonPage>('/admin/poison', { source: q.source, limit: q.limit, cursor: q.cursor }, signal),
    poison: (id: string, signal?: AbortSignal) => get<PoisonRecord>(`/admin/poison/${seg(id)}`, undefined, signal),
    redrivePoison: (id: string) => request<RedriveResult>('POST', `/admin/poison/${seg(id)}/redrive`),
    purgePoison: (id: string) => request<PurgeResult>('DELETE', `/admin/poison/${seg(id)}`),

    // Audit
    audit: (q: PageQuery = {}, signal?: AbortSignal) =>
      get<AuditPage>('/admin/audit', { limit: q.limit, cursor: q.cursor }, signal),

    // Runners
    runnerNodes: (signal?: AbortSignal) => get<RunnerNodesResponse>('/admin/runner/nodes', undefined, signal),
    runnerNode: (node: string, signal?: AbortSignal) =>
      get<RunnerStatus>(`/admin/runner/nodes/${seg(node)}`, undefined, signal),
    drainRunner: (node: string) =>
      request<DrainResult>('POST', `/admin/runner/nodes/${seg(node)}/drain`, { query: { wait: false } }),
    undrainRunner: (node: string) => request<DrainResult>('POST', `/admin/runner/nodes/${seg(node)}/undrain`),
    reloadRunner: (node: string) => request<ReloadResult>('POST', `/admin/runner/nodes/${seg(node)}/reload`),

    // Workflows
    workflowInstances: (
      name: string,
      q: PageQuery & { status?: InstanceStatusFilter | '' } = {},
      signal?: AbortSignal,
    ) =>
      get<InstancePage>(`/v1/workflows/${seg(name)}`, { status: q.status, limit: q.limit, cursor: q.cursor }, signal),
    workflowInstance: (name: string, id: string, signal?: AbortSignal) =>
      get<Instance>(`/v1/workflows/${seg(name)}/${seg(id)}`, undefined, signal),
    operateInstance: (name: string, id: string, verb: InstanceVerb, reason?: string) =>
      request<Instance>('POST', `/v1/workflows/${seg(name)}/${seg(id)}/${verb}`, {
        body: verb === 'cancel' ? { reason: reason ?? '' } : undefined,
      }),
  };
}
