import { screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import type { RunnerStatus } from '../api/types';
import { stubGateway } from '../test/gateway';
import { renderAt } from '../test/render';

const RUNNER: RunnerStatus = {
  node_id: 'runner-1',
  address: 'http://r1',
  version: '0.1.0',
  uptime_seconds: 3600,
  draining: false,
  drain_state: 'serving',
  in_flight: 3,
  outbox_depth: 1,
  enabled_workflows: ['transfer'],
  effect_types: ['deposit'],
  effects: [{ effect_type: 'deposit', in_flight: 2, concurrency: 16, max_attempts: 5 }],
  consumers: [
    { stream: 'EFFECTS', durable: 'runner-effects', pending: 4, ack_pending: 3, redelivered: 1, in_flight: 3, fetching: true },
  ],
};

describe('Runners', () => {
  it('lists runners with drain state, in flight, outbox, effects and consumers; and unreachable ones', async () => {
    stubGateway({ 'GET /admin/runner/nodes': { nodes: [RUNNER, { address: 'http://r2', error: 'no answer' }] } });
    await renderAt('runners');
    const table = await screen.findByRole('table', { name: 'Runner nodes' });
    expect(within(table).getByRole('rowheader', { name: 'runner-1' })).toBeInTheDocument();
    expect(screen.getByRole('table', { name: 'Effects of runner-1' })).toHaveTextContent('deposit');
    expect(screen.getByRole('table', { name: 'Consumers of runner-1' })).toHaveTextContent('runner-effects');
    expect(screen.getByRole('alert')).toHaveTextContent('no answer');
  });

  it('drains after the confirmation, resumes and reloads', async () => {
    const user = userEvent.setup();
    const gw = stubGateway({
      'GET /admin/runner/nodes/runner-1': RUNNER,
      'POST /admin/runner/nodes/runner-1/drain': {
        node_id: 'runner-1', state: 'intake_stopped', drained: false, in_flight: 3, pending_outbox: 1, detail: '3 in flight',
      },
      'POST /admin/runner/nodes/runner-1/undrain': {
        node_id: 'runner-1', state: 'serving', drained: false, in_flight: 0, pending_outbox: 0, detail: '',
      },
      'POST /admin/runner/nodes/runner-1/reload': { node_id: 'runner-1', changes: ['deposit concurrency 16 → 8'] },
    });
    await renderAt('runners/runner-1');
    await user.click(await screen.findByRole('button', { name: 'Drain runner-1' }));
    const dialog = screen.getByRole('dialog', { name: 'Drain runner-1?' });
    expect(gw.callsTo('POST /admin/runner/nodes/runner-1/drain')).toHaveLength(0);
    gw.set({ 'GET /admin/runner/nodes/runner-1': { ...RUNNER, draining: true, drain_state: 'intake_stopped' } });
    await user.click(within(dialog).getByRole('button', { name: 'Drain node' }));
    expect(await screen.findByRole('status')).toHaveTextContent('Drain of runner-1: intake stopped — 3 in flight.');
    expect(gw.callsTo('POST /admin/runner/nodes/runner-1/drain')[0]?.url.search).toBe('?wait=false');

    await waitFor(() => expect(screen.getByRole('button', { name: 'Resume runner-1' })).toBeEnabled());
    await user.click(screen.getByRole('button', { name: 'Resume runner-1' }));
    expect(await screen.findByText('Resume of runner-1: serving.')).toBeInTheDocument();

    await user.click(screen.getByRole('button', { name: 'Reload runner-1' }));
    expect(await screen.findByText('Reload of runner-1: deposit concurrency 16 → 8.')).toBeInTheDocument();
  });
});

