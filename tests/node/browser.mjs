// A real browser for tests/it/browser.rs: `rack-gateway login` runs this
// as $BROWSER with the login link. It drives Debian's chromium with
// playwright-core through the provider's login page and consent to the
// CLI's loopback listener, and waits for the CLI's final page.
//
// Usage: node browser.mjs <url>. Environment: RACK_GATEWAY_TEST_LOGIN
// (the login name), RACK_GATEWAY_TEST_BROWSER_LOG (a file that receives
// each step and the outcome). Exits on its own within 90 seconds.
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const url = process.argv[2];
const login = process.env.RACK_GATEWAY_TEST_LOGIN ?? 'alice@example.com';
const logFile = process.env.RACK_GATEWAY_TEST_BROWSER_LOG;
const log = (line) => { if (logFile) appendFileSync(logFile, `${line}\n`); };
const profile = mkdtempSync(join(tmpdir(), 'rack-gateway-chromium-'));
const timer = setTimeout(() => { log('FAIL: timed out after 90 s'); process.exit(1); }, 90_000);

let browser;
try {
  // A persistent context is how playwright passes --user-data-dir: a
  // fresh profile directory per run.
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  const page = await browser.newPage();
  page.setDefaultTimeout(30_000);
  log(`open ${new URL(url).origin}${new URL(url).pathname}`);
  await page.goto(url);
  await page.waitForSelector('#login');
  log(`login page ${new URL(page.url()).origin}`);
  await page.fill('#login', login);
  await page.fill('#password', 'any password');
  await Promise.all([page.waitForNavigation(), page.click('#submit')]);
  await page.waitForSelector('#allow');
  log('consent page');
  await page.click('#allow');
  await page.waitForURL(/^http:\/\/127\.0\.0\.1:\d+\/callback\/[^/?]+\?/);
  await page.waitForSelector('h1');
  const heading = await page.textContent('h1');
  const text = await page.textContent('body');
  log(`callback ${new URL(page.url()).origin}${new URL(page.url()).pathname}`);
  log(`DONE: ${heading} | ${text.replace(/\s+/g, ' ').trim()}`);
} catch (e) {
  log(`FAIL: ${e.message.split('\n')[0]}`);
  process.exitCode = 1;
} finally {
  clearTimeout(timer);
  if (browser) await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
