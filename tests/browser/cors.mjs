// Cross-origin use of the browser client in Debian's headless Chromium:
// a page served from one origin imports /notify-client.js from
// notifyd-ws on another and, when that works, receives a notification
// through it.
//
//   node cors.mjs PAGE_URL
//
// The page (written by tests/e2e/test_browser_cors.py) sets
// window.corsResult to {imported, error?, received?}. Prints that object
// as one JSON line on stdout; exit 0 when the page ran at all.

import { chromium } from 'playwright-core';

const page_url = process.argv[2];
const CHROMIUM = process.env.BROWSER_TEST_CHROMIUM ?? '/usr/bin/chromium';

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
try {
  const page = await browser.newPage();
  const console_lines = [];
  page.on('console', (m) => console_lines.push(m.text()));
  await page.goto(page_url);
  await page.waitForFunction(() => window.corsResult !== undefined, null, { timeout: 15000 });
  const result = await page.evaluate(() => window.corsResult);
  process.stdout.write(`${JSON.stringify({ ...result, console: console_lines })}\n`);
} finally {
  await browser.close();
}
