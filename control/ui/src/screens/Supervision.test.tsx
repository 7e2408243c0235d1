import { act, screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { SupervisionResponse, SupervisorSnapshot } from '../api/types';
import { stubGateway } from '../test/gateway';
import { renderAt } from '../test/render';

function tree(restarts: number, depth = 3): SupervisorSnapshot {
  return {
    name: 'root',
    strategy: 'one_for_one',
    status: 'running',
    restarts,
    children: [
      {
        name: 'consumer-balances',
        kind: 'jetstream_consumer',
        status: 'running',
        restarts,
        last_failure: 'panicked: boom',
        last_failure_at: '2026-11-26T23:40:00Z',
        mailbox: { depth, capacity: 64 },
      },
      { name: 'query-server', kind: 'grpc_server', status: 'running', restarts: 0 },
      { name: 'entities', kind: 'supervisor', status: 'running', restarts: 0 },
    ],
    supervisors: [
      {
        name: 'entities',
        strategy: 'one_for_one',
        status: 'running',
        restarts: 0,
        children: [
          { name: 'account/acc-1', kind: 'entity', status: 'failed', restarts: 0, mailbox: { depth: 60, capacity: 64 } },
        ],
      },
    ],
  };
}

function answer(restarts: number, depth?: number): SupervisionResponse {
  return {
    nodes: [
      { role: 'projection', node_id: 'projection-1', address: 'http://p1', tree: tree(restarts, depth), error: null },
      { role: 'aggregate', node_id: 'aggregate-1', address: 'http://a1', tree: null, error: 'connection refused' },
    ],
  };
}

function row(name: string): HTMLElement {
  const header = screen.getByRole('rowheader', { name: new RegExp(`^${name}`) });
  const tr = header.closest('tr');
  if (!tr) throw new Error('no row');
  return tr;
}

afterEach(() => {
  vi.useRealTimers();
});

describe('Supervision', () => {
  it('draws each mailbox as a labelled pressure bar, nested supervisors and node errors', async () => {
    stubGateway({ 'GET /admin/supervision': answer(1) });
    await renderAt('supervision');
    const bar = await screen.findByRole('meter', { name: 'mailbox 3 of 64' });
    expect(bar).toHaveAttribute('aria-valuenow', '3');
    expect(bar).toHaveAttribute('aria-valuemax', '64');
    expect(screen.getByRole('meter', { name: 'mailbox 60 of 64' })).toHaveClass('bar-high');
    expect(within(row('query-server')).getByText('not bounded')).toBeInTheDocument();
    expect(within(row('consumer-balances')).getByText('panicked: boom')).toBeInTheDocument();
    expect(within(row('consumer-balances')).getByRole('time')).toHaveAttribute('datetime', '2026-11-26T23:40:00.000Z');
    expect(screen.getByRole('table', { name: 'Children of entities on projection-1' })).toBeInTheDocument();
    expect(screen.getByRole('alert')).toHaveTextContent('connection refused');
  });

  it('highlights children whose restarts went up since the previous refresh', async () => {
    const user = userEvent.setup();
    const gw = stubGateway({ 'GET /admin/supervision': answer(1) });
    await renderAt('supervision');
    await screen.findByRole('meter', { name: 'mailbox 3 of 64' });
    expect(row('consumer-balances')).not.toHaveClass('restarted');

    gw.set({ 'GET /admin/supervision': answer(3, 40) });
    await user.click(screen.getByRole('button', { name: 'Refresh now' }));
    await screen.findByRole('meter', { name: 'mailbox 40 of 64' });
    expect(row('consumer-balances')).toHaveClass('restarted');
    expect(within(row('consumer-balances')).getByText('+2 since last refresh')).toBeInTheDocument();
    expect(row('query-server')).not.toHaveClass('restarted');
    expect(screen.getByText(/^Restarted since the last refresh:/)).toHaveTextContent('projection-1: root › consumer-balances (+2)');

    // No new restarts: the highlight goes, the minute's count stays.
    await user.click(screen.getByRole('button', { name: 'Refresh now' }));
    await vi.waitFor(() => expect(row('consumer-balances')).not.toHaveClass('restarted'));
    expect(within(row('consumer-balances')).getByText(/2 in the last minute/)).toBeInTheDocument();
  });

  it('refreshes every 2 s without a reload, and not while paused', async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    const user = userEvent.setup({ advanceTimers: (ms) => vi.advanceTimersByTime(ms) });
    const gw = stubGateway({ 'GET /admin/supervision': answer(1) });
    await renderAt('supervision');
    await screen.findByRole('meter', { name: 'mailbox 3 of 64' });
    const before = gw.callsTo('GET /admin/supervision').length;
    await act(() => vi.advanceTimersByTimeAsync(2100));
    expect(gw.callsTo('GET /admin/supervision').length).toBe(before + 1);

    await user.click(screen.getByRole('checkbox', { name: 'Pause auto-refresh' }));
    const paused = gw.callsTo('GET /admin/supervision').length;
    await act(() => vi.advanceTimersByTimeAsync(7000));
    expect(gw.callsTo('GET /admin/supervision').length).toBe(paused);

    await user.click(screen.getByRole('checkbox', { name: 'Pause auto-refresh' }));
    await act(() => vi.advanceTimersByTimeAsync(2100));
    expect(gw.callsTo('GET /admin/supervision').length).toBeGreaterThan(paused);
  });

  it('filters by node and by text', async () => {
    const user = userEvent.setup();
    stubGateway({ 'GET /admin/supervision': answer(1) });
    await renderAt('supervision?node=projection-1');
    await screen.findByRole('meter', { name: 'mailbox 3 of 64' });
    expect(screen.queryByText('connection refused')).not.toBeInTheDocument();
    await user.type(screen.getByLabelText('Filter children'), 'acc-1');
    expect(screen.queryByRole('rowheader', { name: /^consumer-balances/ })).not.toBeInTheDocument();
    expect(screen.getByRole('rowheader', { name: 'account/acc-1' })).toBeInTheDocument();
    await user.selectOptions(screen.getByRole('combobox', { name: 'Node' }), '');
    expect(await screen.findByText('connection refused')).toBeInTheDocument();
  });
});
