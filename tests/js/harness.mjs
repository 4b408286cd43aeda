// What every unit test file of clients/js/notify-client.js shares: a
// fake WebSocket class (fake-websocket.mjs) and fake timers
// (fake-timers.mjs, not node:test's mock timers, broken on Node 18),
// installed before each test and removed after it, and the helpers
// around them.
import { beforeEach, afterEach } from 'node:test';

import { NotificationClient } from '../../clients/js/notify-client.js';
import { makeFakeWebSocket } from './fake-websocket.mjs';
import { installFakeTimers } from './fake-timers.mjs';

export const URL_WS = 'ws://127.0.0.1:8080/ws/notifications';

// Live bindings: a test file that imports them sees the ones installed
// for the test that runs.
export let FakeWebSocket;
export let sockets;
export let clock;

// A new fake WebSocket class, with no socket opened yet.
export function freshSockets() {
  ({ FakeWebSocket, sockets } = makeFakeWebSocket());
}

// Install the fakes around every test of the file that calls it.
export function useFakes() {
  beforeEach(() => {
    freshSockets();
    clock = installFakeTimers();
  });
  afterEach(() => {
    clock.uninstall();
  });
}

export function makeClient(options = {}, token = 'tok.en.1') {
  return new NotificationClient(URL_WS, token, {
    WebSocket: FakeWebSocket,
    random: () => 0, // no jitter unless a test asks for it
    ...options,
  });
}

// The socket the client opened last.
export function last() {
  return sockets[sockets.length - 1];
}

// Every event of these names the client emits, in order.
export function record(client, ...names) {
  const seen = [];
  for (const name of names) {
    client.onEvent(name, (detail) => seen.push({ name, ...detail }));
  }
  return seen;
}

// Let promise callbacks (async token providers) run.
export async function flush() {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}
