// Browser tests of the Nimbus portal (run by infra/scripts/e2e.sh, which starts the stack).
// playwright-core drives the system's Chromium headless; every flow goes through the real API,
// workers, OIDC provider and pve-sim. Screenshots are written to $SCREENSHOTS.
//
// Environment: BASE_URL (the API serving the SPA), PVE_URL + PVE_TOKEN (pve-sim, for fault
// injection), API_KEY (the bootstrap admin's key), CHROMIUM, SCREENSHOTS, PROFILE_ROOT (where
// fresh browser profiles are created). The webhook flow starts its own receiver on 127.0.0.1:
// the stack's webhook workers must be allowed to deliver to loopback (WEBHOOK_ALLOW_NETWORKS).

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import http from 'node:http';
import https from 'node:https';
import { chromium } from 'playwright-core';

const BASE = process.env.BASE_URL;
const SHOTS = process.env.SCREENSHOTS;
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic',
  '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const contexts = [];

/** A fresh browser profile; page errors fail the test that is running. */
async function browser() {
  const dir = mkdtempSync(join(process.env.PROFILE_ROOT || '/tmp', 'chromium-'));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM, headless: true, args: FLAGS,
    viewport: { width: 1280, height: 820 },
  });
  contexts.push(context);
  const page = context.pages()[0] || await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e));
  // The page runs under the API's Content-Security-Policy: a violation is a failure too.
  page.on('console', (m) => { if (/Content.Security.Policy/i.test(m.text())) page.errors.push(m.text()); });
  page.setDefaultTimeout(20_000);
  return { context, page };
}

after(async () => { for (const c of contexts) await c.close().catch(() => {}); });

