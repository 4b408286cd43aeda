// Unit tests of close code 4002 ("token expired") in
// clients/js/notify-client.js: notifyd-ws closes a connection a little
// before its token's exp; the client asks refreshToken for a new token
// and reconnects at once, resuming with since=, or, without a hook,
// reconnects as after any drop. Fake WebSocket and fake timers
// (fake-timers.mjs, not node:test's mock timers, broken on Node 18).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { NotificationClient, States } from '../../clients/js/notify-client.js';
import {
  useFakes, freshSockets, makeClient, last, record, sockets, clock, flush, FakeWebSocket, URL_WS,
} from './harness.mjs';

useFakes();

function logged(id, seq) {
  return { id, type: 'info', content: `content of ${id}`, data: {}, timestamp: '2026-11-26T22:43:46.123Z',
    target_user: 'alice', channel: null, seq };
}

// A connected client that has processed the log up to id 'm2'.
function connectedAt(client) {
  client.connect();
  last().accept();
  last().serverSend(logged('m1', 1));
  last().serverSend(logged('m2', 2));
  assert.equal(client.state, States.CONNECTED);
}

test('4002 asks refreshToken and reconnects at once with the new token, resuming with since', async () => {
  const asked = [];
  const client = makeClient({
    refreshToken: async (info) => { asked.push(info); return 'fresh.tok.en'; },
  });
  const events = record(client, 'reconnecting', 'auth_failed');
  connectedAt(client);
  last().serverClose(4002, 'token expired');
  await flush();
  assert.deepEqual(asked, [{ code: 4002, reason: 'token expired' }]);
  // No backoff: the socket is there without any time passing.
  assert.equal(sockets.length, 2);
  assert.equal(last().query.get('token'), 'fresh.tok.en');
  assert.equal(last().query.get('since'), 'm2');
  assert.deepEqual(events, [{ name: 'reconnecting', attempt: 0, delay: 0, code: 4002, reason: 'token expired' }]);
  last().accept();
  assert.equal(client.state, States.CONNECTED);
  assert.equal(client.reconnectAttempts, 0);
});

test('a synchronous refreshToken hook and the subprotocol transport work the same', () => {
  const client = makeClient({ tokenTransport: 'protocol', refreshToken: () => 'fresh.tok.en' });
  connectedAt(client);
  last().serverClose(4002, 'token expired');
  assert.equal(sockets.length, 2);
  assert.deepEqual(last().protocols, ['bearer', 'fresh.tok.en']);
  assert.equal(last().query.get('since'), 'm2');
});

test('every expiry gets its own refresh: the budget of 4001 is not used up', async () => {
  let n = 0;
  const client = makeClient({ refreshToken: () => `fresh.${++n}.x` });
  connectedAt(client);
  for (let round = 1; round <= 3; round++) {
    last().serverClose(4002, 'token expired');
    await flush();
    assert.equal(last().query.get('token'), `fresh.${round}.x`);
    last().accept();
  }
  // A 4001 now still gets its one refresh.
  last().serverClose(4001, 'authentication failed');
  await flush();
  clock.tick(1000);
  assert.equal(last().query.get('token'), 'fresh.4.x');
  assert.equal(n, 4);
});

test('without refreshToken, 4002 reconnects after the usual backoff with the same token and since', () => {
  const client = makeClient();
  const failed = record(client, 'auth_failed');
  connectedAt(client);
  last().serverClose(4002, 'token expired');
  assert.equal(client.state, States.RECONNECTING);
  assert.equal(sockets.length, 1);
  clock.tick(1000);
  assert.equal(sockets.length, 2);
  assert.equal(last().query.get('token'), 'tok.en.1');
  assert.equal(last().query.get('since'), 'm2');
  // The server refuses the expired token: 4001 does what it always did.
  last().serverOpen();
  last().serverClose(4001, 'authentication failed');
  assert.equal(client.state, States.AUTH_FAILED);
  assert.equal(failed.length, 1);
  clock.tick(3_600_000);
  assert.equal(sockets.length, 2);
});

test('without refreshToken, a token function is asked again for the reconnect', async () => {
  let n = 0;
  const client = new NotificationClient(URL_WS, async () => `t.${++n}.x`,
    { WebSocket: FakeWebSocket, random: () => 0 });
  client.connect();
  await flush();
  last().accept();
  last().serverClose(4002, 'token expired');
  clock.tick(1000);
  await flush();
  assert.equal(last().query.get('token'), 't.2.x');
});

test('a hook that gives no new token, the same one, or fails falls back to the backoff', async () => {
  for (const hook of [() => null, () => 'tok.en.1', async () => { throw new Error('offline'); }]) {
    freshSockets();
    const client = makeClient({ refreshToken: hook });
    const errors = record(client, 'error');
    connectedAt(client);
    last().serverClose(4002, 'token expired');
    await flush();
    assert.equal(sockets.length, 1, String(hook));
    assert.equal(client.state, States.RECONNECTING);
    clock.tick(1000);
    assert.equal(sockets.length, 2);
    assert.equal(last().query.get('token'), 'tok.en.1');
    assert.equal(errors.filter((e) => e.source === 'token').length,
      hook.constructor.name === 'AsyncFunction' ? 1 : 0);
    client.disconnect();
  }
});

test('a 4002 before the server answered anything waits out the backoff: no reconnect loop', async () => {
  let n = 0;
  const client = makeClient({ refreshToken: () => `fresh.${++n}.x` });
  client.connect();
  last().serverOpen();
  last().serverClose(4002, 'token expired');
  await flush();
  assert.equal(sockets.length, 1);
  clock.tick(1000);
  assert.equal(sockets.length, 2);
  assert.equal(last().query.get('token'), 'fresh.1.x');
  last().serverOpen();
  last().serverClose(4002, 'token expired');
  await flush();
  clock.tick(1999);
  assert.equal(sockets.length, 2);
  clock.tick(1);
  assert.equal(sockets.length, 3);
});

test('disconnect() while the new token is fetched opens no socket', async () => {
  let release;
  const client = makeClient({ refreshToken: () => new Promise((r) => { release = r; }) });
  connectedAt(client);
  last().serverClose(4002, 'token expired');
  assert.equal(client.state, States.RECONNECTING);
  client.disconnect();
  release('late.tok.en');
  await flush();
  clock.tick(60000);
  assert.equal(sockets.length, 1);
  assert.equal(client.state, States.DISCONNECTED);
});
