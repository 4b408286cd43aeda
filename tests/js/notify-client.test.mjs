// Unit tests of clients/js/notify-client.js under node --test: a fake
// WebSocket class injected into the client and fake timers
// (fake-timers.mjs), so reconnect, backoff and heartbeat run in virtual
// time, on Debian 12's Node 18 as on newer ones.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { NotificationClient, States } from '../../clients/js/notify-client.js';
import {
  useFakes, makeClient, last, record, sockets, clock, flush, FakeWebSocket, URL_WS,
} from './harness.mjs';

useFakes();

function note(id, type = 'info', extra = {}) {
  return { id, type, content: `content of ${id}`, data: {}, timestamp: '2026-11-26T22:43:46.123Z',
    target_user: 'alice', channel: null, ...extra };
}

// ---------------------------------------------------------------- connect

test('connect puts the token in the query, pings, and is connected only once the server answers', () => {
  const client = makeClient();
  const states = record(client, 'state');
  client.connect();
  assert.equal(sockets.length, 1);
  const ws = last();
  assert.equal(ws.query.get('token'), 'tok.en.1');
  assert.equal(ws.query.get('ack'), null);
  assert.equal(ws.protocols, undefined);
  assert.equal(client.state, States.CONNECTING);

  ws.serverOpen();
  assert.deepEqual(ws.sent, [{ type: 'ping' }]);
  // notifyd-ws completes the handshake even for a bad token: still unproven.
  assert.equal(client.state, States.CONNECTING);

  ws.serverSend({ type: 'pong', timestamp: 'x' });
  assert.equal(client.state, States.CONNECTED);
  assert.deepEqual(states.map((s) => s.state), ['connecting', 'connected']);
  assert.equal(states[1].previous, 'connecting');
});

test('an http(s) URL is turned into ws(s) and existing query parameters are kept', () => {
  const client = new NotificationClient('https://example.com/ws/notifications?x=1', 'a.b.c',
    { WebSocket: FakeWebSocket, ack: true });
  client.connect();
  const u = new URL(last().url);
  assert.equal(u.protocol, 'wss:');
  assert.equal(u.searchParams.get('x'), '1');
  assert.equal(u.searchParams.get('token'), 'a.b.c');
  assert.equal(u.searchParams.get('ack'), '1');
});

test("tokenTransport 'protocol' offers the subprotocols bearer + token and keeps the token out of the URL", () => {
  const client = makeClient({ tokenTransport: 'protocol' });
  client.connect();
  assert.deepEqual(last().protocols, ['bearer', 'tok.en.1']);
  assert.equal(last().query.get('token'), null);
});

test('connect() while connecting or connected opens no second socket', () => {
  const client = makeClient();
  client.connect();
  client.connect();
  assert.equal(sockets.length, 1);
  last().accept();
  client.connect();
  assert.equal(sockets.length, 1);
});

// ---------------------------------------------------------------- backoff

test('reconnects with exponential backoff capped at maxReconnectDelay and never gives up', () => {
  const client = makeClient({ reconnectDelay: 1000, maxReconnectDelay: 30000 });
  const reconnecting = record(client, 'reconnecting');
  client.connect();
  const expected = [1000, 2000, 4000, 8000, 16000, 30000, 30000];
  // 50 failures in a row: far past the seed's limit of 10.
  for (let i = 0; i < 50; i++) {
    const want = expected[Math.min(i, expected.length - 1)];
    assert.equal(sockets.length, i + 1);
    last().serverClose(1006);
    assert.equal(client.state, States.RECONNECTING);
    clock.tick(want - 1);
    assert.equal(sockets.length, i + 1, `attempt ${i + 1} came before ${want} ms`);
    clock.tick(1);
    assert.equal(sockets.length, i + 2, `attempt ${i + 1} did not come after ${want} ms`);
  }
  assert.deepEqual(reconnecting.slice(0, 7).map((r) => r.delay), expected);
  assert.deepEqual(reconnecting.slice(0, 3).map((r) => r.attempt), [1, 2, 3]);
  assert.equal(reconnecting[49].attempt, 50);
});

