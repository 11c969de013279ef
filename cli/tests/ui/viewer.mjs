// Drives Debian's Chromium (a fresh profile each run, which playwright makes and removes) through agentq's session viewer, as a person would: sign in, start a
// session and watch it finish, approve a held sql_query call, read a web page holding <script>.
// cli/tests/it/ui.rs starts the API, the worker and the stand-in model, then runs this with:
//   AGENTQ_UI_URL    the API's address
//   AGENTQ_UI_KEY    a key of the org
//   AGENTQ_UI_SHOTS  where the screenshots go
//   AGENTQ_UI_HOOK   a webhook receiver that answers 204
// It prints `drop-the-stream` while a session waits for approval, and goes on when a line comes
// on stdin: the test restarts the API meanwhile, so the page's event stream really drops.
// Exits 0 when every check held; otherwise prints what failed and exits 1.
import { mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const url = process.env.AGENTQ_UI_URL;
const key = process.env.AGENTQ_UI_KEY;
const shots = process.env.AGENTQ_UI_SHOTS;
const hook = process.env.AGENTQ_UI_HOOK;
const WAIT = 30_000;
const stdin = createInterface({ input: process.stdin });
mkdirSync(shots, { recursive: true });

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
  console.log(`ok: ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
const problems = [];
let page = null;
try {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  // The page must never break its own Content-Security-Policy or throw.
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  const requested = [];
  page.on('request', (r) => requested.push(r.url()));

  const response = await page.goto(`${url}/ui`);
  const csp = response.headers()['content-security-policy'] || '';
  check(csp.includes("script-src 'self'") && csp.includes("default-src 'none'"), 'a strict Content-Security-Policy');

  // Sign in with the keyboard alone; a wrong key is refused first.
  await page.locator('#api-key').waitFor();
  await page.keyboard.type('aq_wrong');
  await page.keyboard.press('Enter');
  await page.locator('#sign-in-error', { hasText: 'refused' }).waitFor();
  check(true, 'a wrong key is refused');
  await page.locator('#api-key').fill('');
  await page.keyboard.type(key);
  await page.keyboard.press('Enter');
  await page.locator('#sessions').waitFor();
  check(await page.evaluate((k) => sessionStorage.getItem('agentq.key') === k, key), 'the key is kept in session storage');

  // Start a session from the page and watch it finish on the timeline, without a reload.
  await page.getByRole('link', { name: 'New session' }).first().click();
  await page.locator('#question').fill('marker-ui-run: what does echo say?');
  await page.locator('#tool-echo').check();
  await page.getByRole('button', { name: 'Start' }).click();
  await page.waitForURL(/#\/s\/[0-9a-f-]{36}$/);
  const runId = page.url().split('/s/')[1];
  let loads = 0;
  page.on('load', () => { loads += 1; });
  await page.locator('#final-answer', { hasText: 'echo said hello' }).waitFor();
  await page.locator('#summary [data-status="completed"]').waitFor();
  check(loads === 0, 'the timeline went live without a reload');
  check(await page.locator('#steps article').count() === 2, 'two steps on the timeline');
  for (const part of ['#summary', '#outcome']) {
    check(!/\bnull\b|undefined/.test(await page.locator(part).innerText()), `${part} shows no placeholder`);
  }
  const step0 = page.locator('#steps article[data-step="0"]');
  check((await step0.locator('.tool').innerText()) === 'echo', 'the tool call is named');
  check((await step0.locator('pre.args').innerText()).includes('"text": "hello"'), 'its arguments as formatted JSON');
  check((await step0.locator('.observation').innerText()).includes('hello'), 'its result');
  // The times come from the event stream, which may trail the session's own read.
  await step0.locator('.llm-time').waitFor();
  check(true, 'the LLM time of the step');
  check((await page.locator('#steps article[data-step="0"] .thought').innerText()).includes('I will echo'), 'the thought');
  await page.screenshot({ path: join(shots, 'timeline.png'), fullPage: true });

  // The list shows it; a session made elsewhere appears without a reload.
  await page.getByRole('link', { name: 'Sessions' }).first().click();
  await page.locator(`tr[data-session-id="${runId}"]`).waitFor();
  const made = await page.evaluate(async ([k, webhookUrl]) => {
    const r = await fetch('/v1/agents/run', {
      method: 'POST',
      headers: { authorization: `Bearer ${k}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        messages: [{ role: 'user', content: 'marker-ui-held: waits' }],
        tools: ['echo_approved'],
        webhook_url: webhookUrl,
      }),
    });
    return (await r.json()).session_id;
  }, [key, hook]);
  await page.locator(`tr[data-session-id="${made}"]`).waitFor();
  check(true, 'a new session appears in the list by itself');
  // Paging: twenty more sessions push the oldest onto a second page and back.
  await page.evaluate(async (k) => {
    for (let i = 0; i < 20; i += 1) {
      await fetch('/v1/agents/run', {
        method: 'POST',
        headers: { authorization: `Bearer ${k}`, 'content-type': 'application/json' },
        body: JSON.stringify({ messages: [{ role: 'user', content: `marker-ui-many: ${i}` }], tools: [] }),
      });
    }
  }, key);
  await page.waitForFunction(() => document.querySelectorAll('#sessions tbody tr').length === 20);
  await page.locator(`tr[data-session-id="${runId}"]`).waitFor({ state: 'detached' });
  await page.getByRole('button', { name: 'Older →' }).click();
  await page.locator(`tr[data-session-id="${runId}"]`).waitFor();
  check(await page.locator('#sessions tbody tr').count() === 2, 'the oldest sessions on the second page');
  await page.getByRole('button', { name: '← Newer' }).click();
  await page.waitForFunction(() => document.querySelectorAll('#sessions tbody tr').length === 20);
  check(true, 'paging back to the newest');
  await page.locator('#status-filter').selectOption('completed');
  await page.waitForFunction(() => {
    const shown = [...document.querySelectorAll('#sessions tbody [data-status]')].map((e) => e.dataset.status);
    return shown.length === 20 && shown.every((st) => st === 'completed');
  });
  check(await page.locator(`tr[data-session-id="${made}"]`).count() === 0, 'the status filter shows only completed sessions');
  await page.screenshot({ path: join(shots, 'list.png'), fullPage: true });

  // A sql_query call held for approval: the SQL, its parameters and the classification are
  // shown; the stream drops and comes back meanwhile; approving from the page finishes it.
  await page.getByRole('link', { name: 'New session' }).first().click();
  await page.locator('#question').fill('marker-ui-sql: which item costs most?');
  await page.locator('#tool-echo').uncheck();
  await page.locator('#tool-sql_query').check();
  await page.getByRole('button', { name: 'Start' }).click();
  await page.waitForURL(/#\/s\/[0-9a-f-]{36}$/);
  await page.locator('#approval pre.sql').waitFor();
  check((await page.locator('#approval pre.sql').innerText()).includes('SELECT name, price FROM items'), 'the SQL to approve');
  check((await page.locator('#approval pre.classification').innerText()).includes('"statement": "SELECT"'), 'its classification');
  check(/^\[\s*1\s*\]$/.test(await page.locator('#approval pre.params').innerText()), 'its parameters');
  await page.locator('#live', { hasText: 'live' }).waitFor();
  const restarted = new Promise((resolve) => stdin.once('line', resolve));
  console.log('drop-the-stream');
  await restarted;
  await page.waitForFunction(() => Number(document.getElementById('live').dataset.reconnects || 0) >= 1);
  await page.locator('#live', { hasText: 'live' }).waitFor();
  check(true, 'the event stream reconnects by itself after the API restarted');
  await page.locator('#approval-reason').fill('read-only, fine');
  await page.screenshot({ path: join(shots, 'approval.png'), fullPage: true });
  await page.locator('#approve').click();
  await page.locator('#final-answer', { hasText: 'pear' }).waitFor();
  check((await page.locator('#steps article[data-step="0"]').innerText()).includes('read-only, fine'), 'the approval and its reason on the step');
  check(await page.locator('#steps article[data-step="0"]').count() === 1, 'nothing shown twice after the reconnect');

  // A page whose text holds <script> is shown as text, marked untrusted, and never runs.
  await page.getByRole('link', { name: 'New session' }).first().click();
  await page.locator('#question').fill('marker-ui-web: read the page');
  await page.locator('#tool-web_fetch').check();
  await page.getByRole('button', { name: 'Start' }).click();
  await page.locator('#final-answer', { hasText: 'read it' }).waitFor();
  const observation = page.locator('#steps article[data-step="0"] .observation');
  check((await observation.textContent()).includes('<script>window.agentqPwned = 1</script>'), '<script> shown as text');
  check(await observation.locator('.untrusted-mark').count() >= 1, 'web content marked untrusted');
  check(await page.locator('#steps script, #steps b').count() === 0, 'no element made from the page');
  check(await page.evaluate(() => window.agentqPwned === undefined), 'the script never ran');

  // Cancel from the page: the session that waits for approval ends at once.
  await page.goto(`${url}/ui#/s/${made}`);
  await page.locator('#approval #approve').waitFor();
  await page.locator('#cancel').click();
  await page.locator('#summary [data-status="cancelled"]').waitFor();
  check(await page.locator('#approval .approval').count() === 0, 'cancelled: no approval left to give');
  // Its webhook messages, as the sender delivers them: waiting for approval, then cancelled.
  const hooks = page.locator('#webhook-deliveries .webhook');
  await hooks.nth(1).locator('.status.delivered').waitFor();
  check(await hooks.count() === 2, 'two webhook messages');
  check(await hooks.locator('.status.delivered').count() === 2, 'both delivered');
  check((await hooks.nth(0).innerText()).includes('session.awaiting_approval'), 'the first announces the wait');
  check((await hooks.nth(1).innerText()).includes('session.cancelled'), 'the second the cancellation');
  check((await hooks.nth(1).innerText()).includes('HTTP 204'), 'each attempt with its answer');

  // Readable on a phone: nothing wider than the screen.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${url}/ui#/s/${runId}`);
  await page.locator('#final-answer').waitFor();
  check(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1), 'fits a phone screen');
  await page.screenshot({ path: join(shots, 'timeline-phone.png'), fullPage: true });

  // The key never appears in an address.
  check(!requested.some((u) => u.includes(key)), 'the key is in no URL');
  check(problems.length === 0, `no console or page errors${problems.length ? `: ${problems.join('; ')}` : ''}`);
  await context.close();
} catch (e) {
  console.error(e.stack || String(e));
  // What the page showed when it failed, for whoever reads the failure.
  if (page) {
    await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true }).catch(() => {});
    console.error(`the page at ${page.url()} showed:\n${await page.locator('main').innerText().catch(() => '?')}`);
  }
  if (problems.length) console.error(problems.join('\n'));
  process.exitCode = 1;
} finally {
  stdin.close();
  await browser.close();
}
