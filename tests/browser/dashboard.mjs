// Drives the admin listener's dashboard (src/admin/dashboard/) in headless Chromium on a
// phone-sized screen: a wrong token is refused and the right one signs in; a function's counters
// move while a load runs; a dead letter is replayed from the page; an invocation's trace opens
// as a tree. Screenshots of each go to SHOT_DIR.
//
//   node tests/browser/dashboard.mjs ADMIN_URL TOKEN HTTP_URL TRACE_ID SHOT_DIR
//
// The app (Dashboard.* in tests/history_it_test.cpp) has an HTTP function `front` whose output
// goes through queue `chain` to `back` (one trace), and a queue `jobs` with one dead letter.
// Prints one JSON line of what it saw (browser.mjs).
import path from 'node:path';

import { drive, expect } from './browser.mjs';

const [admin, token, http, traceId, shots] = process.argv.slice(2);
if (!admin || !token || !http || !traceId || !shots) {
  console.error('usage: node dashboard.mjs ADMIN_URL TOKEN HTTP_URL TRACE_ID SHOT_DIR');
  process.exit(2);
}

await drive('dashboard', async (ctx) => {
  const page = await ctx.newPage();
  page.on('dialog', (d) => d.accept());  // the replay asks first
  // The page's policy allows only its own script and style: anything it blocks is a bug.
  const blocked = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) blocked.push(m.text());
  });
  const shot = (name) => page.screenshot({ path: path.join(shots, name), fullPage: true });

  ctx.step = 'open the dashboard: it asks for the token';
  const reply = await page.goto(new URL('/dashboard', admin).href, { waitUntil: 'load' });
  expect(reply?.status() === 200, `GET /dashboard answered ${reply?.status()}`);
  await page.waitForSelector('[data-testid="login"]:not([hidden])');

  ctx.step = 'a wrong token is refused';
  await page.type('[data-testid="token"]', 'not-the-token');
  await page.click('[data-testid="sign-in"]');
  await page.waitForSelector('[data-testid="login-error"]:not([hidden])');
  const refused = await page.$eval('[data-testid="login-error"]', (e) => e.textContent);
  expect(/not the admin token/.test(refused), `a wrong token shows "${refused}"`);

  ctx.step = 'the admin token signs in';
  await page.type('[data-testid="token"]', token);
  await page.click('[data-testid="sign-in"]');
  await page.waitForSelector('[data-testid="fn-row"][data-function="front"]');
  const total = () => page.$eval('[data-testid="fn-row"][data-function="front"]', (r) => Number(r.dataset.total));
  const before = await total();

  ctx.step = 'the counters move while a load runs';
  const load = (async () => {
    for (let i = 0; i < 60; ++i) {
      const r = await fetch(new URL('/front', http));
      await r.arrayBuffer();
      expect(r.ok, `GET /front answered ${r.status}`);
    }
  })();
  load.catch(() => {});  // awaited below; a wait that fails first must not leave it unhandled
  await page.waitForFunction(() => Number(document.querySelector('[data-testid="fn-row"][data-function="front"]')?.dataset.rate) > 0,
    { polling: 200 });
  const rate = await page.$eval('[data-testid="fn-row"][data-function="front"]', (r) => Number(r.dataset.rate));
  await load;
  await page.waitForFunction((want) => Number(document.querySelector('[data-testid="fn-row"][data-function="front"]')?.dataset.total) >= want,
    { polling: 200 }, before + 60);
  const after = await total();
  await shot('functions.png');

  ctx.step = 'replay the dead letter of queue jobs';
  await page.click('[data-tab="queues"]');
  await page.waitForSelector('[data-testid="queue-row"][data-queue="jobs"] [data-testid="replay"]');
  const dead = await page.$eval('[data-testid="queue-row"][data-queue="jobs"] [data-testid="queue-dead"]', (e) => e.textContent);
  expect(dead === '1', `queue jobs shows ${dead} dead letters`);
  await page.click('[data-testid="queue-row"][data-queue="jobs"] [data-testid="replay"]');
  await page.waitForFunction(() => /Moved 1 dead letter/.test(document.querySelector('[data-testid="queue-note"]').textContent));
  await shot('queues.png');

  ctx.step = 'find the trace among the invocations and open it';
  await page.click('[data-tab="invocations"]');
  await page.waitForSelector('[data-testid="invocation-row"]');
  await page.type('[data-testid="trace-search"]', traceId);
  await page.keyboard.press('Enter');
  await page.waitForFunction((t) => {
    const rows = [...document.querySelectorAll('[data-testid="invocation-row"]')];
    return rows.length === 2 && rows.every((r) => r.dataset.trace === t);
  }, {}, traceId);
  await page.click('[data-testid="invocation-row"]');
  await page.waitForSelector('[data-testid="invocation-detail"]:not([hidden])');
  const detail = await page.$eval('[data-testid="invocation-detail"]', (e) => e.textContent);
  expect(detail.includes(traceId), 'the invocation\'s detail does not show its trace id');
  await page.click('[data-testid="detail-trace"]');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="span"]').length === 2);
  const spans = await page.$$eval('[data-testid="span"]', (list) => list.map((s) => ({ function: s.dataset.function, depth: Number(s.dataset.depth) })));
  expect(spans[0].function === 'front' && spans[0].depth === 0 && spans[1].function === 'back' && spans[1].depth === 1,
    `the trace shows ${JSON.stringify(spans)}, not front with back under it`);
  await shot('trace.png');

  ctx.step = 'the page fits a phone';
  // (A phone's browser lays a wider page out and zooms it out: measure against the screen.)
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - 390);
  expect(overflow <= 0, `the page is ${overflow}px wider than a phone's screen`);
  expect(blocked.length === 0, `the content security policy blocked: ${blocked.join('; ')}`);
  return { ok: true, refused, front: { before, after, rate }, spans, screenshots: ['functions.png', 'queues.png', 'trace.png'] };
});
