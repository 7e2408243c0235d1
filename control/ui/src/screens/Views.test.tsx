import { screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import type { ViewStatus, ViewsResponse } from '../api/types';
import { problem, stubGateway } from '../test/gateway';
import { renderAt } from '../test/render';

function views(v: Partial<ViewStatus>): ViewsResponse {
  return {
    views: [
      { view: 'balances', generation: 2, checkpoint: 1200, stream_last_sequence: 1210, lag: 10, rebuilding: null, ...v },
    ],
    stream_last_sequence: 1210,
  };
}

function balancesRow(): HTMLElement {
  const tr = screen.getByRole('rowheader', { name: 'balances' }).closest('tr');
  if (!tr) throw new Error('no row');
  return tr;
}

describe('Views', () => {
  it('shows generation, checkpoint, stream sequence and lag', async () => {
    stubGateway({ 'GET /admin/views': views({}) });
    await renderAt('views');
    await screen.findByRole('rowheader', { name: 'balances' });
    const cells = within(balancesRow()).getAllByRole('cell').map((c) => c.textContent);
    expect(cells.slice(0, 4)).toEqual(['2', '1,200', '1,210', '10']);
  });

  it('shows an unknown lag as unknown, not as caught up', async () => {
    stubGateway({ 'GET /admin/views': views({ stream_last_sequence: 0, lag: null }) });
    await renderAt('views');
    await screen.findByRole('rowheader', { name: 'balances' });
    const lag = within(balancesRow()).getAllByRole('cell')[3];
    expect(lag).toHaveTextContent('—');
    expect(lag).toHaveAttribute('title', 'Not known: the node could not read the stream');
  });

  it('shows a running rebuild as a progress bar', async () => {
    stubGateway({ 'GET /admin/views': views({ rebuilding: { generation: 3, checkpoint: 605 } }) });
    await renderAt('views');
    const bar = await screen.findByRole('progressbar', { name: 'Rebuild of balances to generation 3' });
    expect(bar).toHaveAttribute('aria-valuenow', '605');
    expect(bar).toHaveAttribute('aria-valuemax', '1210');
    expect(within(balancesRow()).getByText('605 / 1,210 (50%)')).toBeInTheDocument();
    expect(screen.getByRole('button', { name: 'Cancel rebuild of balances' })).toBeEnabled();
  });

  it('rebuilds after the confirmation, shows progress, then the new generation', async () => {
    const user = userEvent.setup();
    const gw = stubGateway({ 'GET /admin/views': views({}) });
    await renderAt('views');
    await screen.findByRole('rowheader', { name: 'balances' });

    let phase = 0;
    gw.set({
      'POST /admin/views/balances/rebuild': { view: 'balances', generation: 3, active_generation: 2 },
      'GET /admin/views': () => {
        phase += 1;
        if (phase === 1) return views({ rebuilding: { generation: 3, checkpoint: 400 } });
        if (phase === 2) return views({ rebuilding: { generation: 3, checkpoint: 1000 } });
        return views({ generation: 3, checkpoint: 1210, lag: 0 });
      },
    });
    await user.click(screen.getByRole('button', { name: 'Rebuild balances' }));
    const dialog = screen.getByRole('dialog', { name: 'Rebuild balances?' });
    expect(gw.callsTo('POST /admin/views/balances/rebuild')).toHaveLength(0);
    await user.click(within(dialog).getByRole('button', { name: 'Start rebuild' }));

    await screen.findByRole('progressbar', { name: 'Rebuild of balances to generation 3' });
    expect(gw.callsTo('POST /admin/views/balances/rebuild')).toHaveLength(1);
    expect(screen.getByRole('status')).toHaveTextContent('Rebuild of balances started: generation 3');
    // Polled every second while the rebuild runs, until the new generation serves.
    await within(balancesRow()).findByText('1,000 / 1,210 (83%)', undefined, { timeout: 3000 });
    expect(screen.getByRole('progressbar', { name: 'Rebuild of balances to generation 3' })).toHaveAttribute(
      'aria-valuenow',
      '1000',
    );
    expect(
      await screen.findByText('Rebuild of balances finished: generation 3 is active.', undefined, { timeout: 3000 }),
    ).toBeInTheDocument();
    expect(within(balancesRow()).getAllByRole('cell')[0]).toHaveTextContent('3');
    expect(screen.queryByRole('progressbar')).not.toBeInTheDocument();
  });

  it('shows a 409 when a rebuild already runs', async () => {
    const user = userEvent.setup();
    stubGateway({
      'GET /admin/views': views({}),
      'POST /admin/views/balances/rebuild': problem(409, 'Conflict', 'a rebuild of balances already runs'),
    });
    await renderAt('views');
    await user.click(await screen.findByRole('button', { name: 'Rebuild balances' }));
    await user.click(screen.getByRole('button', { name: 'Start rebuild' }));
    expect(await screen.findByRole('alert')).toHaveTextContent('a rebuild of balances already runs');
  });

  it('cancels a rebuild after the confirmation', async () => {
    const user = userEvent.setup();
    const gw = stubGateway({
      'GET /admin/views': views({ rebuilding: { generation: 3, checkpoint: 400 } }),
      'POST /admin/views/balances/rebuild/cancel': { view: 'balances', cancelled_generation: 3, active_generation: 2 },
    });
    await renderAt('views');
    await user.click(await screen.findByRole('button', { name: 'Cancel rebuild of balances' }));
    gw.set({ 'GET /admin/views': views({}) });
    await user.click(screen.getByRole('button', { name: 'Cancel rebuild' }));
    expect(await screen.findByRole('status')).toHaveTextContent('generation 3 discarded, generation 2 serves');
    expect(gw.callsTo('POST /admin/views/balances/rebuild/cancel')).toHaveLength(1);
  });

  it('disables the verbs without admin:operate', async () => {
    stubGateway({
      'GET /admin/whoami': { subject: 'viewer', tenant: 'demo', rights: ['admin:read'], expires_at_ms: 0 },
      'GET /admin/views': views({}),
    });
    await renderAt('views');
    expect(await screen.findByRole('button', { name: 'Rebuild balances' })).toBeDisabled();
    expect(screen.getByText(/need the right/)).toHaveTextContent('admin:operate');
  });
});
