// Browser scenarios of the notifyd demo page, in Debian's headless
// Chromium driven by playwright-core (no browser download).
//
//   node run.mjs SCENARIO
//
// Started by tests/e2e/test_browser.py, which runs redis-server and
// notifyd-ws and passes everything in the environment:
//   BROWSER_TEST_BASE       http://127.0.0.1:PORT (notifyd-ws --demo)
//   BROWSER_TEST_BASE2      a second notifyd-ws on the same Redis (resume_restart)
//   BROWSER_TEST_USER       the user the tokens are for
//   BROWSER_TEST_TOKEN      a valid token; BROWSER_TEST_BAD_TOKEN a rejected one
//   BROWSER_TEST_REDIS      redis URL for notify-send
//   BROWSER_TEST_NOTIFY_SEND  path of bin/notify-send
//   BROWSER_TEST_ARTIFACTS  folder for screenshots
//   BROWSER_TEST_CHROMIUM   browser executable (default /usr/bin/chromium)
//
// Output: one JSON object per line on stdout ({"check": ...} as each
// check passes, {"step": ...} when the harness must act, then
// {"result": "pass"} or {"result": "fail", "error": ...}); exit 0 on pass.
// A step waits for the harness to answer with one line on stdin.

import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};

const BASE = env('BROWSER_TEST_BASE');
const BASE2 = env('BROWSER_TEST_BASE2', '');
const USER = env('BROWSER_TEST_USER');
const TOKEN = env('BROWSER_TEST_TOKEN');
const BAD_TOKEN = env('BROWSER_TEST_BAD_TOKEN', '');
const REDIS = env('BROWSER_TEST_REDIS');
const NOTIFY_SEND = env('BROWSER_TEST_NOTIFY_SEND');
const ARTIFACTS = env('BROWSER_TEST_ARTIFACTS');
const CHROMIUM = env('BROWSER_TEST_CHROMIUM', '/usr/bin/chromium');
const WAIT_MS = 10000;

const started = Date.now();
const out = (obj) => process.stdout.write(`${JSON.stringify({ ...obj, t_ms: Date.now() - started })}\n`);
const check = (name, detail = {}) => out({ check: name, ...detail });

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

// Ask the harness to do something (stop or start notifyd-ws) and wait
// until it says it is done.
async function step(name) {
  out({ step: name });
  const answer = await Promise.race([
    lines.next(),
    new Promise((_, reject) => setTimeout(() => reject(new Error(`no answer to step ${name}`)), 30000)),
  ]);
  assert(!answer.done && answer.value.trim() === 'ok', `harness failed step ${name}: ${answer.value}`);
}

function notifySend(...args) {
  execFileSync(NOTIFY_SEND, ['--redis', REDIS, ...args], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 10000 });
}

async function shot(page, name) {
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true, animations: 'disabled' });
  check('screenshot', { path });
}

async function waitState(page, state, timeout = WAIT_MS) {
  await page.waitForSelector(`#state[data-state="${state}"]`, { timeout });
}