test('jitter takes up to the jitter fraction off each delay, drawn from random()', () => {
  const draws = [0, 0.5, 1, 0.25];
  const client = makeClient({ reconnectDelay: 1000, jitter: 0.5, random: () => draws.shift() });
  const reconnecting = record(client, 'reconnecting');
  client.connect();
  for (let i = 0; i < 4; i++) {
    last().serverClose(1006);
    clock.tick(reconnecting[i].delay);
  }
  // base 1000, 2000, 4000, 8000 times (1 - 0.5 * draw)
  assert.deepEqual(reconnecting.map((r) => r.delay), [1000, 1500, 2000, 7000]);
});

test('with the default jitter two clients that drop together come back at different times', () => {
  let seed = 7;
  const random = () => { seed = (seed * 16807) % 2147483647; return seed / 2147483647; };
  const a = makeClient({ random });
  const b = makeClient({ random });
  const delays = [];
  for (const c of [a, b]) {
    c.onEvent('reconnecting', (r) => delays.push(r.delay));
    c.connect();
  }
  sockets[0].serverClose(1006);
  sockets[1].serverClose(1006);
  assert.equal(delays.length, 2);
  assert.notEqual(delays[0], delays[1]);
  for (const d of delays) assert.ok(d >= 500 && d <= 1000, `delay ${d}`);
});

test('a good connection resets the backoff', () => {
  const client = makeClient();
  const reconnecting = record(client, 'reconnecting');
  client.connect();
  for (const d of [1000, 2000, 4000]) {
    last().serverClose(1006);
    clock.tick(d);
  }
  last().accept();
  assert.equal(client.reconnectAttempts, 0);
  last().serverClose(1001, 'going away');
  assert.deepEqual(reconnecting.map((r) => r.delay), [1000, 2000, 4000, 1000]);
});

test('an accepted handshake closed before any message does not reset the backoff', () => {
  const client = makeClient();
  const reconnecting = record(client, 'reconnecting');
  client.connect();
  for (const d of [1000, 2000]) {
    last().serverOpen();
    last().serverClose(1011);
    clock.tick(d);
  }
  last().serverOpen();
  last().serverClose(1011);
  assert.deepEqual(reconnecting.map((r) => r.delay), [1000, 2000, 4000]);
});

test('maxReconnectAttempts and reconnect: false stop reconnecting', () => {
  const limited = makeClient({ maxReconnectAttempts: 2 });
  limited.connect();
  for (let i = 0; i < 2; i++) {
    last().serverClose(1006);
    clock.tick(60000);
  }
  last().serverClose(1006);
  assert.equal(limited.state, States.DISCONNECTED);
  clock.tick(600000);
  assert.equal(sockets.length, 3);

  const none = makeClient({ reconnect: false });
  none.connect();
  last().serverClose(1006);
  clock.tick(600000);
  assert.equal(none.state, States.DISCONNECTED);
  assert.equal(sockets.length, 4);
});

test('a handshake that never completes is abandoned after connectTimeout and retried', () => {
  const client = makeClient({ connectTimeout: 5000 });
  client.connect();
  const first = last();
  clock.tick(4999);
  assert.equal(first.closedBy, null);
  clock.tick(1);
  assert.equal(first.closedBy.code, 4000);
  assert.equal(first.onclose, null);
  assert.equal(client.state, States.RECONNECTING);
  clock.tick(1000);
  assert.equal(sockets.length, 2);
});

// ---------------------------------------------------------------- 4001

