// Unit tests of resuming in clients/js/notify-client.js: ?since= with the
// last processed id on every reconnect, the `since` and `resume` options
// (an id kept across page loads), the server's resume control frame, and
// dedup across reconnects. Fake WebSocket and fake timers
// (fake-timers.mjs, not node:test's mock timers, broken on Node 18).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { States } from '../../clients/js/notify-client.js';
import {
  useFakes, makeClient, last, record, sockets, clock,
} from './harness.mjs';

const KEY = 'notifyd:last-id:alice';

useFakes();

// A targeted message of alice's log at position seq.
function logged(id, seq, extra = {}) {
  return { id, type: 'info', content: `content of ${id}`, data: {}, timestamp: '2026-11-26T22:43:46.123Z',
    target_user: 'alice', channel: null, seq, ...extra };
}

// A broadcast: in no log, so no seq.
function broadcast(id, channel = 'news') {
  return { id, type: 'info', content: `content of ${id}`, data: {}, timestamp: '2026-11-26T22:43:46.123Z',
    target_user: null, channel };
}

// Drop the connection and let the first backoff delay pass: the client
// opens its next socket.
function reconnect() {
  last().serverClose(1006);
  clock.tick(1000);
  return last();
}

// A Storage lookalike that records every write.
function memoryStorage(initial = {}) {
  const map = new Map(Object.entries(initial));
  return {
    map,
    writes: [],
    getItem(k) { return map.has(k) ? map.get(k) : null; },
    setItem(k, v) { this.writes.push([k, v]); map.set(k, String(v)); },
  };
}

// ---------------------------------------------------------------- since

test('the first connection has no since; lastId is null', () => {
  const client = makeClient();
  assert.equal(client.lastId, null);
  client.connect();
  assert.equal(last().query.get('since'), null);
  assert.ok(!last().url.includes('since'), last().url);
});

test('every reconnect carries since = the last notification processed', () => {
  const client = makeClient();
  client.connect();
  last().accept();
  last().serverSend(logged('id-1', 1));
  last().serverSend(logged('id-2', 2));
  assert.equal(client.lastId, 'id-2');
  assert.equal(reconnect().query.get('since'), 'id-2');

  // Nothing new on that connection: the next one asks for the same.
  last().accept();
  assert.equal(reconnect().query.get('since'), 'id-2');
  last().accept();
  last().serverSend(logged('id-3', 3));
  assert.equal(reconnect().query.get('since'), 'id-3');
});

test('a connection closed before its first message resumes from the same id', () => {
  const client = makeClient();
  client.connect();
  last().accept();
  last().serverSend(logged('id-1', 1));
  last().serverClose(1006);
  clock.tick(1000);
  last().serverOpen();
  last().serverClose(1011);
  clock.tick(2000);
  assert.equal(sockets.length, 3);
  assert.equal(last().query.get('since'), 'id-1');
});

test('lastId moves only after the handlers ran', () => {
  const client = makeClient();
  const during = [];
  client.on('info', (m) => during.push([m.id, client.lastId]));
  client.on('*', (m) => during.push([`* ${m.id}`, client.lastId]));
  client.connect();
  last().accept();
  last().serverSend(logged('id-1', 1));
  last().serverSend(logged('id-2', 2));
  assert.deepEqual(during, [['id-1', null], ['* id-1', null], ['id-2', 'id-1'], ['* id-2', 'id-1']]);
  assert.equal(client.lastId, 'id-2');
});

test('a handler that throws still leaves its notification processed', () => {
  const client = makeClient();
  client.onEvent('error', () => {});
  client.on('info', () => { throw new Error('boom'); });
  client.connect();
  last().accept();
  last().serverSend(logged('id-1', 1));
  assert.equal(reconnect().query.get('since'), 'id-1');
});

test('broadcasts and messages without seq do not move lastId', () => {
  const client = makeClient();
  client.connect();
  last().accept();
  last().serverSend(logged('id-1', 1));
  last().serverSend(broadcast('b-1'));
  last().serverSend({ ...logged('old-style', 0), seq: undefined });
  last().serverSend(logged('bad-seq', '7'));
  assert.equal(client.lastId, 'id-1');
  assert.equal(reconnect().query.get('since'), 'id-1');
});

test('since is URL-encoded, and sent with the token as subprotocol too', () => {
  const odd = 'a b&c=d+e/f?g#h%';
  const client = makeClient({ tokenTransport: 'protocol' });
  client.connect();
  last().accept();
  last().serverSend(logged(odd, 1));
  const ws = reconnect();
  assert.equal(ws.query.get('since'), odd);
  assert.equal(ws.query.get('token'), null);
  assert.deepEqual(ws.protocols, ['bearer', 'tok.en.1']);
  const raw = new URL(ws.url).search;
  assert.ok(!raw.includes(odd), raw);
  assert.equal(new URL(ws.url).hash, '');
});

