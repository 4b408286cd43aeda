// Fake setTimeout/clearTimeout for the client's unit tests, so that
// reconnect, backoff and heartbeat run in virtual time.
//
// Not node:test's mock.timers: Debian 12's Node 18.20 takes only the
// older enable([...]) form there, and its tick() runs a timer's callback
// before taking the timer off the queue, so a callback that sets a new
// timer (as the client's heartbeat does) corrupts the queue and a later
// clearTimeout removes some other timer (the heartbeat instead of the
// pong deadline). The client looks globalThis.setTimeout up at call
// time, so installing these is enough, whatever Node runs the tests.

export function installFakeTimers() {
  const real = { setTimeout: globalThis.setTimeout, clearTimeout: globalThis.clearTimeout };
  const pending = new Map(); // id -> { at, fn, args }, in the order set
  let now = 0;
  let nextId = 1;

  globalThis.setTimeout = (fn, ms = 0, ...args) => {
    const id = nextId++;
    pending.set(id, { at: now + Math.max(0, Number(ms) || 0), fn, args });
    return id;
  };
  globalThis.clearTimeout = (id) => {
    pending.delete(id);
  };

  // The earliest timer due by `end`; of timers due at the same time,
  // the one set first (Map keeps insertion order).
  const nextDue = (end) => {
    let due = null;
    for (const [id, t] of pending) {
      if (t.at <= end && (due === null || t.at < due.t.at)) due = { id, t };
    }
    return due;
  };

  return {
    // Advance the clock by ms, firing every timer due on the way, each
    // at its own time, timers set by callbacks included.
    tick(ms) {
      const end = now + ms;
      for (let due = nextDue(end); due !== null; due = nextDue(end)) {
        pending.delete(due.id);
        now = due.t.at;
        due.t.fn(...due.t.args);
      }
      now = end;
    },
    get now() {
      return now;
    },
    uninstall() {
      pending.clear();
      Object.assign(globalThis, real);
    },
  };
}
