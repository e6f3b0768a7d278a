// Drives examples/web-app in a real browser: headless Chromium (Debian's, or $CHROMIUM) through
// puppeteer-core, on a phone-sized screen. It adds two items through the form, ticks one done,
// reloads and finds it still done (the server kept it), deletes the other, checks that an empty
// title shows the API's own error, and saves a full-page screenshot.
//
//   node tests/browser/web_app.mjs http://127.0.0.1:8080 /tmp/web-app.png
//
// Prints one JSON line of what it saw and exits 0; on a failure prints the step and the reason
// to stderr and exits 1. The whole run is bounded (BROWSER_TEST_TIMEOUT_MS, default 60 s), and
// the browser is closed (or killed) and its profile removed however it ends (browser.mjs). Used
// by Examples.WebAppInHeadlessChromium (tests/examples_it_test.cpp).
import { drive, expect } from './browser.mjs';

const [base, screenshot] = process.argv.slice(2);
if (!base || !screenshot) {
  console.error('usage: node web_app.mjs BASE_URL SCREENSHOT.png');
  process.exit(2);
}
const url = (route) => new URL(route, base).href;
const seen = { failedRequests: [], encoding: {} };

const rows = (page) =>
  page.$$eval('[data-testid="item"]', (lis) =>
    lis.map((li) => ({
      id: li.dataset.id,
      title: li.querySelector('[data-testid="item-title"]').textContent,
      done: li.dataset.done === 'true',
      checked: li.querySelector('[data-testid="item-done"]').checked,
    })));

// The page has loaded its list (the first API call answered) and shows no error.
async function loaded(page) {
  await page.waitForSelector('[data-testid="items"][aria-busy="false"]');
  const error = await page.$eval('[data-testid="error"]', (e) => (e.hidden ? '' : e.textContent));
  expect(!error, `the page shows an error: ${error}`);
}

// Adds an item through the form (by the button, or by Enter) and waits until it is listed.
async function add(page, title, { byEnter = false } = {}) {
  await page.type('[data-testid="new-item-title"]', title);
  if (byEnter) await page.keyboard.press('Enter');
  else await page.click('[data-testid="add-item"]');
  const handle = await page.waitForFunction(
    (t) => [...document.querySelectorAll('[data-testid="item"]')].find(
      (li) => li.querySelector('[data-testid="item-title"]').textContent === t)?.dataset.id,
    {}, title);
  const id = await handle.jsonValue();
  expect(await page.$eval('[data-testid="new-item-title"]', (i) => i.value) === '',
         'the title field was not cleared after adding');
  return id;
}

await drive('web_app', async (ctx) => {
  const page = await ctx.newPage();
  page.on('requestfailed', (req) => {
    // Chromium reports a fetch answered 204 as aborted (puppeteer#9458): only requests that got
    // no reply at all count.
    if (!req.response()) seen.failedRequests.push(`${req.method()} ${req.url()}: ${req.failure()?.errorText}`);
  });

  page.on('response', (res) => {
    const path = new URL(res.url()).pathname;
    if (res.status() === 200 && !(path in seen.encoding)) seen.encoding[path] = res.headers()['content-encoding'] ?? 'identity';
  });

  ctx.step = `open ${base}`;
  const reply = await page.goto(url('/'), { waitUntil: 'load' });
  expect(reply?.status() === 200, `GET / answered ${reply?.status()}`);
  await loaded(page);
  const title = await page.title();
  const heading = await page.$eval('[data-testid="heading"]', (h) => h.textContent.trim());
  expect(title.includes('To do') && heading === 'To do', `not the to-do page: title "${title}", heading "${heading}"`);
  expect(['br', 'gzip'].includes(seen.encoding['/app.js']),
         `app.js came with content-encoding ${seen.encoding['/app.js']}: is gateway.compression on?`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow <= 0, `the page is ${overflow}px wider than a phone's screen`);

  const tag = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
  const kept = { title: `Water the plants ${tag}` };
  const removed = { title: `Call the plumber ${tag}` };
  ctx.step = 'add two items through the form';
  kept.id = await add(page, kept.title);
  removed.id = await add(page, removed.title, { byEnter: true });

  ctx.step = 'tick the first item done';
  await page.click(`[data-id="${kept.id}"] [data-testid="item-done"]`);
  await page.waitForSelector(`[data-testid="item"][data-id="${kept.id}"][data-done="true"]`);

  ctx.step = 'delete the second item';
  await page.click(`[data-id="${removed.id}"] [data-testid="item-delete"]`);
  await page.waitForFunction((id) => !document.querySelector(`[data-testid="item"][data-id="${id}"]`), {}, removed.id);

  ctx.step = 'reload: the server kept the changes';
  await page.reload({ waitUntil: 'load' });
  await loaded(page);
  let listed = await rows(page);
  const after = listed.find((r) => r.id === kept.id);
  expect(after, `after a reload "${kept.title}" is not listed: ${JSON.stringify(listed)}`);
  expect(after.title === kept.title && after.done && after.checked,
         `after a reload "${kept.title}" is not done: ${JSON.stringify(after)}`);
  expect(!listed.some((r) => r.id === removed.id), `after a reload the deleted "${removed.title}" is listed`);

  ctx.step = 'open /done, a client-side route the host answers with the page';
  await page.goto(url('/done'), { waitUntil: 'load' });
  await loaded(page);
  listed = await rows(page);
  expect(listed.some((r) => r.id === kept.id) && listed.every((r) => r.done),
         `/done lists ${JSON.stringify(listed)}`);
  await page.click('[data-filter="all"]');
  expect(new URL(page.url()).pathname === '/', `the "All" link went to ${page.url()}`);

  ctx.step = 'add an item with an empty title';
  const api = await fetch(url('/api/items'), {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ title: '' }),
  });
  const apiError = (await api.json()).error;
  expect(api.status === 400 && apiError?.message, `the API answered ${api.status} to an empty title`);
  const count = (await rows(page)).length;
  await page.click('[data-testid="add-item"]');
  await page.waitForSelector('[data-testid="error"]:not([hidden])');
  const shown = await page.$eval('[data-testid="error"]', (e) => ({ text: e.textContent, code: e.dataset.code }));
  expect(shown.text === apiError.message && shown.code === apiError.code,
         `the page shows ${JSON.stringify(shown)}, the API said ${JSON.stringify(apiError)}`);
  expect((await rows(page)).length === count, 'an item was added with an empty title');

  ctx.step = 'save the screenshot';
  await page.screenshot({ path: screenshot, fullPage: true });
  expect(seen.failedRequests.length === 0, `requests failed: ${seen.failedRequests.join('; ')}`);

  return {
    ok: true,
    title,
    created: { id: kept.id, title: kept.title, done: true },
    deleted: { id: removed.id, title: removed.title },
    error_shown: shown,
    content_encoding: seen.encoding,
    items_listed: (await rows(page)).length,
    screenshot,
  };
});