test('the since option is used from the first connection on', () => {
  const client = makeClient({ since: 'app-known-id' });
  assert.equal(client.lastId, 'app-known-id');
  client.connect();
  assert.equal(last().query.get('since'), 'app-known-id');
  assert.equal(last().query.get('token'), 'tok.en.1');
  last().accept();
  last().serverSend(logged('id-9', 9));
  assert.equal(reconnect().query.get('since'), 'id-9');
});

test('a since option that is not an id throws', () => {
  for (const bad of ['', 42, {}, 'x'.repeat(257)]) {
    assert.throws(() => makeClient({ since: bad }), TypeError, String(bad));
  }
  assert.equal(makeClient({ since: null }).lastId, null);
});

test('disconnect() and connect() again resume too', () => {
  const client = makeClient();
  client.connect();
  last().accept();
  last().serverSend(logged('id-1', 1));
  client.disconnect();
  client.connect();
  assert.equal(sockets.length, 2);
  assert.equal(last().query.get('since'), 'id-1');
});

test('in ack mode lastId is the notification acknowledged, after the ack', () => {
  const client = makeClient({ ack: true });
  const order = [];
  client.on('info', (m) => order.push(`handler ${m.id} last=${client.lastId}`));
  client.connect();
  const ws = last();
  ws.accept();
  const realSend = ws.send.bind(ws);
  ws.send = (t) => { order.push(`sent ${t} last=${client.lastId}`); realSend(t); };
  ws.serverSend(logged('id-1', 1));
  assert.deepEqual(order, ['handler id-1 last=null', 'sent {"type":"ack","id":"id-1"} last=null']);
  assert.equal(client.lastId, 'id-1');
  const next = reconnect();
  assert.equal(next.query.get('since'), 'id-1');
  assert.equal(next.query.get('ack'), '1');
});

// ---------------------------------------------------------------- resume option

test('resume: the stored id is read at construction and used by the first connection', () => {
  const storage = memoryStorage({ [KEY]: 'stored-id' });
  const client = makeClient({ resume: { storage, key: KEY } });
  assert.equal(client.lastId, 'stored-id');
  client.connect();
  assert.equal(last().query.get('since'), 'stored-id');
});

test('resume: the id is written after each processed notification of the log, and a new client (a reload) starts from it', () => {
  const storage = memoryStorage();
  const before = makeClient({ resume: { storage, key: KEY } });
  const stored = [];
  before.on('*', () => stored.push(storage.getItem(KEY)));
  before.connect();
  assert.equal(last().query.get('since'), null);
  last().accept();
  last().serverSend(logged('id-1', 1));
  last().serverSend(broadcast('b-1'));
  last().serverSend(logged('id-2', 2));
  // Written after the handlers: while id-2's ran, id-1 was stored.
  assert.deepEqual(stored, [null, 'id-1', 'id-1']);
  assert.deepEqual(storage.writes, [[KEY, 'id-1'], [KEY, 'id-2']]);
  before.disconnect();

  const after = makeClient({ resume: { storage, key: KEY } });
  after.connect();
  assert.equal(last().query.get('since'), 'id-2');
});

test('resume: the since option wins over the stored id', () => {
  const storage = memoryStorage({ [KEY]: 'stored-id' });
  const client = makeClient({ since: 'given-id', resume: { storage, key: KEY } });
  client.connect();
  assert.equal(last().query.get('since'), 'given-id');
});

test('resume: another key, or a stored value that is no id, gives no since', () => {
  for (const value of ['', 'x'.repeat(257)]) {
    const storage = memoryStorage({ [KEY]: value, 'notifyd:last-id:bob': 'bobs-id' });
    const client = makeClient({ resume: { storage, key: KEY } });
    assert.equal(client.lastId, null);
    client.connect();
    assert.equal(last().query.get('since'), null);
  }
});

test('resume: storage defaults to globalThis.localStorage', () => {
  const storage = memoryStorage({ [KEY]: 'from-local-storage' });
  globalThis.localStorage = storage;
  try {
    const client = makeClient({ resume: { key: KEY } });
    client.connect();
    assert.equal(last().query.get('since'), 'from-local-storage');
    last().accept();
    last().serverSend(logged('id-1', 1));
    assert.equal(storage.getItem(KEY), 'id-1');
  } finally {
    delete globalThis.localStorage;
  }
});

test('resume: a shape that cannot work throws at construction', () => {
  const storage = memoryStorage();
  assert.throws(() => makeClient({ resume: { storage } }), /resume.key/);
  assert.throws(() => makeClient({ resume: { storage, key: '' } }), /resume.key/);
  assert.throws(() => makeClient({ resume: 'yes' }), TypeError);
  assert.throws(() => makeClient({ resume: { key: KEY, storage: {} } }), /getItem and setItem/);
  // Where there is no localStorage (node 18, 20) the default cannot work either.
  if (globalThis.localStorage === undefined) {
    assert.throws(() => makeClient({ resume: { key: KEY } }), /getItem and setItem/);
  }
});

