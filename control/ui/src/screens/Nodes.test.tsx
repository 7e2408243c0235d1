import { screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import type { NodeInfo } from '../api/types';
import { stubGateway } from '../test/gateway';
import { renderAt } from '../test/render';

const node = (n: Partial<NodeInfo> & Pick<NodeInfo, 'role' | 'node_id'>): NodeInfo => ({
  address: `http://127.0.0.1:5005${String(n.node_id?.length ?? 0)}`,
  health: 'serving',
  version: '0.1.0',
  uptime_seconds: 100,
  drain_state: null,
  behaviours: [],
  error: null,
  ...n,
});

const NODES = [
  node({ role: 'runner', node_id: 'runner-b', uptime_seconds: 50, drain_state: 'serving' }),
  node({ role: 'aggregate', node_id: 'aggregate-a', uptime_seconds: 812 }),
  node({ role: 'projection', node_id: 'projection-c', uptime_seconds: 3700 }),
  node({
    role: 'projection',
    node_id: null,
    address: 'http://127.0.0.1:59999',
    health: 'unreachable',
    version: null,
    uptime_seconds: null,
    error: 'connection refused',
  }),
];

/** The node ids of the table, top to bottom. */
function nodeIds(): string[] {
  const table = screen.getByRole('table', { name: 'Nodes' });
  return within(table)
    .getAllByRole('row')
    .slice(1)
    .map((r) => within(r).getAllByRole('cell')[1]?.textContent ?? '');
}

describe('Nodes', () => {
  it('lists nodes with health, version, uptime, drain state and links', async () => {
    stubGateway({ 'GET /admin/nodes': { nodes: NODES } });
    await renderAt('nodes');
    await screen.findByRole('table', { name: 'Nodes' });
    expect(nodeIds()).toEqual(['aggregate-a', 'projection-c', '—', 'runner-b']);
    expect(screen.getByText('13m 32s')).toBeInTheDocument();
    expect(screen.getByText('connection refused')).toBeInTheDocument();
    expect(screen.getByRole('link', { name: 'Supervision tree of runner-b' })).toHaveAttribute(
      'href',
      '#/supervision?node=runner-b',
    );
    expect(screen.getByRole('link', { name: 'Runner details of runner-b' })).toHaveAttribute('href', '#/runners/runner-b');
    expect(screen.queryByRole('link', { name: 'Runner details of aggregate-a' })).not.toBeInTheDocument();
  });

  it('says which nodes hold messages through a store outage, and for how long', async () => {
    stubGateway({
      'GET /admin/nodes': {
        nodes: [
          node({
            role: 'projection',
            node_id: 'projection-c',
            held: [{ kind: 'view', name: 'balances', messages: 3, oldest_seconds: 42.7 }],
          }),
          node({
            role: 'runner',
            node_id: 'runner-b',
            held: [{ kind: 'handler', name: 'effect_worker', messages: 1, oldest_seconds: 75 }],
          }),
          node({ role: 'aggregate', node_id: 'aggregate-a', held: [] }),
        ],
      },
    });
    await renderAt('nodes');
    const list = await screen.findByRole('list', { name: 'Held messages' });
    expect(within(list).getAllByRole('listitem').map((li) => li.textContent)).toEqual([
      'projection-c — view balances: 3 documents held for 42s',
      'runner-b — handler effect_worker: 1 message held for 1m 15s',
    ]);
    expect(screen.getByText('Waiting for a store.')).toBeInTheDocument();
    const table = screen.getByRole('table', { name: 'Nodes' });
    expect(within(table).getByText('balances: 3 for 42s')).toBeInTheDocument();
  });

  it('shows no holding notice when nothing is held', async () => {
    stubGateway({ 'GET /admin/nodes': { nodes: NODES } });
    await renderAt('nodes');
    await screen.findByRole('table', { name: 'Nodes' });
    expect(screen.queryByRole('list', { name: 'Held messages' })).not.toBeInTheDocument();
    expect(screen.queryByText('Waiting for a store.')).not.toBeInTheDocument();
  });

  it('sorts by a column, both ways, empty values last', async () => {
    const user = userEvent.setup();
    stubGateway({ 'GET /admin/nodes': { nodes: NODES } });
    await renderAt('nodes');
    await screen.findByRole('table', { name: 'Nodes' });
    const uptime = screen.getByRole('button', { name: /Uptime/ });
    await user.click(uptime);
    expect(screen.getByRole('columnheader', { name: /Uptime/ })).toHaveAttribute('aria-sort', 'ascending');
    expect(nodeIds()).toEqual(['runner-b', 'aggregate-a', 'projection-c', '—']);
    await user.click(uptime);
    expect(screen.getByRole('columnheader', { name: /Uptime/ })).toHaveAttribute('aria-sort', 'descending');
    expect(nodeIds()).toEqual(['projection-c', 'aggregate-a', 'runner-b', '—']);
    expect(screen.getByRole('columnheader', { name: /Role/ })).toHaveAttribute('aria-sort', 'none');
  });

  it('filters by role, and says when none match', async () => {
    const user = userEvent.setup();
    stubGateway({ 'GET /admin/nodes': { nodes: NODES.filter((n) => n.role !== 'runner') } });
    await renderAt('nodes');
    await screen.findByRole('table', { name: 'Nodes' });
    await user.selectOptions(screen.getByRole('combobox', { name: 'Role' }), 'projection');
    expect(nodeIds()).toEqual(['projection-c', '—']);
    expect(window.location.hash).toBe('#/nodes?role=projection');
    await user.selectOptions(screen.getByRole('combobox', { name: 'Role' }), 'runner');
    expect(screen.getByText('No runner nodes')).toBeInTheDocument();
  });

  it('says when there are no nodes', async () => {
    stubGateway({ 'GET /admin/nodes': { nodes: [] } });
    await renderAt('nodes');
    expect(await screen.findByText('No nodes')).toBeInTheDocument();
  });
});
