import { screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import type { PoisonRecord, PoisonSummary } from '../api/types';
import { problem, stubGateway } from '../test/gateway';
import { renderAt } from '../test/render';

const SUMMARY: PoisonSummary = {
  id: 'p-1',
  source: { kind: 'view', name: 'balances' },
  consumer: 'view-balances',
  stream: 'EVENTS',
  sequence: 1207,
  subject: 'events.demo.account.acc-1',
  error: 'amount overflows u64',
  attempts: 5,
  time: '2026-11-26T23:40:00Z',
};
const RECORD: PoisonRecord = {
  ...SUMMARY,
  headers: { 'tenant-id': ['acme'], 'correlation-id': ['c-1'] },
  message: { available: true, payload: { type: 'Deposited', amount: 10 }, payload_text: null },
};

async function openRecord() {
  const user = userEvent.setup();
  const gw = stubGateway({
    'GET /admin/poison': { records: [SUMMARY], next_cursor: null },
    'GET /admin/poison/p-1': RECORD,
  });
  await renderAt('poison');
  await user.click(await screen.findByRole('button', { name: 'Inspect balances #1207' }));
  const panel = await screen.findByRole('complementary', { name: 'Poison record balances #1207' });
  await within(panel).findByRole('heading', { name: 'Original payload' });
  return { user, gw, panel };
}

describe('Poison', () => {
  it('says when there are no records', async () => {
    stubGateway({ 'GET /admin/poison': { records: [], next_cursor: null } });
    await renderAt('poison');
    expect(await screen.findByText('No poison records')).toBeInTheDocument();
    expect(screen.getByRole('link', { name: 'Audit trail' })).toHaveAttribute('href', '#/audit');
  });

  it('filters by source and pages with the cursor', async () => {
    const user = userEvent.setup();
    const gw = stubGateway({
      'GET /admin/poison': (call) =>
        call.url.searchParams.get('cursor') === 'c2'
          ? { records: [{ ...SUMMARY, id: 'p-2', sequence: 1300 }], next_cursor: null }
          : { records: [SUMMARY], next_cursor: 'c2' },
    });
    await renderAt('poison');
    await screen.findByRole('button', { name: 'Inspect balances #1207' });
    await user.click(screen.getByRole('button', { name: 'Next page →' }));
    expect(await screen.findByRole('button', { name: 'Inspect balances #1300' })).toBeInTheDocument();
    expect(screen.getByText('Page 2')).toBeInTheDocument();
    await user.click(screen.getByRole('button', { name: '← Previous page' }));
    expect(await screen.findByRole('button', { name: 'Inspect balances #1207' })).toBeInTheDocument();

    await user.type(screen.getByRole('combobox', { name: 'Source' }), 'balances');
    await user.click(screen.getByRole('button', { name: 'Apply filter' }));
    await screen.findByRole('button', { name: 'Clear' });
    const last = gw.callsTo('GET /admin/poison').at(-1);
    expect(last?.url.searchParams.get('source')).toBe('balances');
    expect(last?.url.searchParams.get('limit')).toBe('50');
  });

  it('inspects a record: headers, pretty payload, error, attempts', async () => {
    const { panel } = await openRecord();
    expect(within(panel).getByRole('rowheader', { name: 'tenant-id' })).toBeInTheDocument();
    expect(within(panel).getByText('acme')).toBeInTheDocument();
    expect(within(panel).getByLabelText('Payload').textContent).toBe(
      JSON.stringify({ type: 'Deposited', amount: 10 }, null, 2),
    );
    expect(within(panel).getAllByText('amount overflows u64').length).toBeGreaterThan(0);
  });

  it('purges only after the confirmation', async () => {
    const { user, gw, panel } = await openRecord();
    gw.set({ 'DELETE /admin/poison/p-1': { id: 'p-1', outcome: 'purged' } });

    await user.click(within(panel).getByRole('button', { name: 'Purge' }));
    let dialog = screen.getByRole('dialog', { name: 'Purge this poison record?' });
    await user.click(within(dialog).getByRole('button', { name: 'Cancel' }));
    expect(screen.queryByRole('dialog')).not.toBeInTheDocument();
    expect(gw.callsTo('DELETE /admin/poison/p-1')).toHaveLength(0);

    await user.click(within(panel).getByRole('button', { name: 'Purge' }));
    expect(screen.getByRole('dialog', { name: 'Purge this poison record?' })).toBeInTheDocument();
    await user.keyboard('{Escape}');
    expect(screen.queryByRole('dialog')).not.toBeInTheDocument();
    expect(gw.callsTo('DELETE /admin/poison/p-1')).toHaveLength(0);

    gw.set({ 'GET /admin/poison': { records: [], next_cursor: null } });
    await user.click(within(panel).getByRole('button', { name: 'Purge' }));
    dialog = screen.getByRole('dialog', { name: 'Purge this poison record?' });
    await user.click(within(dialog).getByRole('button', { name: 'Purge record' }));
    expect(await screen.findByRole('status')).toHaveTextContent('Purge of balances #1207: purged');
    expect(gw.callsTo('DELETE /admin/poison/p-1')).toHaveLength(1);
    expect(await screen.findByText('No poison records')).toBeInTheDocument();
    expect(screen.queryByRole('complementary')).not.toBeInTheDocument();
  });

  it('redrives and shows the outcome; a failed redrive keeps the record', async () => {
    const { user, gw, panel } = await openRecord();
    gw.set({
      'POST /admin/poison/p-1/redrive': { id: 'p-1', outcome: 'failed', detail: 'still overflows' },
    });
    await user.click(within(panel).getByRole('button', { name: 'Redrive' }));
    expect(await screen.findByRole('status')).toHaveTextContent('Redrive of balances #1207: failed — still overflows');
    expect(screen.getByRole('complementary', { name: 'Poison record balances #1207' })).toBeInTheDocument();

    gw.set({ 'POST /admin/poison/p-1/redrive': { id: 'p-1', outcome: 'applied', detail: null } });
    await user.click(within(panel).getByRole('button', { name: 'Redrive' }));
    expect(await screen.findByText(/Redrive of balances #1207: applied/)).toBeInTheDocument();
    expect(screen.queryByRole('complementary')).not.toBeInTheDocument();
  });

  it('shows a refused verb as an alert', async () => {
    const { user, gw, panel } = await openRecord();
    gw.set({ 'POST /admin/poison/p-1/redrive': problem(403, 'Forbidden', 'missing right `admin:operate`') });
    await user.click(within(panel).getByRole('button', { name: 'Redrive' }));
    expect(await within(panel).findByRole('alert')).toHaveTextContent('missing right `admin:operate`');
  });

  it('says when the stream no longer holds the message', async () => {
    const user = userEvent.setup();
    stubGateway({
      'GET /admin/poison': { records: [SUMMARY], next_cursor: null },
      'GET /admin/poison/p-1': { ...RECORD, message: { available: false, payload: null, payload_text: null } },
    });
    await renderAt('poison');
    await user.click(await screen.findByRole('button', { name: 'Inspect balances #1207' }));
    expect(await screen.findByText('The stream no longer holds this message.')).toBeInTheDocument();
  });
});
