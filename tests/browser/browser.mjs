// What the browser tests share: Debian's Chromium (or $CHROMIUM) through puppeteer-core, a
// profile of the run's own, a bound on the whole run, and a browser that is closed (or killed)
// and a profile that is removed however the run ends.
//
//   await drive('name', async (ctx) => { ctx.step = '...'; const page = await ctx.newPage(); ... return {...}; });
//
// prints the result as one JSON line and exits 0; on a failure prints the step and the reason
// to stderr and exits 1. The bound is BROWSER_TEST_TIMEOUT_MS (default 60 s).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export class Failure extends Error {}
export function expect(condition, message) {
  if (!condition) throw new Failure(message);
}
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function drive(name, steps) {
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  const setup = 'run scripts/setup.sh (it installs Debian\'s chromium and npm ci in tests/browser)';
  const puppeteer = await import('puppeteer-core').then((m) => m.default, () => {
    console.error(`${name}: puppeteer-core is not installed in tests/browser: ${setup}`);
    process.exit(1);
  });
  if (!fs.existsSync(executablePath)) {
    console.error(`${name}: no Chromium at ${executablePath}: ${setup}, or set CHROMIUM`);
    process.exit(1);
  }
  const totalMs = Number(process.env.BROWSER_TEST_TIMEOUT_MS || 60000);
  const started = Date.now();
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), `nimbus-${name}-`));
  let launching;  // puppeteer.launch(): close() waits for a browser that is still starting
  let browser;
  const ctx = {
    step: 'launch Chromium',
    pageErrors: [],
    browser: null,
    // A page on a phone-sized screen whose uncaught errors are kept in ctx.pageErrors.
    async newPage() {
      const page = await ctx.browser.newPage();
      page.setDefaultTimeout(20000);  // each wait; a cold Python worker on a busy machine is slow
      await page.setViewport({ width: 390, height: 844, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
      page.on('pageerror', (err) => ctx.pageErrors.push(err.message));
      return page;
    },
  };

  // Kills Chromium and its helpers (puppeteer starts them as a process group of their own) and
  // waits, briefly, until it has gone.
  async function killBrowser() {
    const child = browser?.process();
    if (!child?.pid || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((resolve) => child.once('exit', resolve));
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      child.kill('SIGKILL');
    }
    await Promise.race([gone, sleep(2000)]);
  }
  // Closes the browser, bounded: one that does not close in time is killed.
  async function close() {
    browser ??= await Promise.race([launching?.catch(() => undefined), sleep(10000)]);
    if (!browser) return;
    await Promise.race([browser.close().catch(() => {}), sleep(5000)]);
    await killBrowser();
  }
  async function run() {
    launching = puppeteer.launch({
      executablePath,
      userDataDir: profile,
      headless: true,
      pipe: true,  // DevTools over a pipe: no port to find or to collide
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
      env: { PATH: process.env.PATH || '/usr/bin:/bin', HOME: os.tmpdir(), LANG: 'C.UTF-8' },
    });
    browser = await launching;
    ctx.browser = browser;
    const result = await steps(ctx);
    expect(ctx.pageErrors.length === 0, `the page threw: ${ctx.pageErrors.join('; ')}`);
    return { ...result, browser: await browser.version() };
  }

  // The whole run is bounded: past totalMs it fails, and the browser is closed all the same.
  let code = 1;
  let timer;
  const running = run();
  running.catch(() => {});  // after a timeout its failure is no longer news
  try {
    const result = await Promise.race([running, new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Failure(`gave up after ${totalMs} ms`)), totalMs);
    })]);
    result.ms = Date.now() - started;
    console.log(JSON.stringify(result));
    code = 0;
  } catch (err) {
    const reason = err instanceof Failure ? err.message : err?.stack || String(err);
    console.error(`${name}: failed at step: ${ctx.step}: ${reason}`);
  } finally {
    clearTimeout(timer);
    await close();
    try {
      fs.rmSync(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
    } catch (err) {
      console.error(`${name}: cannot remove ${profile}: ${err.message}`);
    }
  }
  process.exit(code);
}