test('close 4001 emits auth_failed once and never reconnects', () => {
  const client = makeClient();
  const events = record(client, 'auth_failed', 'reconnecting');
  client.connect();
  // The server's way: handshake completes, then the close comes.
  last().serverOpen();
  last().serverClose(4001, 'authentication failed');
  assert.equal(client.state, States.AUTH_FAILED);
  assert.deepEqual(events, [{ name: 'auth_failed', code: 4001, reason: 'authentication failed' }]);
  clock.tick(3_600_000);
  assert.equal(sockets.length, 1);

  // The application brings a fresh token and connects again.
  client.setToken('fresh.tok.en');
  client.connect();
  assert.equal(sockets.length, 2);
  assert.equal(last().query.get('token'), 'fresh.tok.en');
});

test('a missing token fails as auth_failed without contacting the server', () => {
  const client = makeClient({}, '');
  const failed = record(client, 'auth_failed');
  client.connect();
  assert.equal(sockets.length, 0);
  assert.equal(client.state, States.AUTH_FAILED);
  assert.equal(failed.length, 1);
});

// ---------------------------------------------------------------- tokens

test('the refreshToken hook is asked once after a 4001 and its new token is used', async () => {
  const asked = [];
  const client = makeClient({
    refreshToken: async (info) => { asked.push(info.code); return `fresh.${asked.length}.x`; },
  });
  const failed = record(client, 'auth_failed');
  client.connect();
  last().serverOpen();
  last().serverClose(4001, 'authentication failed');
  await flush();
  assert.equal(client.state, States.RECONNECTING);
  assert.equal(failed.length, 0);
  clock.tick(1000);
  assert.equal(sockets.length, 2);
  assert.equal(last().query.get('token'), 'fresh.1.x');

  // The fresh token is refused too: stop, no second refresh, no loop.
  last().serverOpen();
  last().serverClose(4001, 'authentication failed');
  await flush();
  assert.equal(client.state, States.AUTH_FAILED);
  assert.deepEqual(asked, [4001]);
  assert.equal(failed.length, 1);
  clock.tick(3_600_000);
  assert.equal(sockets.length, 2);
});

test('the refresh budget comes back after a good session', async () => {
  let n = 0;
  const client = makeClient({ refreshToken: () => `fresh.${++n}.x` });
  client.connect();
  for (let round = 1; round <= 3; round++) {
    last().serverClose(4001);
    await flush();
    clock.tick(1000);
    assert.equal(last().query.get('token'), `fresh.${round}.x`);
    last().accept();
    assert.equal(client.state, States.CONNECTED);
  }
  assert.equal(n, 3);
});

test('a refreshToken hook that returns the rejected token again gives up at once', async () => {
  const client = makeClient({ refreshToken: () => 'tok.en.1' });
  client.connect();
  last().serverClose(4001);
  await flush();
  assert.equal(client.state, States.AUTH_FAILED);
  clock.tick(60000);
  assert.equal(sockets.length, 1);
});

test('a token function is called before every connection attempt', async () => {
  let n = 0;
  const client = new NotificationClient(URL_WS, async () => `t.${++n}.x`,
    { WebSocket: FakeWebSocket, random: () => 0 });
  client.connect();
  await flush();
  assert.equal(last().query.get('token'), 't.1.x');
  last().serverClose(1006);
  clock.tick(1000);
  await flush();
  assert.equal(last().query.get('token'), 't.2.x');
});

test('disconnect() while a token is being fetched opens no socket', async () => {
  let release;
  const client = new NotificationClient(URL_WS, () => new Promise((r) => { release = r; }),
    { WebSocket: FakeWebSocket });
  client.connect();
  client.disconnect();
  release('late.tok.en');
  await flush();
  assert.equal(sockets.length, 0);
  assert.equal(client.state, States.DISCONNECTED);
});

// ---------------------------------------------------------------- channels