// The notification on the page whose content is exactly `content`.
function note(page, content) {
  const exact = new RegExp(`^${content.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
  return page.locator('#notifications .note', { has: page.locator('.content', { hasText: exact }) });
}

async function waitNote(page, content) {
  const n = note(page, content);
  await n.first().waitFor({ timeout: WAIT_MS });
  return n;
}

async function noteCount(page, content) {
  return note(page, content).count();
}

// Messages through one notifyd-ws connection keep their order, so once a
// marker sent after `content` is on the page, `content` would be too.
async function assertNotShown(page, content, tag) {
  const marker = `marker ${tag} ${Date.now()}`;
  notifySend('-u', USER, '-t', 'marker', marker);
  await waitNote(page, marker);
  assert(await noteCount(page, content) === 0, `"${content}" is on the page but should not be`);
}

async function openPage(browser, fragment, base = BASE) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  // Count every WebSocket the page creates, whatever the server logs.
  await page.addInitScript(() => {
    const Real = window.WebSocket;
    window.__wsCount = 0;
    window.__wsOpened = [];
    window.__wsSent = [];
    window.WebSocket = class extends Real {
      constructor(...args) {
        super(...args);
        window.__wsCount++;
        this.addEventListener('open', () => window.__wsOpened.push({ url: this.url, protocol: this.protocol }));
      }

      send(data) {
        window.__wsSent.push(data);
        super.send(data);
      }
    };
  });
  await page.goto(`${base}/${fragment}`);
  return { page, errors, context };
}

const wsCount = (page) => page.evaluate(() => window.__wsCount);

// The URLs of the sockets this page load opened, oldest first.
const openedUrls = async (page) => (await page.evaluate(() => window.__wsOpened)).map((o) => new URL(o.url));

// The contents on the page, newest first.
const shownContents = (page) => page.locator('#notifications .note .content').allTextContents();

async function noteAttr(page, content, name) {
  return (await waitNote(page, content)).getAttribute(name);
}

function assertSame(got, want, what) {
  assert(JSON.stringify(got) === JSON.stringify(want), `${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

// Another device of the user (its own browser context, no resume) reads
// `texts`: the user's read mark moves past them, so that from then on only
// ?since= can bring them to a page that missed them. The scenarios then
// ask the harness (step read_by_other) to confirm that in Redis.
// The texts are sent once that device is connected, so it gets them live
// whether or not a page that is going away still had them written to its
// socket (which marks them read too).
async function otherDeviceReads(browser, base, texts) {
  const { page, errors, context } = await openPage(browser, `#token=${TOKEN}`, base);
  await waitState(page, 'connected');
  for (const t of texts) notifySend('-u', USER, t);
  for (const t of texts) await waitNote(page, t);
  assert(errors.length === 0, `page errors on the other device: ${errors}`);
  await context.close();
}

// The resume storage key of the demo page.
const RESUME_KEY = `notifyd:last-id:${USER}`;
const storedId = (page) => page.evaluate((k) => localStorage.getItem(k), RESUME_KEY);

const scenarios = {
  // A token pasted into the page connects; a notify-send shows up with
  // type, content and time.
  async connect(browser) {
    const { page, errors } = await openPage(browser, '');
    await waitState(page, 'disconnected');
    await page.fill('#token', TOKEN);
    assert(await page.textContent('#user') === USER, 'the page does not show the token\'s user');
    await page.click('#connect');
    await waitState(page, 'connected');
    check('connected', { state: await page.textContent('#state-text') });
    assert((await page.evaluate(() => location.hash)).includes('token='), 'the token is not kept in the fragment');

    const before = Date.now();
    notifySend('-u', USER, '-t', 'warning', 'Disk', 'almost', 'full');
    const n = await waitNote(page, 'Disk almost full');
    assert(await n.locator('.type').textContent() === 'warning', 'wrong type shown');
    const time = n.locator('.time');
    const shown = await time.textContent();
    assert(/\d\d:\d\d:\d\d/.test(shown), `time not shown: ${shown}`);
    const iso = await time.getAttribute('datetime');
    const at = Date.parse(iso);
    assert(Math.abs(at - before) < 60000, `timestamp ${iso} is not about now`);
    assert(await n.locator('.scope').textContent() === 'to you', 'scope of a targeted message');
    assert(await page.textContent('#count') === '1', 'counter');
    check('notification shown', { type: 'warning', time: shown, timestamp: iso });

    notifySend('-u', USER, '-t', 'deploy', '-d', '{"version":"1.2.3"}', 'Deployed');
    const d = await waitNote(page, 'Deployed');
    assert((await d.locator('.data').textContent()).includes('1.2.3'), 'data not shown');
    check('data shown');
    await shot(page, 'connect-notifications');
    assert(errors.length === 0, `page errors: ${errors}`);
  },

  // A channel broadcast reaches the page only while it is subscribed.
  async channel(browser) {
    const { page, errors } = await openPage(browser, `#token=${TOKEN}`);
    await waitState(page, 'connected');
    notifySend('-b', '-c', 'news', 'news before subscribing');
    await assertNotShown(page, 'news before subscribing', 'a');
    check('broadcast not shown before subscribing');

    await page.fill('#channel', 'news');
    await page.click('#subscribe');
    await page.waitForSelector('#channels .chip[data-channel="news"][data-status="subscribed"]', { timeout: WAIT_MS });
    check('subscribed on the page');
    notifySend('-b', '-c', 'news', '-t', 'headline', 'news after subscribing');
    const n = await waitNote(page, 'news after subscribing');
    assert(await n.locator('.scope').textContent() === '#news', 'channel not shown');
    assert(await n.locator('.type').textContent() === 'headline', 'type not shown');
    notifySend('-b', '-c', 'sport', 'sport is another channel');
    await assertNotShown(page, 'sport is another channel', 'b');
    check('broadcast shown after subscribing, other channels not');
    await shot(page, 'channel-subscribed');

    await page.click('#channels .chip[data-channel="news"] button');
    await page.waitForSelector('#channels .chip[data-channel="news"]', { state: 'detached', timeout: WAIT_MS });
    await page.waitForFunction(() => document.querySelector('#log').textContent.includes('unsubscribed from #news'),
      null, { timeout: WAIT_MS });
    notifySend('-b', '-c', 'news', 'news after unsubscribing');
    await assertNotShown(page, 'news after unsubscribing', 'c');
    check('broadcast not shown after unsubscribing');
    assert(errors.length === 0, `page errors: ${errors}`);
  },

  // notifyd-ws is killed and started again on the same port: the page
  // shows it is reconnecting, comes back, and is subscribed again.
  async restart(browser) {
    const { page, errors } = await openPage(browser, `#token=${TOKEN}&channels=ops`);
    await waitState(page, 'connected');
    await page.waitForSelector('#channels .chip[data-channel="ops"][data-status="subscribed"]', { timeout: WAIT_MS });
    notifySend('-b', '-c', 'ops', 'ops before restart');
    await waitNote(page, 'ops before restart');
    check('subscribed before restart');

    await step('stop');
    await waitState(page, 'reconnecting');
    const text = await page.textContent('#state-text');
    assert(/reconnecting/.test(text), `state text: ${text}`);
    check('reconnecting shown', { state: text });
    await shot(page, 'restart-reconnecting');

    await step('start');
    await waitState(page, 'connected', 40000);
    check('connected again', { sockets: await wsCount(page) });
    await page.waitForSelector('#channels .chip[data-channel="ops"][data-status="subscribed"]', { timeout: WAIT_MS });
    notifySend('-b', '-c', 'ops', 'ops after restart');
    await waitNote(page, 'ops after restart');
    check('resubscribed after restart');
    notifySend('-u', USER, 'direct after restart');
    await waitNote(page, 'direct after restart');
    assert(await noteCount(page, 'ops before restart') === 1, 'a message was shown twice');
    await shot(page, 'restart-reconnected');
    assert(errors.length === 0, `page errors: ${errors}`);
  },

  // A rejected token (close 4001) stops the client: no reconnect loop.
  async auth_failed(browser) {
    assert(BAD_TOKEN, 'BROWSER_TEST_BAD_TOKEN is not set');
    const { page, errors } = await openPage(browser, `#token=${BAD_TOKEN}`);
    await waitState(page, 'auth_failed');
    check('auth_failed shown', { state: await page.textContent('#state-text') });
    // A client that retried would have done so within its first backoff
    // delay (at most 1 s) several times over by now.
    await page.waitForTimeout(3500);
    const n = await wsCount(page);
    assert(n === 1, `${n} WebSocket connections for a rejected token`);
    assert(await page.getAttribute('#state', 'data-state') === 'auth_failed', 'the state changed');
    assert((await page.textContent('#log')).includes('4001'), 'the close code is not shown');
    check('no reconnect loop', { sockets: n, waited_ms: 3500 });
    await shot(page, 'auth-failed');

    // A good token pasted afterwards connects.
    await page.fill('#token', TOKEN);
    await page.click('#connect');
    await waitState(page, 'connected');
    assert(await wsCount(page) === 2, 'the good token took more than one connection');
    check('a fresh token connects');
    assert(errors.length === 0, `page errors: ${errors}`);
  },

  // Messages sent while nobody was connected appear once the page
  // connects, oldest at the bottom.
  async offline(browser) {
    const texts = ['offline one', 'offline two', 'offline three'];
    for (const t of texts) notifySend('-u', USER, '-t', 'offline', t);
    check('sent before the page opened', { count: texts.length });
    const { page, errors } = await openPage(browser, `#token=${TOKEN}`);
    await waitState(page, 'connected');
    for (const t of texts) await waitNote(page, t);
    const shown = await page.locator('#notifications .note .content').allTextContents();
    assert(JSON.stringify(shown) === JSON.stringify([...texts].reverse()),
      `order on the page: ${JSON.stringify(shown)}`);
    check('offline messages shown', { shown });
    await shot(page, 'offline');

    // Delivered once: a reload (a new connection) does not bring them back.
    await page.reload();
    await waitState(page, 'connected');
    await assertNotShown(page, 'offline one', 'reload');
    check('not delivered again after a reload');
    assert(errors.length === 0, `page errors: ${errors}`);
  },

  // The served client used from a page's own script: token in the
  // subprotocol list (not in the URL), ack mode on, offline messages
  // acknowledged one by one.
  async ack_protocol(browser) {
    const texts = ['acked one', 'acked two'];
    for (const t of texts) notifySend('-u', USER, t);
    const { page, errors } = await openPage(browser, '');
    const got = await page.evaluate(async (token) => {
      const { NotificationClient } = await import('/notify-client.js');
      const client = new NotificationClient('/ws/notifications', token, { tokenTransport: 'protocol', ack: true });
      const msgs = [];
      const done = new Promise((resolve, reject) => {
        client.on('*', (m) => { msgs.push(m); if (msgs.length === 2) resolve(); });
        client.onEvent('auth_failed', () => reject(new Error('auth_failed')));
        setTimeout(() => reject(new Error(`timeout in state ${client.state}`)), 8000);
      });
      client.connect();
      await done;
      return { state: client.state, msgs };
    }, TOKEN);
    assert(got.state === 'connected', `state ${got.state}`);
    assert(JSON.stringify(got.msgs.map((m) => m.content)) === JSON.stringify(texts), `got ${JSON.stringify(got.msgs)}`);
    const opened = await page.evaluate(() => window.__wsOpened);
    assert(opened.length === 1, `opened ${JSON.stringify(opened)}`);
    assert(!opened[0].url.includes('token='), `token in the URL: ${opened[0].url}`);
    assert(new URL(opened[0].url).searchParams.get('ack') === '1', 'ack=1 missing');
    assert(opened[0].protocol === 'bearer', `negotiated subprotocol ${opened[0].protocol}`);
    check('connected with the token as subprotocol', { protocol: opened[0].protocol });
    const acks = (await page.evaluate(() => window.__wsSent)).map((d) => JSON.parse(d)).filter((m) => m.type === 'ack');
    assert(JSON.stringify(acks.map((a) => a.id)) === JSON.stringify(got.msgs.map((m) => m.id)), `acks ${JSON.stringify(acks)}`);
    check('each message acknowledged', { acks: acks.length });
    // The harness checks that the server forgot the acknowledged messages
    // while this page is still connected.
    await step('acked');
    assert(errors.length === 0, `page errors: ${errors}`);
  },

  // notifyd-ws stops; messages are sent meanwhile and another device of
  // the user reads them (on a second instance), so they are no longer
  // unread. Once notifyd-ws is back, the page's reconnect asks for what
  // followed the last message it processed and gets exactly those, once
  // each, in order.
  async resume_restart(browser) {
    assert(BASE2, 'BROWSER_TEST_BASE2 is not set');
    const { page, errors } = await openPage(browser, `#token=${TOKEN}`);
    await waitState(page, 'connected');
    const before = ['before one', 'before two'];
    for (const t of before) notifySend('-u', USER, t);
    for (const t of before) await waitNote(page, t);
    const lastBefore = await noteAttr(page, 'before two', 'data-id');
    const seqBefore = Number(await noteAttr(page, 'before two', 'data-seq'));
    assert(Number.isInteger(seqBefore) && seqBefore >= 2, `seq of a targeted message: ${seqBefore}`);
    assert(await page.evaluate(() => window.notifyDemo.client.lastId) === lastBefore, 'lastId');
    check('received before the stop', { last_id: lastBefore, seq: seqBefore });

    await step('stop');
    await waitState(page, 'reconnecting');
    const missed = ['missed one', 'missed two', 'missed three'];
    await otherDeviceReads(browser, BASE2, missed);
    await step('read_by_other');
    check('another device read the missed messages');

    await step('start');
    await waitState(page, 'connected', 40000);
    // Sent after the reconnect: once it is shown, anything replayed before
    // it is too, so the list below is final.
    notifySend('-u', USER, 'after restart');
    await waitNote(page, 'after restart');
    const shown = await shownContents(page);
    assertSame(shown, ['after restart', ...[...missed].reverse(), ...[...before].reverse()], 'notes, newest first');
    const seqs = await page.locator('#notifications .note').evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
    assertSame(seqs, [...seqs].sort((a, b) => b - a), 'seq order');
    check('missed messages shown once each, in order', { shown });

    const urls = await openedUrls(page);
    assert(urls.length === 2, `sockets opened: ${urls}`);
    assert(urls[0].searchParams.get('since') === null, `first connection resumed: ${urls[0]}`);
    assert(urls[1].searchParams.get('since') === lastBefore, `reconnect since: ${urls[1]}`);
    await page.waitForSelector('#position[data-recovered="true"]', { timeout: WAIT_MS });
    check('reconnected with since', { since: lastBefore });
    await shot(page, 'resume-restart');
    assert(errors.length === 0, `page errors: ${errors}`);
  },

  // With resume=1 the page keeps its last id in localStorage. Closed
  // while messages are sent (and read by another device), then opened
  // again, it gets those messages and not the old ones; a reload after
  // that brings nothing old back either.
  async resume_reload(browser) {
    const url = `${BASE}/#token=${TOKEN}&resume=1`;
    const { page, errors } = await openPage(browser, `#token=${TOKEN}&resume=1`);
    await waitState(page, 'connected');
    const kept = ['seen one', 'seen two'];
    for (const t of kept) notifySend('-u', USER, t);
    for (const t of kept) await waitNote(page, t);
    const lastKept = await noteAttr(page, 'seen two', 'data-id');
    await page.waitForFunction(([k, id]) => localStorage.getItem(k) === id, [RESUME_KEY, lastKept], { timeout: WAIT_MS });
    assert((await openedUrls(page))[0].searchParams.get('since') === null, 'a first visit has nothing to resume');
    check('last id stored', { key: RESUME_KEY, id: lastKept });

    await page.goto('about:blank');
    const away = ['while away one', 'while away two'];
    await otherDeviceReads(browser, BASE, away);
    await step('read_by_other');
    check('another device read what was sent while away');

    await page.goto(url);
    await waitState(page, 'connected');
    notifySend('-u', USER, 'after coming back');
    await waitNote(page, 'after coming back');
    assertSame(await shownContents(page), ['after coming back', ...[...away].reverse()], 'notes after coming back');
    const back = await openedUrls(page);
    assert(back.length === 1 && back[0].searchParams.get('since') === lastKept, `since after coming back: ${back}`);
    await page.waitForSelector('#position[data-recovered="true"]', { timeout: WAIT_MS });
    check('messages sent while away shown, old ones not', { since: lastKept });
    await shot(page, 'resume-reload');

    const lastNow = await noteAttr(page, 'after coming back', 'data-id');
    assert(await storedId(page) === lastNow, 'the stored id did not follow');
    await page.reload();
    await waitState(page, 'connected');
    notifySend('-u', USER, 'after reload');
    await waitNote(page, 'after reload');
    assertSame(await shownContents(page), ['after reload'], 'notes after a reload');
    const reloaded = await openedUrls(page);
    assert(reloaded[0].searchParams.get('since') === lastNow, `since after reload: ${reloaded[0]}`);
    check('a reload resumes after the last message', { since: lastNow });
    assert(errors.length === 0, `page errors: ${errors}`);
  },

  // The stored id is one the server no longer has: the page says that
  // messages may have been missed and shows those the log still keeps,
  // though another device already read them.
  async resume_lost(browser) {
    const kept = ['retained one', 'retained two'];
    await otherDeviceReads(browser, BASE, kept);
    await step('read_by_other');
    check('another device read them');

    const unknown = '019ac2a4-0000-7000-8000-000000000000';
    const { page, errors } = await openPage(browser, '');
    await waitState(page, 'disconnected');
    await page.evaluate(([k, id]) => localStorage.setItem(k, id), [RESUME_KEY, unknown]);
    // A fragment change alone does not load the page again: reload it.
    await page.goto(`${BASE}/#token=${TOKEN}&resume=1`);
    await page.reload();
    await waitState(page, 'connected');
    await page.waitForSelector('#position[data-recovered="false"]', { timeout: WAIT_MS });
    assert((await page.textContent('#log')).includes(`could not resume after ${unknown}`), 'no warning in the log');
    check('lost resume reported');

    for (const t of kept) await waitNote(page, t);
    notifySend('-u', USER, 'after the lost resume');
    await waitNote(page, 'after the lost resume');
    assertSame(await shownContents(page), ['after the lost resume', ...[...kept].reverse()], 'notes');
    const urls = await openedUrls(page);
    assert(urls[0].searchParams.get('since') === unknown, `since: ${urls[0]}`);
    const lastNow = await noteAttr(page, 'after the lost resume', 'data-id');
    assert(await storedId(page) === lastNow, 'the stored id did not move on');
    check('retained messages shown after a lost resume');
    await shot(page, 'resume-lost');
    assert(errors.length === 0, `page errors: ${errors}`);
  },
};

async function main() {
  const name = process.argv[2];
  const scenario = scenarios[name];
  if (!scenario) {
    out({ result: 'fail', error: `unknown scenario ${name}; known: ${Object.keys(scenarios).join(' ')}` });
    process.exit(64);
  }
  mkdirSync(ARTIFACTS, { recursive: true });
  rmSync(join(ARTIFACTS, `FAILED-${name}.png`), { force: true });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30000,
  });
  let failed = null;
  try {
    await scenario(browser);
  } catch (e) {
    failed = e;
    for (const ctx of browser.contexts()) {
      for (const page of ctx.pages()) {
        await page.screenshot({ path: join(ARTIFACTS, `FAILED-${name}.png`), fullPage: true }).catch(() => {});
        const log = await page.textContent('#log').catch(() => '');
        out({ page_log: log });
      }
    }
  } finally {
    await browser.close();
  }
  if (failed) {
    out({ result: 'fail', error: String(failed.stack || failed) });
    process.exit(1);
  }
  out({ result: 'pass' });
  process.exit(0);
}

main().catch((e) => {
  out({ result: 'fail', error: String(e.stack || e) });
  process.exit(1);
});