const shot = (page, name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

/** A test that, when it fails, leaves a screenshot of every open page (failed-<n>.png). */
function flow(name, body) {
  test(name, async () => {
    try {
      await body();
    } catch (e) {
      for (const [i, c] of contexts.entries()) {
        for (const p of c.pages()) await p.screenshot({ path: join(SHOTS, `failed-${i}.png`), fullPage: true }).catch(() => {});
      }
      throw e;
    }
  });
}

/** Signs in through the portal's button and the provider's login form. */
async function signIn(page, email, password) {
  await page.goto(`${BASE}/`);
  await page.getByTestId('sign-in').click();
  await page.locator('input[name=login]').fill(email);
  await page.locator('input[name=password]').fill(password);
  await page.locator('button[type=submit]').click();
  await page.waitForURL((u) => u.toString().startsWith(BASE));
  await page.getByTestId('user-name').waitFor();
}

/** The wizard: a template (a VM's by default), a name, optional vCPUs; returns after the submit click. */
async function create(page, name, { cores, template = 'debian-12-cloudinit' } = {}) {
  await page.getByRole('link', { name: 'Create', exact: true }).click();
  await page.locator(`input[name=template][value=${template}]`).check();
  if (cores) await page.locator('#cores').fill(String(cores));
  await page.locator('#name').fill(name);
  await page.getByRole('button', { name: 'Create instance' }).click();
}

/** pve-sim's fault API (self-signed certificate: this one request skips verification). */
function fault(method, body) {
  const url = new URL('/_sim/faults', process.env.PVE_URL);
  return new Promise((resolve, reject) => {
    const req = https.request(url, {
      method, rejectUnauthorized: false,
      headers: { authorization: `PVEAPIToken=${process.env.PVE_TOKEN}`, 'content-type': 'application/json' },
    }, (res) => { res.resume(); res.on('end', () => (res.statusCode < 300 ? resolve() : reject(new Error(`faults: ${res.statusCode}`)))); });
    req.on('error', reject);
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

/** A webhook receiver on a free loopback port: answers 200 and keeps every request it got. */
async function receiver() {
  const received = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => { received.push({ method: req.method, headers: req.headers, body }); res.end('ok'); });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const close = () => { server.closeAllConnections(); return new Promise((resolve) => server.close(resolve)); };
  return { url: `http://127.0.0.1:${server.address().port}/hook`, received, close };
}

let alice;

flow('a customer signs in, creates an instance, watches it to running and finds it in the list', async () => {
  alice = await browser();
  const { page } = alice;
  await page.goto(`${BASE}/instances`);
  await page.getByRole('heading', { name: 'Sign in to Nimbus' }).waitFor();
  await shot(page, '01-sign-in');
  await signIn(page, 'alice@acme.test', 'alice-pass');
  assert.equal(await page.getByTestId('user-name').textContent(), 'Alice Acme');
  assert.equal(await page.getByTestId('user-role').textContent(), 'user');
  assert.equal(await page.getByRole('link', { name: 'Queues' }).count(), 0, 'no operator pages for a customer');

  await create(page, 'web-1');
  await page.waitForURL(/\/jobs\/[0-9a-f-]{36}$/);
  await page.getByTestId('steps').locator('li').first().waitFor();
  await page.locator('.job-head [data-status=succeeded]').waitFor({ timeout: 90_000 });
  assert.equal(await page.getByTestId('job-progress').textContent(), '100%');
  const transport = await page.getByTestId('transport').textContent();
  assert.ok(['live', 'done'].includes(transport), `progress came over SSE, not ${transport}`);
  assert.ok(await page.getByTestId('steps').locator('li').count() >= 3, 'the steps were shown as they happened');
  await shot(page, '03-job-progress');

  await page.getByTestId('instance-link').click();
  await page.getByTestId('ips').waitFor();
  await shot(page, '04-instance-detail');

  await page.getByRole('link', { name: 'Instances', exact: true }).click();
  const row = page.locator('tr[data-name=web-1]');
  await row.locator('[data-status=running]').waitFor();
  await page.locator('#search').fill('nothing-matches');
  await page.getByText('No instance matches your search.').waitFor();
  await page.locator('#search').fill('web');
  await row.waitFor();
  await shot(page, '05-instances');

  await page.getByRole('link', { name: 'Dashboard' }).click();
  await page.getByTestId('count-running').getByText('1').waitFor();
  await shot(page, '02-dashboard');
  assert.deepEqual(page.errors, []);
});

flow('a request over the plan shows the API\'s own message and request id', async () => {
  const { page } = alice;
  await create(page, 'too-big', { cores: 32 });
  const banner = page.locator('.banner.error[data-code=QUOTA_EXCEEDED]');
  await banner.waitFor();
  const text = await banner.textContent();
  assert.match(text, /quota|plan|limit/i, text);
  assert.match(text, /request/, 'the request id is shown for support');
  assert.match(page.url(), /\/instances\/new$/, 'the wizard stays open with what was typed');
  assert.equal(await page.locator('#name').inputValue(), 'too-big');
  await shot(page, '06-over-quota');
});

flow('a customer stops and starts an instance from its page, each action followed to its end', async () => {
  const { page } = alice;
  await page.getByRole('link', { name: 'Instances', exact: true }).click();
  await page.locator('tr[data-name=web-1] a').first().click();
  await page.locator('.page-head [data-status=running]').waitFor();
  assert.equal(await page.getByTestId('action-start').count(), 0, 'no Start for a running instance');
  await page.getByTestId('action-stop').click();
  await page.getByTestId('action-start').waitFor({ timeout: 60_000 });
  await page.locator('.page-head [data-status=stopped]').waitFor();
  await shot(page, '11-instance-stopped');
  await page.getByTestId('action-start').click();
  await page.getByTestId('action-stop').waitFor({ timeout: 60_000 });
  await page.locator('.page-head [data-status=running]').waitFor();
  assert.deepEqual(page.errors, []);
});

/** Answers a typed-name confirmation dialog. */
async function confirmByName(page, name) {
  await page.locator('#confirm-name').fill(name);
  await page.getByTestId('confirm').click();
}

/** Waits until no operation runs on the open instance page. */
const settled = (page) => page.getByTestId('operation').waitFor({ state: 'detached', timeout: 60_000 });

flow('a customer resizes an instance, then takes, rolls back and deletes a snapshot, each followed live', async () => {
  const { page } = alice;
  await page.getByRole('link', { name: 'Instances', exact: true }).click();
  await page.locator('tr[data-name=web-1] a').first().click();
  await page.locator('.page-head [data-status=running]').waitFor();
  const cores = Number(await page.getByTestId('cores').textContent());
  await page.getByTestId('open-resize').click();
  await page.locator('#resize-cores').fill(String(cores + 1));
  await shot(page, '12-resize');
  await page.getByTestId('confirm-resize').click();
  await page.getByTestId('cores').getByText(String(cores + 1), { exact: true }).waitFor({ timeout: 60_000 });
  await settled(page);

  await page.getByTestId('tab-snapshots').click();
  await page.getByText('No snapshots yet.').waitFor();
  await page.locator('#snapshot-name').fill('before-upgrade');
  await page.locator('#snapshot-description').fill('taken by the browser test');
  await page.getByTestId('take-snapshot').click();
  const row = page.locator('tr[data-snapshot=before-upgrade]');
  await row.waitFor({ timeout: 60_000 });
  assert.match(await row.textContent(), /taken by the browser test/);
  await settled(page);
  await shot(page, '13-snapshots');
  await row.getByTestId('rollback').click();
  await confirmByName(page, 'before-upgrade');
  await page.getByTestId('operation').waitFor();
  await settled(page);
  await row.getByTestId('delete-snapshot').click();
  await confirmByName(page, 'before-upgrade');
  await row.waitFor({ state: 'detached', timeout: 60_000 });
  await page.getByText('No snapshots yet.').waitFor();
  // The jobs that did it are in the instance's history.
  for (const kind of ['resize', 'snapshot']) {
    assert.ok(await page.locator(`td:text-is("${kind}")`).count() >= 1, `a ${kind} job in the history`);
  }
  assert.deepEqual(page.errors, []);
});

flow('a customer opens the console of a VM (noVNC) and of a container (xterm.js), then deletes the container', async () => {
  const { page } = alice;
  const before = new Set();
  page.on('request', (r) => before.add(new URL(r.url()).pathname));
  await page.getByRole('link', { name: 'Instances', exact: true }).click();
  await page.locator('tr[data-name=web-1] a').first().click();
  await page.locator('.page-head [data-status=running]').waitFor();
  assert.ok(![...before].some((p) => /novnc|xterm|console-/.test(p)), 'the console code is not fetched before it is needed');
  await page.getByTestId('tab-console').click();
  await page.getByTestId('console-connect').click();
  const screen = page.getByTestId('console-screen');
  await page.locator('[data-testid=console-screen][data-state=connected]').waitFor({ timeout: 30_000 });
  await screen.locator('canvas').first().waitFor();
  await shot(page, '14-console-vnc');
  await page.getByTestId('console-disconnect').click();
  await page.locator('[data-testid=console-state][data-state=disconnected]').waitFor();

  await create(page, 'ct-1', { template: 'debian-12-standard' });
  await page.waitForURL(/\/jobs\//);
  await page.locator('.job-head [data-status=succeeded]').waitFor({ timeout: 90_000 });
  await page.getByTestId('instance-link').click();
  await page.locator('.page-head [data-status=running]').waitFor();
  await page.getByTestId('tab-console').click();
  await page.getByTestId('console-connect').click();
  await page.locator('[data-testid=console-screen][data-state=connected]').waitFor({ timeout: 30_000 });
  await screen.locator('.xterm-rows').getByText('ct-1 login:').waitFor();
  await screen.locator('.xterm').click();
  await page.keyboard.type('root');
  await screen.locator('.xterm-rows').getByText('login: root').waitFor();
  await shot(page, '15-console-terminal');

  await page.getByTestId('tab-overview').click();
  await page.getByTestId('open-delete').click();
  await confirmByName(page, 'ct-1');
  await page.locator('.page-head [data-status=deleted]').waitFor({ timeout: 60_000 });
  await page.getByRole('link', { name: 'Instances', exact: true }).click();
  await page.locator('tr[data-name=web-1]').waitFor();
  assert.equal(await page.locator('tr[data-name=ct-1]').count(), 0, 'a deleted instance leaves the list');
  assert.deepEqual(page.errors, []);
});

flow('a customer backs an instance up, restores the backup as a new instance, and schedules backups with a retention preview', async () => {
  const { page } = alice;
  await create(page, 'bk-1');
  await page.waitForURL(/\/jobs\//);
  await page.locator('.job-head [data-status=succeeded]').waitFor({ timeout: 90_000 });
  await page.getByTestId('instance-link').click();
  await page.locator('.page-head [data-status=running]').waitFor();
  await page.getByRole('tab', { name: 'Backups' }).click();
  await page.getByText('No backups yet.').waitFor();

  // Back up now: the job shows live in the tab (and in the page head), the list is read again at its end.
  await page.getByLabel('Note', { exact: true }).fill('before the e2e restore');
  await page.getByRole('button', { name: 'Back up now' }).click();
  const row = page.locator('tr[data-backup]').first();
  await row.waitFor({ timeout: 90_000 });
  await settled(page);
  assert.match(await row.textContent(), /before the e2e restore/);
  assert.match(await row.textContent(), /Nimbus/, 'the origin badge');
  assert.match(await row.getAttribute('data-backup'), /^vzdump-/, 'a backup is named by its archive');
  await page.locator('td:text-is("backup")').first().waitFor(); // the backup job is in the history
  await shot(page, '17-backups');

  // Protection: answered at once; a protected backup cannot be deleted.
  await row.getByRole('button', { name: 'Protect', exact: true }).click();
  await row.getByTestId('protected').waitFor();
  assert.equal(await row.getByRole('button', { name: 'Delete', exact: true }).isDisabled(), true);
  await row.getByRole('button', { name: 'Unprotect' }).click();
  await row.getByTestId('protected').waitFor({ state: 'detached' });
  assert.equal(await row.getByRole('button', { name: 'Delete', exact: true }).isDisabled(), false);

  // Restore as new: a create like the wizard's, followed on its job's page to a running instance.
  await row.getByRole('button', { name: 'Restore as new' }).click();
  await page.getByLabel('New instance name').fill('bk-1-copy');
  await page.getByRole('button', { name: 'Restore to new instance' }).click();
  await page.waitForURL(/\/jobs\/[0-9a-f-]{36}$/);
  await page.locator('.job-head [data-status=succeeded]').waitFor({ timeout: 120_000 });
  assert.equal(await page.getByTestId('job-kind').textContent(), 'restore');
  await page.getByTestId('instance-link').click();
  await page.locator('.page-head h1').getByText('bk-1-copy').waitFor();
  await page.locator('.page-head [data-status=running]').waitFor({ timeout: 60_000 });
  await page.getByRole('link', { name: 'Instances', exact: true }).click();
  await page.locator('tr[data-name=bk-1-copy] [data-status=running]').waitFor();

  // The schedule and retention of the original: a refused cron shows the API's field error, the
  // preview marks the one backup kept, and the saved policy has a next run.
  await page.locator('tr[data-name=bk-1] a').first().click();
  await page.locator('.page-head [data-status=running]').waitFor();
  await page.getByRole('tab', { name: 'Backups' }).click();
  await page.getByTestId('next-run').waitFor();
  assert.equal(await page.getByTestId('next-run').textContent(), 'not scheduled');
  assert.match(await page.getByTestId('policy-limits').textContent(), /at most \d+ backups kept/);
  const schedule = page.getByLabel('Schedule', { exact: true });
  await schedule.selectOption('custom');
  await page.getByLabel('Cron expression (UTC)').fill('* * * * *');
  await page.getByLabel('Keep last').fill('2');
  for (const label of ['Keep daily', 'Keep weekly', 'Keep monthly']) await page.getByLabel(label).fill('0');
  await page.getByRole('button', { name: 'Save schedule' }).click();
  const refused = page.locator('.banner.error[data-code=VALIDATION_FAILED]');
  await refused.waitFor();
  assert.match(await refused.textContent(), /schedule: /, 'the field the API refused');
  await schedule.selectOption('daily');
  await page.getByRole('button', { name: 'Preview retention' }).click();
  const preview = page.getByTestId('retention-preview');
  await preview.locator('tr[data-preview]').first().waitFor();
  assert.equal(await preview.locator('tr[data-preview]').count(), 1);
  assert.equal(await preview.locator('tr[data-preview] [data-status=keep]').count(), 1, 'the backup is kept');
  assert.equal(await page.getByTestId('prune-removes').getAttribute('data-removes'), '0');
  await shot(page, '18-backup-policy');
  await page.getByRole('button', { name: 'Save schedule' }).click();
  await page.locator('.banner.ok').getByText(/^Saved\. Next run: /).waitFor();
  assert.match(await page.getByTestId('next-run').textContent(), /^\d{4}-\d\d-\d\d \d\d:\d\d UTC$/);
  assert.equal(await refused.count(), 0, 'the refusal is gone once saved');

  // Turned off again, so no backup fires while the other flows run.
  await page.getByRole('button', { name: 'Turn off' }).click();
  await page.locator('[data-testid=next-run]:text-is("not scheduled")').waitFor();
  assert.deepEqual(page.errors, []);
});

flow('an expired session shows a page that says so, and signing in again returns there', async () => {
  const { page, context } = alice;
  await page.getByRole('link', { name: 'Instances', exact: true }).click();
  await page.locator('tr[data-name=web-1]').waitFor();
  await context.clearCookies();
  await page.getByRole('heading', { name: 'Your session has expired' }).waitFor({ timeout: 15_000 });
  await shot(page, '07-session-expired');
  await page.getByTestId('sign-in').click();
  await page.locator('input[name=login]').fill('alice@acme.test');
  await page.locator('input[name=password]').fill('alice-pass');
  await page.locator('button[type=submit]').click();
  await page.waitForURL(`${BASE}/instances`);
  await page.locator('tr[data-name=web-1]').waitFor();
  assert.deepEqual(page.errors, []);
});

flow('a customer creates an API key, sees its token once, and revokes it after typing its name', async () => {
  const { page } = alice;
  await page.getByRole('link', { name: 'API keys' }).click();
  await page.locator('#key-name').fill('ci');
  await page.getByRole('button', { name: 'Create key' }).click();
  const token = (await page.getByTestId('new-token').locator('code').textContent()).trim();
  assert.match(token, /^nmb_/);
  const me = await page.request.get(`${BASE}/v1/me`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(me.status(), 200, 'the new key works');
  await page.getByRole('button', { name: 'Done' }).click();

  const row = page.locator('tr[data-key=ci]');
  await row.locator('[data-status=active]').waitFor();
  await row.getByTestId('revoke').click();
  const confirm = page.getByTestId('confirm');
  assert.equal(await confirm.isDisabled(), true, 'nothing is revoked before the name is typed');
  await page.locator('#confirm-name').fill('c');
  assert.equal(await confirm.isDisabled(), true);
  await page.locator('#confirm-name').fill('ci');
  await shot(page, '10-confirm-revoke');
  await page.locator('#confirm-name').press('Enter');
  await page.locator('.banner.ok').getByText('revoked').waitFor();
  await row.locator('[data-status=revoked]').waitFor();
  assert.equal(await row.getByTestId('revoke').count(), 0);
  const after = await page.request.get(`${BASE}/v1/me`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(after.status(), 401, 'the revoked key is refused');
  assert.deepEqual(page.errors, []);
});

flow('a customer sees the month to date on the dashboard and, on the Billing page, the breakdown, the invoices and the prepaid balance', async () => {
  const { page } = alice;
  // The stack's plans are free and no month has ended yet: amounts are zero (written as the API
  // writes them, with the plan's currency) and there is no invoice and no balance entry.
  const amount = /^\d+(\.\d+)?( [A-Z]{3})?$/;
  await page.getByRole('link', { name: 'Dashboard', exact: true }).click();
  const spend = page.getByTestId('month-spend');
  await spend.waitFor();
  assert.match(await spend.textContent(), /^This month: \d+(\.\d+)?( [A-Z]{3})?, forecast \d+(\.\d+)?( [A-Z]{3})?$/);
  await spend.click();
  await page.waitForURL(`${BASE}/billing`);
  await page.getByRole('heading', { name: 'Billing', exact: true }).waitFor();
  await page.getByRole('heading', { name: 'Month to date' }).waitFor();
  assert.match(await page.getByTestId('month-total').textContent(), amount);
  assert.match(await page.getByTestId('forecast').textContent(), amount);
  assert.match(await page.getByTestId('period').textContent(), /^\d{4}-\d\d-01 – \d{4}-\d\d-\d\d$/, 'the month, its days');
  await page.getByRole('heading', { name: 'Invoices' }).waitFor();
  await page.getByTestId('no-invoices').waitFor();
  assert.equal(await page.locator('tr[data-invoice]').count(), 0);
  await page.getByRole('heading', { name: 'Balance' }).waitFor();
  assert.match(await page.getByTestId('balance').textContent(), /^0(\.0+)?( [A-Z]{3})?$/);
  await page.getByTestId('no-entries').waitFor();
  await shot(page, '19-billing');

  // The navigation leads there too.
  await page.getByRole('link', { name: 'Dashboard', exact: true }).click();
  await page.getByTestId('month-spend').waitFor();
  await page.getByRole('link', { name: 'Billing', exact: true }).click();
  await page.waitForURL(`${BASE}/billing`);
  await page.getByTestId('month-total').waitFor();
  assert.deepEqual(page.errors, []);
});

flow('a customer adds a webhook endpoint, sends it a test event signed with the secret shown once, and clears the bell', async () => {
  const { page } = alice;
  const hook = await receiver();
  try {
    await page.getByRole('link', { name: 'Webhooks', exact: true }).click();
    await page.getByRole('heading', { name: 'Webhooks', exact: true }).waitFor();
    await page.locator('#webhook-url').fill(hook.url);
    await page.locator('#webhook-description').fill('e2e receiver');
    await page.getByTestId('event-types').getByLabel('apikey.created').check();
    await page.getByRole('button', { name: 'Create endpoint' }).click();
    const secret = (await page.getByTestId('new-secret').locator('code').textContent()).trim();
    assert.match(secret, /^whsec_[A-Za-z0-9+/=]+$/);
    const row = page.locator(`tr[data-webhook="${hook.url}"]`);
    await row.locator('[data-status=enabled]').waitFor();
    assert.match(await row.textContent(), /apikey\.created/);
    await shot(page, '22-webhooks');
    await page.getByRole('button', { name: 'Done' }).click();
    await page.getByTestId('new-secret').waitFor({ state: 'detached' });

    // The endpoint's page: a test event, delivered and logged with its attempt.
    await row.getByRole('link').click();
    await page.waitForURL(/\/webhooks\/[0-9a-f-]{36}$/);
    await page.locator('.page-head h1').getByText(hook.url).waitFor();
    assert.equal(await page.getByTestId('new-secret').count(), 0, 'the secret is shown only once');
    await page.getByRole('button', { name: 'Send test event' }).click();
    await page.locator('.banner.ok').getByText(/^Test event \w+ sent/).waitFor();
    const delivery = page.locator('tr[data-event-type="webhook.test"]').first();
    await delivery.locator('[data-status=succeeded]').waitFor({ timeout: 60_000 });
    assert.equal(hook.received.length, 1, 'the receiver got the test event, once');
    const [sent] = hook.received;
    assert.equal(sent.method, 'POST');
    const [id, timestamp, signature] = ['webhook-id', 'webhook-timestamp', 'webhook-signature'].map((h) => sent.headers[h]);
    assert.ok(id && timestamp && signature, `Standard Webhooks headers: ${JSON.stringify(sent.headers)}`);
    assert.ok(Math.abs(Date.now() / 1000 - Number(timestamp)) < 300, 'a current timestamp');
    const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
    const expected = createHmac('sha256', key).update(`${id}.${timestamp}.${sent.body}`).digest('base64');
    assert.ok(signature.split(' ').includes(`v1,${expected}`), 'signed with the secret shown');
    assert.match(sent.body, /"webhook\.test"/);
    await delivery.getByRole('button', { name: 'webhook.test' }).click();
    const attempt = page.getByTestId('delivery').locator('tr[data-attempt]').first();
    await attempt.waitFor();
    assert.equal((await attempt.getByTestId('attempt-status').textContent()).trim(), '200');
    assert.match(await page.getByTestId('payload').textContent(), /"webhook\.test"/);
    await shot(page, '23-webhook-delivery');

    // The bell: emptied first, then a new API key (an `apikey.created` notification) shows in it.
    const bell = page.getByTestId('bell');
    const menu = page.getByTestId('notifications');
    await bell.click();
    await menu.getByRole('button', { name: 'Mark all read' }).click();
    await page.locator('[data-testid=bell][data-count="0"]').waitFor();
    await page.keyboard.press('Escape');
    await menu.waitFor({ state: 'detached' });
    await page.getByRole('link', { name: 'API keys' }).click();
    await page.locator('#key-name').fill('webhook-e2e');
    await page.getByRole('button', { name: 'Create key' }).click();
    await page.getByTestId('new-token').waitFor();
    await page.getByRole('button', { name: 'Done' }).click();
    await page.getByTestId('unread-count').waitFor({ timeout: 30_000 });
    assert.ok(Number(await bell.getAttribute('data-count')) > 0, 'the bell counts the new notification');
    assert.ok(Number(await page.getByTestId('unread-count').textContent()) > 0);
    await bell.click();
    await menu.locator('li[data-unread=true]').getByText(/webhook-e2e/).waitFor();
    await shot(page, '24-notifications');
    await menu.getByRole('button', { name: 'Mark all read' }).click();
    await page.locator('[data-testid=bell][data-count="0"]').waitFor();
    await page.getByTestId('unread-count').waitFor({ state: 'detached' });
    await menu.locator('li[data-unread=false]').first().waitFor();
    await menu.locator('li[data-unread=true]').first().waitFor({ state: 'detached' }); // every item shows as read

    // The settings are one click away.
    await menu.getByRole('link', { name: 'Notification settings' }).click();
    await page.waitForURL(`${BASE}/settings/notifications`);
    await page.locator('tr[data-type="apikey.created"]').waitFor();

    // Deleted again (its URL typed), so no later event is sent to a receiver that is gone.
    await page.getByRole('link', { name: 'Webhooks', exact: true }).click();
    await row.getByRole('link').click();
    await page.getByRole('button', { name: 'Delete' }).click();
    await confirmByName(page, hook.url);
    await page.waitForURL(`${BASE}/webhooks`);
    await row.waitFor({ state: 'detached' });
    assert.deepEqual(page.errors, []);
  } finally {
    await hook.close();
  }
});

flow('an operator sees the queues, retries a failed job and sees the nodes', async () => {
  const { page } = await browser();
  await signIn(page, 'admin@nimbus.test', 'admin-pass');
  assert.equal(await page.getByTestId('user-role').textContent(), 'admin');

  await fault('POST', { type: 'error', pattern: '^POST .*/clone$', rate: 1.0, status: 500, message: 'clone refused by the e2e test' });
  try {
    await create(page, 'db-1');
    await page.waitForURL(/\/jobs\//);
    await page.locator('.job-head [data-status=failed]').waitFor({ timeout: 60_000 });
    await page.getByTestId('job-error').waitFor();
  } finally {
    await fault('DELETE');
  }

  await page.getByRole('link', { name: 'Queues' }).click();
  const queue = page.locator('tr[data-queue=provision]');
  await queue.waitFor();
  assert.equal(await queue.getByTestId('failed').textContent(), '1');
  const failed = page.getByTestId('failed-jobs').locator('tr[data-job]');
  await failed.first().waitFor();
  assert.match(await failed.first().textContent(), /clone refused by the e2e test/);
  await shot(page, '08-queues');

  await failed.first().getByTestId('retry').click();
  await page.locator('.banner.ok').getByText('re-queued').waitFor();
  await page.getByTestId('no-failed').waitFor({ timeout: 60_000 });
  await page.getByRole('link', { name: 'Instances', exact: true }).click();
  await page.locator('tr[data-name=db-1] [data-status=running]').waitFor({ timeout: 90_000 });

  await page.getByRole('link', { name: 'Nodes' }).click();
  await page.locator('.card.node').nth(2).waitFor();
  assert.equal(await page.locator('.card.node').count(), 3);
  await shot(page, '09-nodes');

  // Every tenant's webhook endpoints and their health (the customer's flow deleted its own).
  await page.getByRole('link', { name: 'Hooks', exact: true }).click();
  await page.locator('h1', { hasText: 'Webhooks' }).waitFor();
  await page.getByText('No tenant has a webhook endpoint.').or(page.getByTestId('webhook-health')).waitFor();

  // Every tenant's instances; acting on one as its tenant, then back.
  await page.getByRole('link', { name: 'All instances' }).click();
  const theirs = page.locator('tr[data-name=web-1]');
  await theirs.waitFor();
  await page.locator('#filter-status').selectOption('stopped');
  await page.getByText('No instance matches these filters.').waitFor();
  await page.locator('#filter-status').selectOption('running');
  await theirs.waitFor();
  await shot(page, '10-all-instances');
  await theirs.getByTestId('act-as-tenant').click();
  await page.getByTestId('impersonating').waitFor();
  await page.locator('.page-head h1').getByText('web-1').waitFor();
  assert.match(await page.getByTestId('impersonating').textContent(), /acting as Alice Acme of /);
  await page.getByTestId('action-reboot').waitFor();
  await page.getByTestId('stop-impersonating').click();
  await page.waitForURL(`${BASE}/admin/instances`);
  await page.getByTestId('impersonating').waitFor({ state: 'detached' });

  // The schedules: the system's metering caught up the hours it missed (each hour's job ran), and can be paused.
  await page.getByRole('link', { name: 'Schedules' }).click();
  const metering = page.locator('tr[data-schedule="hourly metering"]');
  await metering.getByText('succeeded').waitFor({ timeout: 30_000 });
  assert.match(await metering.textContent(), /catch_up_all/);
  await shot(page, '16-schedules');
  await metering.getByTestId('pause').click();
  await metering.locator('[data-status=paused]').waitFor();
  await metering.getByTestId('resume').click();
  await metering.locator('[data-status=active]').waitFor();
  assert.deepEqual(page.errors, []);
});

flow('a billing operator credits a tenant and suspends it; the tenant is told why on its Billing page', async () => {
  // Bob's first sign-in makes his tenant: one without instances, safe to suspend.
  const { page: bob } = await browser();
  await signIn(bob, 'bob@globex.test', 'bob-pass');
  const { page } = await browser();
  await signIn(page, 'admin@nimbus.test', 'admin-pass');
  await page.getByRole('link', { name: 'Revenue' }).click();
  await page.getByRole('heading', { name: 'Revenue and balances' }).waitFor();
  await page.getByTestId('accrued').waitFor();
  const row = page.locator('tr[data-tenant="Bob Globex"]');
  await page.getByTestId('no-tenants').waitFor(); // nobody needs attention yet
  await page.getByLabel('Only those that need attention').uncheck();
  await row.locator('[data-status=ok]').waitFor();

  // An adjustment without a reason is refused in the dialog, with the field the API named.
  await row.getByRole('button', { name: 'Add credit' }).click();
  await page.getByLabel('Amount').fill('25');
  await page.getByLabel('Kind').selectOption('adjustment');
  await page.getByTestId('tenant-submit').click();
  const refused = page.locator('.dialog .banner.error[data-code=VALIDATION_FAILED]');
  await refused.waitFor();
  assert.match(await refused.textContent(), /reason: /);
  await page.getByLabel('Reason').fill('goodwill');
  await page.getByTestId('tenant-submit').click();
  await page.locator('.banner.ok').getByText('Credit added to Bob Globex.').waitFor();
  await row.locator('td:text-is("25")').waitFor();

  await row.getByRole('button', { name: 'Suspend' }).click();
  await page.getByLabel('Reason').fill('e2e hold');
  await page.getByTestId('tenant-submit').click();
  await row.locator('[data-status=suspended]').waitFor();
  assert.match(await row.textContent(), /e2e hold/);
  await page.getByLabel('Only those that need attention').check();
  await page.locator('tr[data-tenant="Alice Acme"]').waitFor({ state: 'detached' });
  await row.locator('[data-status=suspended]').waitFor();
  await shot(page, '20-admin-billing');

  // The tenant sees the suspension and its reason, and its writes are refused.
  await bob.getByRole('link', { name: 'Billing', exact: true }).click();
  assert.match(await bob.getByTestId('standing').textContent(), /suspended \(e2e hold\)/);
  await shot(bob, '21-billing-suspended');
  await bob.getByRole('link', { name: 'API keys' }).click();
  await bob.locator('#key-name').fill('ci');
  await bob.getByRole('button', { name: 'Create key' }).click();
  await bob.locator('.banner.error[data-code=TENANT_SUSPENDED]').waitFor();

  await row.getByRole('button', { name: 'Unsuspend' }).click();
  await page.locator('.banner.ok').getByText('Bob Globex unsuspended.').waitFor();
  await row.waitFor({ state: 'detached' }); // fine again: out of the attention list
  await bob.getByRole('link', { name: 'Billing', exact: true }).click();
  await bob.getByTestId('balance').getByText(/^25/).waitFor();
  assert.equal(await bob.getByTestId('standing').count(), 0);
  assert.deepEqual(page.errors, []);
  assert.deepEqual(bob.errors, []);
});

flow('an API key signs in too, and job progress falls back to polling (EventSource cannot send it)', async () => {
  const { page } = await browser();
  await page.goto(`${BASE}/`);
  await page.getByText('Use an API key instead').click();
  await page.locator('#api-key').fill('nmb_not-a-real-key');
  await page.getByRole('button', { name: 'Sign in with key' }).click();
  await page.locator('.banner.error[data-code=UNAUTHENTICATED]').waitFor();
  await page.locator('#api-key').fill(process.env.API_KEY);
  await page.getByRole('button', { name: 'Sign in with key' }).click();
  assert.equal(await page.getByTestId('user-name').textContent(), 'admin@nimbus.test');
  assert.equal(await page.getByTestId('user-tenant').textContent(), 'Operators');

  await create(page, 'key-1');
  await page.waitForURL(/\/jobs\//);
  await page.locator('.job-head [data-status=succeeded]').waitFor({ timeout: 90_000 });
  assert.equal(await page.getByTestId('transport').textContent(), 'polling');

  await page.getByTestId('sign-out').click();
  await page.getByRole('heading', { name: 'Sign in to Nimbus' }).waitFor();
  assert.deepEqual(page.errors, []);
});

flow('the API reference renders the OpenAPI document under its own CSP, from our origin only', async () => {
  const { page } = await browser();
  const elsewhere = [];
  page.on('request', (r) => { if (!r.url().startsWith(BASE) && !/^(data|blob):/.test(r.url())) elsewhere.push(r.url()); });
  const response = await page.goto(`${BASE}/v1/docs`);
  assert.match(response.headers()['content-security-policy'], /script-src 'self';/);
  // Redoc lists the operations by their summaries and shows each one's path.
  await page.getByRole('heading', { name: 'Nimbus API' }).first().waitFor({ timeout: 30_000 });
  await page.locator('h2', { hasText: 'Creates a VM or container from a template' }).first().waitFor();
  await page.getByText('/v1/vms/{id}/snapshots').first().waitFor();
  await shot(page, 'api-reference');
  assert.deepEqual(elsewhere, [], 'the reference loads nothing from another origin');
  assert.deepEqual(page.errors, []);
});
