// End-to-end test of the Control UI against a REAL running Gateway (`cloudlysis dev`):
//
//   CLOUDLYSIS_UI_URL=http://127.0.0.1:8080 CLOUDLYSIS_UI_TOKEN=<jwt> npm run e2e
//
// Options: CLOUDLYSIS_UI_EXPECT_POISON=1 (a poison record exists: inspect and redrive it, then find
// `poison.redrive` in the audit trail), CHROMIUM_BIN (default /usr/bin/chromium),
// CLOUDLYSIS_UI_HEADFUL=1 (show the browser). Screenshots of every screen go to artifacts/.
//
// Uses playwright-core with Debian's Chromium (no browser download). The flow is one test per
// screen, in order, sharing one page; each step waits for what an operator would see.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Locator, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const BASE = (process.env.CLOUDLYSIS_UI_URL ?? '').replace(/\/+$/, '');
const TOKEN = process.env.CLOUDLYSIS_UI_TOKEN ?? '';
const EXPECT_POISON = process.env.CLOUDLYSIS_UI_EXPECT_POISON === '1';
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const ARTIFACTS = fileURLToPath(new URL('../artifacts/', import.meta.url));
/** How long a step may wait for the UI (a view rebuild gets longer). */
const STEP_MS = 20_000;
const REBUILD_MS = 90_000;

if (BASE === '' || TOKEN === '') {
  throw new Error(
    'Set CLOUDLYSIS_UI_URL (the Gateway, e.g. http://127.0.0.1:8080) and CLOUDLYSIS_UI_TOKEN (a token `cloudlysis dev` printed).',
  );
}

let browser: Browser | undefined;
let context: BrowserContext | undefined;
let page: Page;
const pageErrors: string[] = [];
/** Set by the first step: later steps fail at once without it rather than each timing out. */
let signedIn = false;

function requireSignIn(): void {
  if (!signedIn) throw new Error('not signed in: see the first step');
}

async function shot(name: string): Promise<void> {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

async function openScreen(label: string): Promise<void> {
  await page.getByRole('navigation', { name: 'Screens' }).getByRole('link', { name: label, exact: true }).click();
  await page.getByRole('heading', { level: 1, name: label, exact: true }).waitFor({ timeout: STEP_MS });
}

/** Waits until `locator` matches at least one element; fails with `what` otherwise. */
async function expectSome(locator: Locator, what: string, timeout = STEP_MS): Promise<void> {
  try {
    await locator.first().waitFor({ state: 'visible', timeout });
  } catch {
    const alerts = await page.getByRole('alert').allInnerTexts();
    throw new Error(`expected ${what}${alerts.length ? `; the page shows: ${alerts.join(' | ')}` : ''}`);
  }
}

/** The text of `row`'s cell under the column headed `column` of `table`. */
async function cellText(table: Locator, row: Locator, column: string): Promise<string> {
  const headers = await table.getByRole('columnheader').allInnerTexts();
  const index = headers.findIndex((h) => h.trim() === column);
  if (index < 0) throw new Error(`no column ${column} in ${headers.join(', ')}`);
  return (await row.getByRole('cell').or(row.getByRole('rowheader')).nth(index).innerText()).trim();
}

async function whoami(): Promise<{ subject: string; tenant: string }> {
  const res = await fetch(`${BASE}/admin/whoami`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  if (!res.ok) throw new Error(`GET /admin/whoami answered ${res.status}: ${await res.text()}`);
  return (await res.json()) as { subject: string; tenant: string };
}

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  // Playwright gives the browser a fresh, empty profile of its own (it refuses --user-data-dir).
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: process.env.CLOUDLYSIS_UI_HEADFUL !== '1',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ].filter((a) => process.env.CLOUDLYSIS_UI_HEADFUL !== '1' || a !== '--headless'),
  });
  context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  page = await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(err.message));
  page.on('console', (msg) => {
    if (msg.type() === 'error') console.warn(`[browser] ${msg.text()}`);
  });
});

afterAll(async () => {
  await context?.close().catch(() => undefined);
  await browser?.close().catch(() => undefined);
});

