import { screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import type { Instance, RunnerStatus } from '../api/types';
import { problem, stubGateway, type Call } from '../test/gateway';
import { renderAt } from '../test/render';

const RUNNER: RunnerStatus = {
  node_id: 'runner-1',
  address: 'http://r1',
  version: '0.1.0',
  uptime_seconds: 60,
  draining: false,
  drain_state: 'serving',
  in_flight: 0,
  outbox_depth: 0,
  enabled_workflows: ['transfer', 'onboarding'],
  effect_types: [],
  effects: [],
  consumers: [],
};

const INSTANCE: Instance = {
  workflow: 'transfer',
  instance: 't-1',
  status: 'running',
  state: { from: 'acc-1', to: 'acc-2', amount: 25 },
  step: 2,
  paused: false,
  cancel_requested: false,
  pending: [
    {
      command_id: 'cmd-1',
      effect_type: 'deposit',
      label: 'deposit',
      issued_at_ms: 1764806400000,
      attempts: 2,
      ledger_status: 'in_flight',
      last_error: 'timeout',
    },
  ],
  timers: [{ name: 'timeout', fire_at_ms: 1764806460000 }],
  applied_events: [{ stream_sequence: 1101, index: 0 }],
  failure: null,
  created_at_ms: 1764806300000,
  updated_at_ms: 1764806400000,
};

describe('Workflows', () => {
  it('picks a workflow from the runners and lists its instances by status, paged', async () => {
    const user = userEvent.setup();
    const gw = stubGateway({
      'GET /admin/runner/nodes': { nodes: [RUNNER, { address: 'http://r2', error: 'down' }] },
      'GET /v1/workflows/transfer': (call: Call) =>
        call.url.searchParams.get('cursor') === 'next'
          ? { instances: [{ ...INSTANCE, instance: 't-2' }], next_cursor: '' }
          : { instances: [INSTANCE], next_cursor: 'next' },
      'GET /v1/workflows/onboarding': { instances: [], next_cursor: '' },
    });
    await renderAt('workflows');
    const picker = await screen.findByRole('combobox', { name: 'Workflow' });
    expect(within(picker).getAllByRole('option').map((o) => o.textContent)).toEqual(['onboarding', 'transfer']);
    await user.selectOptions(picker, 'transfer');
    const table = await screen.findByRole('table', { name: 'Instances of transfer' });
    expect(within(table).getByRole('link', { name: 't-1' })).toHaveAttribute('href', '#/workflows/transfer/t-1');

    await user.click(screen.getByRole('button', { name: 'Next page →' }));
    expect(await screen.findByRole('link', { name: 't-2' })).toBeInTheDocument();
    expect(screen.getByRole('button', { name: 'Next page →' })).toBeDisabled();

    await user.selectOptions(screen.getByRole('combobox', { name: 'Status' }), 'failed');
    await screen.findByRole('link', { name: 't-1' });
    const last = gw.callsTo('GET /v1/workflows/transfer').at(-1);
    expect(last?.url.searchParams.get('status')).toBe('failed');
    expect(last?.url.searchParams.has('cursor')).toBe(false);

    await user.selectOptions(screen.getByRole('combobox', { name: 'Workflow' }), 'onboarding');
    expect(await screen.findByText('No failed instances of onboarding')).toBeInTheDocument();
  });

  it('lets the name be typed when the runners are not readable', async () => {
    const user = userEvent.setup();
    stubGateway({
      'GET /admin/runner/nodes': problem(403, 'Forbidden', 'missing right `runner:admin`'),
      'GET /v1/workflows/transfer': { instances: [INSTANCE], next_cursor: '' },
    });
    await renderAt('workflows');
    await user.type(await screen.findByLabelText('Workflow name'), 'transfer');
    await user.click(screen.getByRole('button', { name: 'Show' }));
    expect(await screen.findByRole('link', { name: 't-1' })).toBeInTheDocument();
  });

  it('inspects an instance: state, pending commands, timers, applied events', async () => {
    stubGateway({ 'GET /v1/workflows/transfer/t-1': INSTANCE });
    await renderAt('workflows/transfer/t-1');
    expect(await screen.findByRole('heading', { level: 1, name: 'transfer / t-1' })).toBeInTheDocument();
    expect(await screen.findByLabelText('Instance state')).toHaveTextContent('"amount": 25');
    const pending = screen.getByRole('table', { name: 'Pending commands' });
    expect(within(pending).getByRole('rowheader', { name: 'cmd-1' })).toBeInTheDocument();
    expect(within(pending).getByText('timeout')).toBeInTheDocument();
    expect(screen.getByRole('table', { name: 'Timers' })).toHaveTextContent('timeout');
    expect(screen.getByRole('table', { name: 'Applied events, newest last' })).toHaveTextContent('1101');
  });

  it('pauses, resumes, retries now, and cancels with a reason', async () => {
    const user = userEvent.setup();
    let current: Instance = INSTANCE;
    const verb = (change: (i: Instance) => Instance) => () => {
      current = { ...change(current), updated_at_ms: current.updated_at_ms + 1 };
      return current;
    };
    const gw = stubGateway({
      'GET /v1/workflows/transfer/t-1': () => current,
      'POST /v1/workflows/transfer/t-1/pause': verb((i) => ({ ...i, paused: true })),
      'POST /v1/workflows/transfer/t-1/resume': verb((i) => ({ ...i, paused: false })),
      'POST /v1/workflows/transfer/t-1/retry-now': verb((i) => i),
      'POST /v1/workflows/transfer/t-1/cancel': verb((i) => ({ ...i, cancel_requested: true })),
    });
    await renderAt('workflows/transfer/t-1');
    await screen.findByLabelText('Instance state');
    expect(screen.getByRole('button', { name: 'Resume' })).toBeDisabled();

    await user.click(screen.getByRole('button', { name: 'Pause' }));
    expect(await screen.findByRole('status')).toHaveTextContent('Paused: transfer t-1.');
    expect(screen.getByRole('button', { name: 'Pause' })).toBeDisabled();

    await user.click(screen.getByRole('button', { name: 'Resume' }));
    expect(await screen.findByText('Resumed: transfer t-1.')).toBeInTheDocument();

    await user.click(screen.getByRole('button', { name: 'Retry now' }));
    expect(await screen.findByText('Retry requested: transfer t-1.')).toBeInTheDocument();

    await user.click(screen.getByRole('button', { name: 'Cancel…' }));
    const dialog = screen.getByRole('dialog', { name: 'Cancel transfer t-1?' });
    await user.type(within(dialog).getByLabelText('Reason'), 'customer asked');
    await user.click(within(dialog).getByRole('button', { name: 'Cancel instance' }));
    expect(await screen.findByText('Cancel requested: transfer t-1.')).toBeInTheDocument();
    expect(gw.callsTo('POST /v1/workflows/transfer/t-1/cancel')[0]?.body).toEqual({ reason: 'customer asked' });
    expect(screen.getByRole('button', { name: 'Cancel…' })).toBeDisabled();
    expect(gw.calls.filter((c) => c.method === 'POST').map((c) => c.path.split('/').pop())).toEqual([
      'pause',
      'resume',
      'retry-now',
      'cancel',
    ]);
  });

  it('lets an instance that ended while paused be resumed, and says why it should be', async () => {
    const user = userEvent.setup();
    let current: Instance = { ...INSTANCE, status: 'completed', paused: true, pending: [], timers: [] };
    const gw = stubGateway({
      'GET /v1/workflows/transfer/t-1': () => current,
      'POST /v1/workflows/transfer/t-1/resume': () => {
        current = { ...current, paused: false, updated_at_ms: current.updated_at_ms + 1 };
        return current;
      },
    });
    await renderAt('workflows/transfer/t-1');
    await screen.findByLabelText('Instance state');
    expect(screen.getByText(/ended while paused/)).toBeInTheDocument();
    expect(screen.getByRole('button', { name: 'Pause' })).toBeDisabled();
    expect(screen.getByRole('button', { name: 'Cancel…' })).toBeDisabled();
    await user.click(screen.getByRole('button', { name: 'Resume' }));
    expect(await screen.findByText('Resumed: transfer t-1.')).toBeInTheDocument();
    expect(gw.callsTo('POST /v1/workflows/transfer/t-1/resume')).toHaveLength(1);
    expect(screen.queryByText(/ended while paused/)).not.toBeInTheDocument();
  });

  it('shows a refused verb as an alert', async () => {
    const user = userEvent.setup();
    stubGateway({
      'GET /v1/workflows/transfer/t-1': INSTANCE,
      'POST /v1/workflows/transfer/t-1/pause': problem(429, 'Too Many Requests', 'instance busy', { 'retry-after': '2' }),
    });
    await renderAt('workflows/transfer/t-1');
    await user.click(await screen.findByRole('button', { name: 'Pause' }));
    const alert = await screen.findByRole('alert');
    expect(alert).toHaveTextContent('instance busy');
    expect(alert).toHaveTextContent('Retry after 2 s.');
  });

  it('disables the verbs without workflows:<name>:operate', async () => {
    stubGateway({
      'GET /admin/whoami': { subject: 'reader', tenant: 'demo', rights: ['workflows:transfer'], expires_at_ms: 0 },
      'GET /v1/workflows/transfer/t-1': INSTANCE,
    });
    await renderAt('workflows/transfer/t-1');
    expect(await screen.findByRole('button', { name: 'Pause' })).toBeDisabled();
    expect(screen.getByText(/Needs the right/)).toHaveTextContent('workflows:transfer:operate');
  });
});