test('channels are subscribed on open, again after every reconnect, and unsubscribed ones are not', () => {
  const client = makeClient();
  client.subscribe('news');
  client.connect();
  last().accept();
  assert.deepEqual(last().sentOfType('subscribe'), [{ type: 'subscribe', channel: 'news' }]);

  client.subscribe('sport');
  client.subscribe('weather');
  client.unsubscribe('sport');
  assert.deepEqual(last().sent.slice(-3), [
    { type: 'subscribe', channel: 'sport' },
    { type: 'subscribe', channel: 'weather' },
    { type: 'unsubscribe', channel: 'sport' },
  ]);

  last().serverClose(1001, 'going away');
  clock.tick(1000);
  last().serverOpen();
  assert.deepEqual(last().sentOfType('subscribe').map((m) => m.channel), ['news', 'weather']);
  assert.deepEqual(client.channels, ['news', 'weather']);
});

test('subscribed and unsubscribed replies become client events', () => {
  const client = makeClient();
  const events = record(client, 'subscribed', 'unsubscribed');
  const all = [];
  client.on('*', (m) => all.push(m));
  client.connect();
  last().accept();
  last().serverSend({ type: 'subscribed', channel: 'news' });
  last().serverSend({ type: 'unsubscribed', channel: 'news' });
  assert.deepEqual(events, [
    { name: 'subscribed', channel: 'news' },
    { name: 'unsubscribed', channel: 'news' },
  ]);
  assert.equal(all.length, 0, 'control replies are not notifications');
});

test('an invalid channel name throws', () => {
  const client = makeClient();
  assert.throws(() => client.subscribe(''), TypeError);
  assert.throws(() => client.subscribe('has space'), TypeError);
  assert.throws(() => client.subscribe('x'.repeat(129)), TypeError);
  client.subscribe('team/a:b@c.d-e_f');
  assert.deepEqual(client.channels, ['team/a:b@c.d-e_f']);
});

// ---------------------------------------------------------------- heartbeat

test('no answer to a heartbeat ping within heartbeatTimeout reconnects', () => {
  const client = makeClient({ heartbeatInterval: 25000, heartbeatTimeout: 10000 });
  const closes = record(client, 'close');
  client.connect();
  const ws = last();
  ws.accept();
  ws.sent.length = 0;
  clock.tick(24999);
  assert.deepEqual(ws.sent, []);
  clock.tick(1);
  assert.deepEqual(ws.sent, [{ type: 'ping' }]);
  clock.tick(9999);
  assert.equal(client.state, States.CONNECTED);
  clock.tick(1);
  assert.equal(ws.closedBy.code, 4000);
  assert.equal(closes[0].reason, 'heartbeat timeout');
  assert.equal(client.state, States.RECONNECTING);
  clock.tick(1000);
  assert.equal(sockets.length, 2);
});

test('a pong in time keeps the connection and pings go on every interval', () => {
  const client = makeClient({ heartbeatInterval: 25000, heartbeatTimeout: 10000 });
  client.connect();
  const ws = last();
  ws.accept();
  ws.sent.length = 0;
  // A ping every 25 s from the first one, each answered 9 s later.
  for (let i = 1; i <= 5; i++) {
    clock.tick(i === 1 ? 25000 : 25000 - 9000);
    assert.equal(ws.sentOfType('ping').length, i);
    clock.tick(9000);
    ws.serverSend({ type: 'pong', timestamp: 'x' });
  }
  // The sixth ping, unanswered for just under heartbeatTimeout.
  clock.tick(16000 + 9999);
  assert.equal(ws.sentOfType('ping').length, 6);
  assert.equal(client.state, States.CONNECTED);
  assert.equal(sockets.length, 1);
  assert.equal(ws.closedBy, null);
});

test('any message from the server counts as a sign of life', () => {
  const client = makeClient({ heartbeatInterval: 1000, heartbeatTimeout: 500 });
  client.connect();
  last().accept();
  clock.tick(1000);
  clock.tick(400);
  last().serverSend(note('n1'));
  clock.tick(200);
  assert.equal(client.state, States.CONNECTED);
});

// ---------------------------------------------------------------- ack + dedup

