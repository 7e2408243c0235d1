// A stubbed `fetch` for component tests: a table of routes ("GET /admin/nodes") answering JSON,
// problem+json or whatever a handler returns, and a log of every call.

import { vi } from 'vitest';

export interface Call {
  method: string;
  path: string;
  url: URL;
  headers: Headers;
  body: unknown;
}

type Answer = Response | object | null;
type HandlerFn = (call: Call) => Answer | Promise<Answer>;
export type Handler = Answer | HandlerFn;

function isHandlerFn(h: Handler): h is HandlerFn {
  return typeof h === 'function';
}

export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
}

export function problem(
  status: number,
  title: string,
  detail: string,
  headers: Record<string, string> = {},
  type = 'urn:cloudlysis:problem:test',
): Response {
  return new Response(JSON.stringify({ type, title, status, detail }), {
    status,
    headers: { 'content-type': 'application/problem+json', ...headers },
  });
}

export const WHO = {
  subject: 'dev',
  tenant: 'demo',
  rights: ['admin:read', 'admin:operate', 'runner:admin', 'workflows:*', 'workflows:*:operate'],
  expires_at_ms: 1764806400000,
};

/** Stubs the global fetch with `routes` (whoami answers WHO unless given). */
export function stubGateway(routes: Record<string, Handler>) {
  const calls: Call[] = [];
  const table: Record<string, Handler> = { 'GET /admin/whoami': WHO, ...routes };
  const fetchStub = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url, 'http://localhost');
    const method = (init?.method ?? 'GET').toUpperCase();
    const headers = new Headers(init?.headers);
    const body: unknown = typeof init?.body === 'string' ? JSON.parse(init.body) : undefined;
    const call: Call = { method, path: url.pathname, url, headers, body };
    calls.push(call);
    const handler = table[`${method} ${url.pathname}`];
    if (handler === undefined) return problem(404, 'Not Found', `no stub for ${method} ${url.pathname}`);
    const answer: Answer = isHandlerFn(handler) ? await handler(call) : handler;
    if (answer instanceof Response) return answer;
    return json(answer);
  });
  vi.stubGlobal('fetch', fetchStub);
  return {
    calls,
    fetch: fetchStub,
    /** Calls of one route ("POST /admin/views/balances/rebuild"). */
    callsTo: (route: string) => calls.filter((c) => `${c.method} ${c.path}` === route),
    /** Replaces or adds routes. */
    set: (more: Record<string, Handler>) => Object.assign(table, more),
  };
}
