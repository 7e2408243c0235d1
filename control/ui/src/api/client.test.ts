import { describe, expect, it, vi } from 'vitest';
import { problem, stubGateway } from '../test/gateway';
import { ApiProblem, createApiClient, parseRetryAfter } from './client';

function client(token: string | null = 'tok', onUnauthorized = vi.fn()) {
  return { api: createApiClient({ getToken: () => token, onUnauthorized }), onUnauthorized };
}

describe('API client', () => {
  it('sends the bearer token and asks for JSON', async () => {
    const gw = stubGateway({ 'GET /admin/nodes': { nodes: [] } });
    const { api } = client('abc.def.ghi');
    await expect(api.nodes()).resolves.toEqual({ nodes: [] });
    const [call] = gw.calls;
    expect(call?.headers.get('authorization')).toBe('Bearer abc.def.ghi');
    expect(call?.headers.get('accept')).toContain('application/problem+json');
  });

  it('sends no Authorization header without a token', async () => {
    const gw = stubGateway({ 'GET /admin/nodes': { nodes: [] } });
    await client(null).api.nodes();
    expect(gw.calls[0]?.headers.has('authorization')).toBe(false);
  });

  it('builds query strings, drops empty values and encodes path segments', async () => {
    const gw = stubGateway({
      'GET /admin/poison': { records: [], next_cursor: null },
      'GET /v1/workflows/transfer': { instances: [], next_cursor: '' },
      'POST /admin/poison/a%2Fb/redrive': { id: 'a/b', outcome: 'applied', detail: null },
      'POST /admin/runner/nodes/runner-1/drain': { node_id: 'runner-1', state: 'intake_stopped' },
    });
    const { api } = client();
    await api.poisonList({ source: '', limit: 50, cursor: null });
    await api.workflowInstances('transfer', { status: 'failed', limit: 10, cursor: 'c1' });
    await api.redrivePoison('a/b');
    await api.drainRunner('runner-1');
    expect(gw.calls.map((c) => `${c.method} ${c.url.pathname}${c.url.search}`)).toEqual([
      'GET /admin/poison?limit=50',
      'GET /v1/workflows/transfer?status=failed&limit=10&cursor=c1',
      'POST /admin/poison/a%2Fb/redrive',
      'POST /admin/runner/nodes/runner-1/drain?wait=false',
    ]);
  });

  it('parses problem+json into an ApiProblem with Retry-After', async () => {
    stubGateway({
      'GET /admin/views': problem(503, 'Service Unavailable', 'every runner is draining', {
        'retry-after': '7',
        'x-correlation-id': 'corr-1',
      }),
    });
    const err = await client().api.views().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiProblem);
    const p = err as ApiProblem;
    expect(p.status).toBe(503);
    expect(p.title).toBe('Service Unavailable');
    expect(p.detail).toBe('every runner is draining');
    expect(p.type).toBe('urn:cloudlysis:problem:test');
    expect(p.retryAfter).toBe(7);
    expect(p.correlationId).toBe('corr-1');
  });

  it('makes a problem of an error that is not problem+json', async () => {
    stubGateway({ 'GET /admin/audit': new Response('<html><h1>Bad gateway</h1></html>', { status: 502 }) });
    const p = (await client().api.audit().catch((e: unknown) => e)) as ApiProblem;
    expect(p.status).toBe(502);
    expect(p.title).toBe('Bad Gateway');
    expect(p.detail).toBe('Bad gateway');
  });

  it('reports a 401 to onUnauthorized and throws it', async () => {
    stubGateway({ 'GET /admin/whoami': problem(401, 'Unauthorized', 'token expired') });
    const { api, onUnauthorized } = client();
    await expect(api.whoami()).rejects.toMatchObject({ status: 401, detail: 'token expired' });
    expect(onUnauthorized).toHaveBeenCalledTimes(1);
    expect(onUnauthorized.mock.calls[0]?.[0]).toBeInstanceOf(ApiProblem);
  });

  it('does not report a 403 as a sign-out', async () => {
    stubGateway({ 'GET /admin/nodes': problem(403, 'Forbidden', 'missing right `admin:read`') });
    const { api, onUnauthorized } = client();
    await expect(api.nodes()).rejects.toMatchObject({ status: 403, title: 'Forbidden' });
    expect(onUnauthorized).not.toHaveBeenCalled();
  });

  it('turns a network failure into a status-0 problem', async () => {
    vi.stubGlobal('fetch', vi.fn(() => Promise.reject(new TypeError('Failed to fetch'))));
    await expect(client().api.nodes()).rejects.toMatchObject({
      status: 0,
      title: 'The Gateway did not answer',
      detail: 'Failed to fetch',
    });
  });

  it('sends the reason with cancel, and no body with the other verbs', async () => {
    const instance = { workflow: 'transfer', instance: 't-1' };
    const gw = stubGateway({
      'POST /v1/workflows/transfer/t-1/cancel': instance,
      'POST /v1/workflows/transfer/t-1/retry-now': instance,
    });
    const { api } = client();
    await api.operateInstance('transfer', 't-1', 'cancel', 'customer asked');
    await api.operateInstance('transfer', 't-1', 'retry-now');
    expect(gw.calls[0]?.body).toEqual({ reason: 'customer asked' });
    expect(gw.calls[0]?.headers.get('content-type')).toBe('application/json');
    expect(gw.calls[1]?.body).toBeUndefined();
  });

  it('mirrors every route of the contract', async () => {
    const gw = stubGateway({});
    const { api } = client();
    const all = [
      api.whoami(),
      api.nodes(),
      api.supervision(),
      api.views(),
      api.rebuildView('balances'),
      api.cancelRebuild('balances'),
      api.poisonList(),
      api.poison('p1'),
      api.redrivePoison('p1'),
      api.purgePoison('p1'),
      api.audit({ limit: 100 }),
      api.runnerNodes(),
      api.runnerNode('r1'),
      api.drainRunner('r1'),
      api.undrainRunner('r1'),
      api.reloadRunner('r1'),
      api.workflowInstances('transfer'),
      api.workflowInstance('transfer', 't-1'),
      api.operateInstance('transfer', 't-1', 'pause'),
    ];
    await Promise.allSettled(all);
    expect(gw.calls.map((c) => `${c.method} ${c.path}`)).toEqual([
      'GET /admin/whoami',
      'GET /admin/nodes',
      'GET /admin/supervision',
      'GET /admin/views',
      'POST /admin/views/balances/rebuild',
      'POST /admin/views/balances/rebuild/cancel',
      'GET /admin/poison',
      'GET /admin/poison/p1',
      'POST /admin/poison/p1/redrive',
      'DELETE /admin/poison/p1',
      'GET /admin/audit',
      'GET /admin/runner/nodes',
      'GET /admin/runner/nodes/r1',
      'POST /admin/runner/nodes/r1/drain',
      'POST /admin/runner/nodes/r1/undrain',
      'POST /admin/runner/nodes/r1/reload',
      'GET /v1/workflows/transfer',
      'GET /v1/workflows/transfer/t-1',
      'POST /v1/workflows/transfer/t-1/pause',
    ]);
  });
});

describe('parseRetryAfter', () => {
  it('reads seconds and HTTP dates', () => {
    expect(parseRetryAfter('12')).toBe(12);
    expect(parseRetryAfter(null)).toBeNull();
    expect(parseRetryAfter('soon')).toBeNull();
    const now = Date.parse('2026-11-26T23:40:00Z');
    expect(parseRetryAfter('Thu, 26 Nov 2026 23:40:30 GMT', now)).toBe(30);
  });
});