test('in ack mode every notification is acknowledged after its handlers ran', () => {
  const client = makeClient({ ack: true });
  const order = [];
  client.on('info', (m) => order.push(`handler ${m.id}`));
  client.connect();
  const ws = last();
  assert.equal(ws.query.get('ack'), '1');
  ws.accept();
  const realSend = ws.send.bind(ws);
  ws.send = (t) => { order.push(`sent ${t}`); realSend(t); };
  ws.serverSend(note('id-1'));
  assert.deepEqual(order, ['handler id-1', 'sent {"type":"ack","id":"id-1"}']);
});

test('a repeated id is dropped but acknowledged again, also across reconnects', () => {
  const client = makeClient({ ack: true });
  const got = [];
  const dups = record(client, 'duplicate');
  client.on('*', (m) => got.push(m.id));
  client.connect();
  last().accept();
  last().serverSend(note('id-1'));
  last().serverSend(note('id-2'));
  last().serverSend(note('id-1'));
  assert.deepEqual(got, ['id-1', 'id-2']);
  assert.deepEqual(last().sentOfType('ack').map((a) => a.id), ['id-1', 'id-2', 'id-1']);
  assert.deepEqual(dups.map((d) => d.id), ['id-1']);

  // The server redelivers an unacked offline message after a reconnect.
  last().serverClose(1006);
  clock.tick(1000);
  last().accept();
  last().serverSend(note('id-2'));
  last().serverSend(note('id-3'));
  assert.deepEqual(got, ['id-1', 'id-2', 'id-3']);
  assert.deepEqual(last().sentOfType('ack').map((a) => a.id), ['id-2', 'id-3']);
});

test('without ack mode no ack is sent', () => {
  const client = makeClient();
  client.connect();
  last().accept();
  last().serverSend(note('id-1'));
  assert.deepEqual(last().sentOfType('ack'), []);
});

test('the dedup memory is bounded by dedupSize, oldest ids forgotten first', () => {
  const client = makeClient({ dedupSize: 2 });
  const got = [];
  client.on('*', (m) => got.push(m.id));
  client.connect();
  last().accept();
  for (const id of ['a', 'b', 'c', 'b', 'a']) last().serverSend(note(id));
  assert.deepEqual(got, ['a', 'b', 'c', 'a']);
});

// ---------------------------------------------------------------- handlers

test('several handlers per type run in order and can be removed', () => {
  const client = makeClient();
  const calls = [];
  const offA = client.on('alert', (m) => calls.push(`a:${m.id}`));
  const b = (m) => calls.push(`b:${m.id}`);
  client.on('alert', b);
  client.on('other', (m) => calls.push(`other:${m.id}`));
  client.connect();
  last().accept();
  last().serverSend(note('1', 'alert'));
  assert.deepEqual(calls, ['a:1', 'b:1']);

  offA();
  last().serverSend(note('2', 'alert'));
  client.off('alert', b);
  last().serverSend(note('3', 'alert'));
  client.off('other');
  last().serverSend(note('4', 'other'));
  assert.deepEqual(calls, ['a:1', 'b:1', 'b:2']);
});

test("'*' handlers get every notification after the type's handlers", () => {
  const client = makeClient();
  const calls = [];
  client.on('*', (m) => calls.push(`*:${m.type}`));
  client.on('info', (m) => calls.push(`info:${m.id}`));
  client.connect();
  last().accept();
  last().serverSend(note('1', 'info'));
  last().serverSend(note('2', 'warning'));
  // A notification whose type looks like a control reply is still one.
  last().serverSend(note('3', 'error'));
  assert.deepEqual(calls, ['info:1', '*:info', '*:warning', '*:error']);
});

test('a failing handler does not stop the others and is reported as an error event', () => {
  const client = makeClient();
  const errors = record(client, 'error');
  const calls = [];
  client.on('info', () => { throw new Error('boom'); });
  client.on('info', (m) => calls.push(m.id));
  client.connect();
  last().accept();
  last().serverSend(note('1'));
  assert.deepEqual(calls, ['1']);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].source, 'handler');
  assert.equal(errors[0].error.message, 'boom');
});