describe('Control UI against a running Gateway', () => {
  it('signs in from #token= and shows the subject', async () => {
    const who = await whoami();
    await page.goto(`${BASE}/ui/#token=${encodeURIComponent(TOKEN)}`);
    const header = page.getByLabel('Signed in');
    await expectSome(header.getByText(who.subject, { exact: true }), `the subject ${who.subject} in the header`);
    await expectSome(header.getByText(who.tenant, { exact: true }), `the tenant ${who.tenant} in the header`);
    expect(page.url()).not.toContain('token=');
    signedIn = true;
  });

  it('Nodes lists aggregate, projection and runner nodes', async () => {
    requireSignIn();
    await page.getByRole('heading', { level: 1, name: 'Nodes' }).waitFor({ timeout: STEP_MS });
    const table = page.getByRole('table', { name: 'Nodes' });
    await expectSome(table, 'the nodes table');
    const role = page.getByRole('combobox', { name: 'Role' });
    for (const r of ['aggregate', 'projection', 'runner']) {
      await role.selectOption(r);
      // Header row + at least one node of this role.
      await expectSome(table.getByRole('row').nth(1), `a ${r} node`);
      const rows = table.getByRole('row');
      const first = (await rows.nth(1).getByRole('cell').first().innerText()).trim();
      expect(first).toBe(r);
    }
    await role.selectOption('');
    await shot('nodes');
  });

  it('Supervision shows a tree with a mailbox pressure bar', async () => {
    requireSignIn();
    await openScreen('Supervision');
    await expectSome(page.getByRole('columnheader', { name: 'Child' }), 'a supervision tree');
    await expectSome(page.getByRole('meter', { name: /^mailbox \d+ of \d+$/ }), 'a mailbox bar');
    await shot('supervision');
  });

  it('Views shows balances; Rebuild shows progress and ends with a higher generation', async () => {
    requireSignIn();
    await openScreen('Views');
    const table = page.getByRole('table', { name: 'Views' });
    const row = table.getByRole('row').filter({ has: page.getByRole('rowheader', { name: 'balances', exact: true }) });
    await expectSome(row, 'the view balances');
    const checkpoint = await cellText(table, row, 'Checkpoint');
    expect(checkpoint).toMatch(/^[\d,]+$/);
    const before = Number(await cellText(table, row, 'Generation'));
    expect(Number.isInteger(before)).toBe(true);

    // Any progress bar that appears, however briefly, counts.
    await page.evaluate(() => {
      const w = window as unknown as { __sawProgress: boolean };
      w.__sawProgress = false;
      const check = () => {
        if (document.querySelector('[role="progressbar"]')) w.__sawProgress = true;
      };
      new MutationObserver(check).observe(document.body, { childList: true, subtree: true, attributes: true });
      check();
    });
    await row.getByRole('button', { name: 'Rebuild balances' }).click();
    const dialog = page.getByRole('dialog', { name: 'Rebuild balances?' });
    await dialog.waitFor({ timeout: STEP_MS });
    await dialog.getByRole('button', { name: 'Start rebuild' }).click();
    await expectSome(page.getByRole('progressbar', { name: /Rebuild of balances/ }), 'rebuild progress', STEP_MS).catch(
      async (err: unknown) => {
        // A rebuild quicker than a poll is over before a bar can be seen; the observer saw it.
        if (!(await page.evaluate(() => (window as unknown as { __sawProgress: boolean }).__sawProgress))) throw err;
      },
    );
    await shot('views-rebuilding');
    await expect
      .poll(async () => Number(await cellText(table, row, 'Generation')), { timeout: REBUILD_MS, interval: 500 })
      .toBeGreaterThan(before);
    expect(await page.evaluate(() => (window as unknown as { __sawProgress: boolean }).__sawProgress)).toBe(true);
    await expectSome(page.getByRole('status').filter({ hasText: /Rebuild of balances finished/ }), 'the finished notice');
    await shot('views');
  });

  it('Poison loads (and, with a record, inspects and redrives it)', async () => {
    requireSignIn();
    await openScreen('Poison');
    const table = page.getByRole('table', { name: 'Poison records' });
    await expectSome(table.or(page.getByText('No poison records')), 'the poison table or its empty state');
    if (!EXPECT_POISON) {
      await shot('poison');
      return;
    }
    await expectSome(table, 'a poison record');
    const inspect = table.getByRole('button', { name: /^Inspect / }).first();
    await inspect.click();
    const panel = page.getByRole('complementary', { name: /^Poison record / });
    await expectSome(panel.getByRole('heading', { name: 'Original payload' }), 'the inspect panel');
    const payload = panel.getByLabel('Payload');
    await expectSome(payload.or(panel.getByText('The stream no longer holds this message.')), 'the payload');
    if (await payload.count()) expect((await payload.innerText()).trim().length).toBeGreaterThan(0);
    await shot('poison-inspect');
    await panel.getByRole('button', { name: 'Redrive' }).click();
    await expectSome(page.getByRole('status').filter({ hasText: /Redrive of .*: (applied|already gone)/ }), 'a redrive outcome');
    await shot('poison');
  });

  it('Audit lists entries, newest first', async () => {
    requireSignIn();
    await openScreen('Audit');
    const table = page.getByRole('table', { name: /Audit entries/ });
    if (EXPECT_POISON) {
      await expectSome(table.getByRole('cell', { name: 'poison.redrive', exact: true }), 'a poison.redrive entry');
    } else {
      await expectSome(table.or(page.getByText('No audit entries')), 'the audit table or its empty state');
    }
    await shot('audit');
  });

  it('Runners shows runner nodes', async () => {
    requireSignIn();
    await openScreen('Runners');
    await expectSome(
      page.getByRole('table', { name: 'Runner nodes' }).or(page.getByText('No runner nodes')),
      'the runners table',
    );
    await shot('runners');
  });

  it('Workflows lists transfer', async () => {
    requireSignIn();
    await openScreen('Workflows');
    const picker = page.getByRole('combobox', { name: 'Workflow' });
    await expectSome(picker, 'the workflow picker');
    await expect.poll(() => picker.getByRole('option').allInnerTexts(), { timeout: STEP_MS }).toContain('transfer');
    await picker.selectOption('transfer');
    const table = page.getByRole('table', { name: 'Instances of transfer' });
    await expectSome(table.or(page.getByText(/^No (\w+ )?instances of transfer$/)), 'transfer instances or their empty state');
    await shot('workflows');
    if (await table.count()) {
      await table.getByRole('rowheader').first().getByRole('link').click();
      await expectSome(page.getByRole('heading', { name: 'State' }), 'an instance');
      await shot('workflow-instance');
    }
  });

  it('raised no uncaught page errors', () => {
    expect(pageErrors).toEqual([]);
  });
});
