// Token expiry in Debian's headless Chromium: a page whose token expires
// in a few seconds, with a refreshToken hook, keeps receiving across the
// server's 4002 close.
//
//   node expiry.mjs PAGE_URL
//
// The page (written and served by tests/e2e/test_browser_expiry.py) sets
// window.expiryDone once it has every message it waits for, or gave up,
// and keeps what it saw in window.expiry. Prints that object as one JSON
// line on stdout; exit 0 when the page ran at all.

import { chromium } from 'playwright-core';

const pageUrl = process.argv[2];
const CHROMIUM = process.env.BROWSER_TEST_CHROMIUM ?? '/usr/bin/chromium';
const WAIT_MS = Number(process.env.BROWSER_TEST_WAIT_MS ?? 30000);

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
try {
  const page = await browser.newPage();
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(m.text()));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e}`));
  await page.goto(pageUrl);
  let timedOut = false;
  try {
    await page.waitForFunction(() => window.expiryDone === true, null, { timeout: WAIT_MS });
  } catch {
    timedOut = true;   // report what the page has: the test says what is missing
  }
  const seen = await page.evaluate(() => window.expiry ?? null);
  process.stdout.write(`${JSON.stringify({ ...seen, timedOut, console: consoleLines })}\n`);
} finally {
  await browser.close();
}