test('server error replies and bad JSON become error events and keep the connection', () => {
  const client = makeClient();
  const errors = record(client, 'error');
  client.connect();
  last().accept();
  last().serverSend({ type: 'error', error: 'invalid channel' });
  last().serverSend('{not json');
  assert.deepEqual(errors.map((e) => e.source), ['server', 'parse']);
  assert.equal(errors[0].error.message, 'invalid channel');
  assert.equal(client.state, States.CONNECTED);
});

// ---------------------------------------------------------------- state

test('state events follow the whole life of a connection', () => {
  const client = makeClient();
  const states = record(client, 'state');
  const opens = record(client, 'open');
  client.connect();
  last().accept();
  last().serverClose(1001, 'going away');
  clock.tick(1000);
  last().serverClose(1006);
  clock.tick(2000);
  last().accept();
  client.disconnect();
  assert.deepEqual(states.map((s) => s.state), [
    'connecting', 'connected', 'reconnecting', 'connecting', 'reconnecting',
    'connecting', 'connected', 'disconnected',
  ]);
  assert.deepEqual(states.filter((s) => s.state === 'reconnecting').map((s) => [s.attempt, s.delay]),
    [[1, 1000], [2, 2000]]);
  assert.equal(opens.length, 2);
});

test('disconnect() closes with 1000 and stops every timer: no reconnect, no ping', () => {
  const client = makeClient({ heartbeatInterval: 1000 });
  client.connect();
  const ws = last();
  ws.accept();
  ws.sent.length = 0;
  client.disconnect();
  assert.deepEqual(ws.closedBy, { code: 1000, reason: 'client disconnect' });
  assert.equal(client.state, States.DISCONNECTED);
  clock.tick(3_600_000);
  assert.equal(sockets.length, 1);
  assert.deepEqual(ws.sent, []);
  // A late close event from the old socket changes nothing.
  assert.equal(ws.onclose, null);

  client.connect();
  assert.equal(sockets.length, 2);
});

test('disconnect() during a backoff wait cancels the pending reconnect', () => {
  const client = makeClient();
  client.connect();
  last().serverClose(1006);
  assert.equal(client.state, States.RECONNECTING);
  client.disconnect();
  clock.tick(3_600_000);
  assert.equal(sockets.length, 1);
  assert.equal(client.state, States.DISCONNECTED);
});

test('event listeners can be removed', () => {
  const client = makeClient();
  const seen = [];
  const fn = (s) => seen.push(s.state);
  const off = client.onEvent('state', fn);
  client.connect();
  off();
  last().accept();
  client.onEvent('state', fn);
  client.offEvent('state', fn);
  client.disconnect();
  assert.deepEqual(seen, ['connecting']);
});

// ---------------------------------------------------------------- environment

test('connect() without any WebSocket implementation throws a clear error', () => {
  const saved = globalThis.WebSocket;
  globalThis.WebSocket = undefined;
  try {
    const client = new NotificationClient(URL_WS, 'a.b.c');
    assert.throws(() => client.connect(), /no WebSocket implementation/);
  } finally {
    globalThis.WebSocket = saved;
  }
});

test("the browser's online event cuts a backoff wait short; disconnect() stops listening", () => {
  const target = new EventTarget();
  globalThis.addEventListener = target.addEventListener.bind(target);
  globalThis.removeEventListener = target.removeEventListener.bind(target);
  try {
    const client = makeClient({ reconnectDelay: 20000 });
    client.connect();
    last().serverClose(1006);
    assert.equal(client.state, States.RECONNECTING);
    target.dispatchEvent(new Event('online'));
    assert.equal(sockets.length, 2);
    assert.equal(client.state, States.CONNECTING);
    // The cancelled backoff timer does not fire a second attempt.
    clock.tick(20000);
    assert.equal(sockets.length, 2);

    client.disconnect();
    target.dispatchEvent(new Event('online'));
    assert.equal(sockets.length, 2);
  } finally {
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
  }
});