test('resume: failing storage is reported as an error event and changes nothing else', () => {
  const broken = {
    getItem() { throw new Error('SecurityError'); },
    setItem() { throw new Error('QuotaExceededError'); },
  };
  const client = makeClient({ resume: { storage: broken, key: KEY } });
  const errors = record(client, 'error');
  const got = [];
  client.on('*', (m) => got.push(m.id));
  client.connect();
  assert.deepEqual(errors.map((e) => [e.source, e.error.message]), [['storage', 'SecurityError']]);
  assert.equal(last().query.get('since'), null);
  last().accept();
  last().serverSend(logged('id-1', 1));
  assert.deepEqual(got, ['id-1']);
  assert.deepEqual(errors.map((e) => [e.source, e.error.message]),
    [['storage', 'SecurityError'], ['storage', 'QuotaExceededError']]);
  // Kept in memory all the same.
  assert.equal(reconnect().query.get('since'), 'id-1');
});

// ---------------------------------------------------------------- resume frame

test('the resume frame becomes a resume event and never reaches handlers', () => {
  const client = makeClient({ since: 'id-1' });
  const events = record(client, 'resume');
  const handled = [];
  client.on('*', (m) => handled.push(m));
  client.on('resume', (m) => handled.push(m));
  client.connect();
  const ws = last();
  ws.serverOpen();
  // The server's first frame: it also proves the connection good.
  ws.serverSend({ type: 'resume', since: 'id-1', recovered: true });
  assert.equal(client.state, States.CONNECTED);
  ws.serverSend(logged('id-2', 2));
  assert.deepEqual(events, [{ name: 'resume', since: 'id-1', recovered: true }]);
  assert.deepEqual(handled.map((m) => m.id), ['id-2']);
});

test('recovered: false says so; the retained log that follows is shown once, and lastId moves through it', () => {
  const client = makeClient({ since: 'trimmed-id' });
  const events = record(client, 'resume', 'duplicate');
  const got = [];
  client.on('*', (m) => got.push(m.id));
  client.connect();
  last().accept();
  last().serverSend({ type: 'resume', since: 'trimmed-id', recovered: false });
  for (let seq = 5; seq <= 7; seq++) last().serverSend(logged(`id-${seq}`, seq));
  assert.deepEqual(got, ['id-5', 'id-6', 'id-7']);
  assert.deepEqual(events, [{ name: 'resume', since: 'trimmed-id', recovered: false }]);

  // The next resume fails too (say, the log was trimmed again): the whole
  // retained log comes back, already shown messages are dropped by id.
  const ws = reconnect();
  assert.equal(ws.query.get('since'), 'id-7');
  ws.accept();
  ws.serverSend({ type: 'resume', since: 'id-7', recovered: false });
  for (let seq = 6; seq <= 8; seq++) ws.serverSend(logged(`id-${seq}`, seq));
  assert.deepEqual(got, ['id-5', 'id-6', 'id-7', 'id-8']);
  assert.deepEqual(events.filter((e) => e.name === 'duplicate').map((e) => e.id), ['id-6', 'id-7']);
  assert.equal(client.lastId, 'id-8');
});

test('a resume frame cut off after repeats resumes from the last repeat, not from the unknown id', () => {
  const client = makeClient();
  const got = [];
  client.on('*', (m) => got.push(m.id));
  client.connect();
  last().accept();
  for (let seq = 1; seq <= 3; seq++) last().serverSend(logged(`id-${seq}`, seq));
  // A resume that the server could not honour replays from the start...
  const ws = reconnect();
  ws.accept();
  ws.serverSend({ type: 'resume', since: 'id-3', recovered: false });
  ws.serverSend(logged('id-1', 1));
  ws.serverSend(logged('id-2', 2));
  // ...and the connection drops in the middle of the repeats.
  assert.equal(client.lastId, 'id-2');
  assert.equal(reconnect().query.get('since'), 'id-2');
  assert.deepEqual(got, ['id-1', 'id-2', 'id-3']);
});

test('a resume frame without a boolean recovered counts as not recovered', () => {
  const client = makeClient({ since: 'id-1' });
  const events = record(client, 'resume');
  client.connect();
  last().accept();
  last().serverSend({ type: 'resume', since: 'id-1' });
  last().serverSend({ type: 'resume', since: 'id-1', recovered: 'true' });
  assert.deepEqual(events.map((e) => e.recovered), [false, false]);
});

test('messages after a reconnect are shown once each, in order, seq untouched', () => {
  const client = makeClient();
  const got = [];
  client.on('*', (m) => got.push(m));
  client.connect();
  last().accept();
  last().serverSend(logged('id-1', 1));
  last().serverSend(logged('id-2', 2));
  const ws = reconnect();
  assert.equal(ws.query.get('since'), 'id-2');
  ws.accept();
  ws.serverSend({ type: 'resume', since: 'id-2', recovered: true });
  // A copy sent twice (a live copy that raced the replay) is dropped.
  for (const seq of [3, 4, 4, 5]) ws.serverSend(logged(`id-${seq}`, seq));
  assert.deepEqual(got.map((m) => [m.id, m.seq]), [['id-1', 1], ['id-2', 2], ['id-3', 3], ['id-4', 4], ['id-5', 5]]);
  assert.deepEqual(got[2], logged('id-3', 3));
});
