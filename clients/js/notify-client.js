/*
 * notify-client.js: the browser client of notifyd-ws. A dependency-free
 * ES module; see notify-client.d.ts for the typed API and
 * clients/js/README.md for usage.
 *
 *   import { NotificationClient } from '/notify-client.js';
 *   const client = new NotificationClient('wss://example.com/ws/notifications', token);
 *   client.on('new_message', (msg) => show(msg.content));
 *   client.onEvent('state', ({ state }) => badge(state));
 *   client.connect();
 *
 * Wire protocol (notifyd(7), notifyd-ws(8)): the token travels as
 * ?token=JWT (or as the subprotocol pair "bearer", JWT); the server sends
 * notification objects, which always carry an "id" (and, when they come
 * from the user's log, its position "seq"), and control frames (pong,
 * subscribed, unsubscribed, error, resume), which never do. A bad token is
 * accepted at the HTTP level and then closed with code 4001; a token about
 * to expire closes its connection with 4002, a little before its exp, so
 * that the client gets a new one (refreshToken) and comes back at once.
 *
 * Resuming: the client keeps the id of the last notification of the
 * user's log that it processed and asks for what follows it on every
 * reconnect (?since=ID); the server answers first with
 * {"type":"resume","since":ID,"recovered":true|false}.
 */

const AUTH_FAILED_CODE = 4001;
const TOKEN_EXPIRED_CODE = 4002;
const WS_OPEN = 1;
// Close codes a client may send are 1000 or 3000..4999.
const CLIENT_GIVES_UP_CODE = 4000;
const CHANNEL_RE = /^[A-Za-z0-9_.:@/-]{1,128}$/;
// Longer than any id notifyd mints or accepts: a stored value past it
// is not one of ours.
const MAX_ID_LENGTH = 256;

export const States = Object.freeze({
  DISCONNECTED: 'disconnected',
  CONNECTING: 'connecting',
  CONNECTED: 'connected',
  RECONNECTING: 'reconnecting',
  AUTH_FAILED: 'auth_failed',
});

const DEFAULTS = Object.freeze({
  ack: false,
  tokenTransport: 'query',
  reconnect: true,
  reconnectDelay: 1000,
  maxReconnectDelay: 30000,
  backoffFactor: 2,
  jitter: 0.5,
  maxReconnectAttempts: Infinity,
  connectTimeout: 10000,
  heartbeatInterval: 25000,
  heartbeatTimeout: 10000,
  dedupSize: 1000,
  since: null,
  resume: null,
  refreshToken: null,
  WebSocket: null,
  timers: null,
  random: null,
});

// Looked up at call time, so that fake timers installed after this module
// was loaded (node:test mock.timers, sinon) still take effect.
const globalTimers = Object.freeze({
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (id) => globalThis.clearTimeout(id),
  now: () => Date.now(),
});

function isId(v) {
  return typeof v === 'string' && v !== '' && v.length <= MAX_ID_LENGTH;
}

// options.resume -> {storage, key}, or null. Throws on a shape that
// cannot work, so that the mistake shows at construction, not after the
// first reload that fails to resume.
function resumeStore(resume) {
  if (resume === null || resume === undefined || resume === false) return null;
  if (typeof resume !== 'object') {
    throw new TypeError('NotificationClient: resume must be an object {key, storage?}');
  }
  if (typeof resume.key !== 'string' || resume.key === '') {
    throw new TypeError('NotificationClient: resume.key must be a non-empty string');
  }
  let storage = resume.storage;
  if (storage === undefined) {
    try {
      storage = globalThis.localStorage;
    } catch {
      storage = undefined; // a sandboxed frame may not touch it at all
    }
  }
  if (!storage || typeof storage.getItem !== 'function' || typeof storage.setItem !== 'function') {
    throw new TypeError('NotificationClient: resume.storage must have getItem and setItem (e.g. localStorage)');
  }
  return { storage, key: resume.key };
}

function isThenable(v) {
  return v !== null && (typeof v === 'object' || typeof v === 'function') &&
    typeof v.then === 'function';
}

export class NotificationClient {
  #url;
  #token;
  #opts;
  #timers;
  #random;
  #ws = null;
  #state = States.DISCONNECTED;
  #handlers = new Map();   // message type or '*' -> Set of functions
  #listeners = new Map();  // client event name -> Set of functions
  #channels = new Set();   // wanted channels, sent again after reconnect
  #seen = new Set();       // recent notification ids, oldest first
  #lastId = null;          // last processed notification of the user's log
  #resume = null;          // {storage, key} where #lastId is kept, or null
  #storageError = null;    // failed read at construction, reported on connect
  #attempt = 0;            // reconnect attempts since the last good session
  #authRetried = false;    // refreshToken used since the last good session
  #generation = 0;         // bumped to cancel a pending token lookup
  #lastToken = null;
  // Pending timer ids: reconnect backoff, connect deadline, next
  // heartbeat ping, pong deadline.
  #timerIds = { reconnect: null, connect: null, heartbeat: null, pong: null };
  #onlineListener = null;

  /**
   * @param {string} url  the WebSocket endpoint, e.g.
   *   "wss://example.com/ws/notifications" (http(s) and, in a page,
   *   relative URLs are accepted too)
   * @param {string|(() => string|Promise<string>)} token  a JWT, or a
   *   function called before every connection attempt to get one
   * @param {object} [options]  see notify-client.d.ts
   */
  constructor(url, token, options = {}) {
    if (typeof url !== 'string' || url === '') {
      throw new TypeError('NotificationClient: url must be a non-empty string');
    }
    this.#url = url;
    this.#token = token;
    this.#opts = { ...DEFAULTS, ...options };
    if (this.#opts.tokenTransport !== 'query' && this.#opts.tokenTransport !== 'protocol') {
      throw new TypeError("NotificationClient: tokenTransport must be 'query' or 'protocol'");
    }
    this.#timers = this.#opts.timers || globalTimers;
    this.#random = this.#opts.random || Math.random;
    this.#resume = resumeStore(this.#opts.resume);
    const since = this.#opts.since;
    if (since !== null && since !== undefined) {
      if (!isId(since)) {
        throw new TypeError('NotificationClient: since must be a notification id (a non-empty string)');
      }
      this.#lastId = since;
    } else if (this.#resume) {
      this.#lastId = this.#loadLastId();
    }
  }

  /** The current connection state, one of States. */
  get state() { return this.#state; }

  /** The channels this client wants, re-subscribed after every reconnect. */
  get channels() { return [...this.#channels]; }

  /** Reconnect attempts made since the last good connection. */
  get reconnectAttempts() { return this.#attempt; }

  /**
   * The id of the last notification of the user's log (one with a seq)
   * that this client processed, sent as ?since= on the next connection;
   * null before the first.
   */
  get lastId() { return this.#lastId; }

  /** Replace the token used from the next connection attempt on. */
  setToken(token) {
    this.#token = token;
    return this;
  }

  /** Open the connection (no-op while connecting or connected). */
  connect() {
    if (this.#state === States.CONNECTING || this.#state === States.CONNECTED) {
      return this;
    }
    if (typeof (this.#opts.WebSocket || globalThis.WebSocket) !== 'function') {
      throw new Error('NotificationClient: no WebSocket implementation (pass options.WebSocket)');
    }
    this.#clearTimer('reconnect');
    if (this.#state === States.AUTH_FAILED || this.#state === States.DISCONNECTED) {
      this.#attempt = 0;
      this.#authRetried = false;
    }
    this.#watchOnline(true);
    if (this.#storageError) {
      const error = this.#storageError;
      this.#storageError = null;
      this.#emit('error', { source: 'storage', error });
    }
    this.#open();
    return this;
  }

  /** Close the connection for good: no reconnect until connect(). */
  disconnect(code = 1000, reason = 'client disconnect') {
    this.#generation++;
    this.#watchOnline(false);
    this.#stopTimers();
    this.#clearTimer('reconnect');
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      this.#drop(ws, code, reason);
    }
    this.#setState(States.DISCONNECTED, {});
    if (ws) {
      this.#emit('close', { code, reason, wasClean: true, byClient: true });
    }
    return this;
  }

  /**
   * Handle notifications of one type ('*': every notification). Several
   * handlers per type are kept, in order. Returns a function that removes
   * this handler.
   */
  on(type, handler) {
    return NotificationClient.#add(this.#handlers, type, handler);
  }

  /** Remove one handler, or every handler of the type when none is given. */
  off(type, handler) {
    NotificationClient.#remove(this.#handlers, type, handler);
    return this;
  }

  /**
   * Listen to a client event: state, open, close, reconnecting,
   * auth_failed, subscribed, unsubscribed, resume, duplicate, error. Returns a
   * function that removes the listener.
   */
  onEvent(name, listener) {
    return NotificationClient.#add(this.#listeners, name, listener);
  }

  offEvent(name, listener) {
    NotificationClient.#remove(this.#listeners, name, listener);
    return this;
  }

  /** Subscribe to a channel now (when connected) and after every reconnect. */
  subscribe(channel) {
    if (typeof channel !== 'string' || !CHANNEL_RE.test(channel)) {
      throw new TypeError(`NotificationClient: invalid channel name ${JSON.stringify(channel)}`);
    }
    this.#channels.add(channel);
    this.send({ type: 'subscribe', channel });
    return this;
  }

  unsubscribe(channel) {
    const had = this.#channels.delete(channel);
    if (had) {
      this.send({ type: 'unsubscribe', channel });
    }
    return this;
  }

  /** Send a JSON message; false when the socket is not open. */
  send(data) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WS_OPEN) {
      return false;
    }
    try {
      ws.send(JSON.stringify(data));
    } catch (error) {
      this.#emit('error', { source: 'socket', error });
      return false;
    }
    return true;
  }

  // ---- connection life cycle ----

  #open() {
    const generation = ++this.#generation;
    this.#setState(States.CONNECTING, { attempt: this.#attempt });
    let token;
    try {
      token = typeof this.#token === 'function' ? this.#token() : this.#token;
    } catch (error) {
      this.#emit('error', { source: 'token', error });
      this.#scheduleReconnect({ code: 0, reason: 'token provider failed' });
      return;
    }
    if (isThenable(token)) {
      token.then(
        (t) => { if (generation === this.#generation) this.#openWith(t); },
        (error) => {
          if (generation !== this.#generation) return;
          this.#emit('error', { source: 'token', error });
          this.#scheduleReconnect({ code: 0, reason: 'token provider failed' });
        });
    } else {
      this.#openWith(token);
    }
  }

  #openWith(token) {
    if (typeof token !== 'string' || token === '') {
      // Without a token the server can only say 4001: do not ask it.
      this.#authFailed({ code: AUTH_FAILED_CODE, reason: 'no token', wasClean: true });
      return;
    }
    this.#lastToken = token;
    const WS = this.#opts.WebSocket || globalThis.WebSocket;
    let ws;
    try {
      const url = this.#endpoint(token);
      ws = this.#opts.tokenTransport === 'protocol'
        ? new WS(url, ['bearer', token])
        : new WS(url);
    } catch (error) {
      this.#emit('error', { source: 'socket', error });
      this.#scheduleReconnect({ code: 0, reason: String(error && error.message || error) });
      return;
    }
    this.#ws = ws;
    ws.onopen = () => this.#onSocketOpen(ws);
    ws.onmessage = (ev) => this.#onSocketMessage(ws, ev);
    ws.onclose = (ev) => this.#onSocketClose(ws, ev);
    ws.onerror = () => {
      if (ws === this.#ws) this.#emit('error', { source: 'socket', error: new Error('WebSocket error') });
    };
    // Covers both a handshake that hangs and a server that never answers
    // the first ping.
    this.#setTimer('connect', this.#opts.connectTimeout, () => {
      if (ws === this.#ws) this.#abandon(ws, 'connect timeout');
    });
  }

  #endpoint(token) {
    const base = globalThis.location && globalThis.location.href;
    const url = base ? new URL(this.#url, base) : new URL(this.#url);
    if (url.protocol === 'http:') url.protocol = 'ws:';
    else if (url.protocol === 'https:') url.protocol = 'wss:';
    if (this.#opts.tokenTransport === 'query') {
      url.searchParams.set('token', token);
    }
    if (this.#opts.ack) {
      url.searchParams.set('ack', '1');
    }
    if (this.#lastId !== null) {
      url.searchParams.set('since', this.#lastId);
    }
    return url.toString();
  }

  #onSocketOpen(ws) {
    if (ws !== this.#ws) return;
    // notifyd-ws completes the handshake even for a bad token and then
    // closes with 4001, so an open socket proves nothing yet: the first
    // message from the server (the pong at the latest) does.
    this.send({ type: 'ping' });
    for (const channel of this.#channels) {
      this.send({ type: 'subscribe', channel });
    }
  }

  #confirmed() {
    this.#clearTimer('connect');
    this.#attempt = 0;
    this.#authRetried = false;
    this.#setState(States.CONNECTED, {});
    this.#emit('open', {});
    this.#scheduleHeartbeat();
  }

  #onSocketClose(ws, ev) {
    if (ws !== this.#ws) return;
    this.#socketGone({
      code: ev && typeof ev.code === 'number' ? ev.code : 1006,
      reason: (ev && ev.reason) || '',
      wasClean: Boolean(ev && ev.wasClean),
    });
  }

  // Give up on a socket that may never fire onclose (dead peer, lost
  // network): forget it now and go on as if it had closed.
  #abandon(ws, reason) {
    this.#drop(ws, CLIENT_GIVES_UP_CODE, reason);
    this.#socketGone({ code: 1006, reason, wasClean: false });
  }

  #drop(ws, code, reason) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(code, reason);
    } catch {
      // Already closing, or a code the implementation refuses: it is gone.
    }
  }

  #socketGone(info) {
    this.#ws = null;
    this.#stopTimers();
    this.#emit('close', info);
    if (this.#state === States.DISCONNECTED) return;
    if (info.code === AUTH_FAILED_CODE) {
      this.#authFailed(info);
    } else if (info.code === TOKEN_EXPIRED_CODE) {
      this.#tokenExpired(info);
    } else {
      this.#scheduleReconnect(info);
    }
  }

  #authFailed(info) {
    const refresh = this.#opts.refreshToken;
    if (typeof refresh !== 'function' || this.#authRetried) {
      this.#giveUpAuth(info);
      return;
    }
    // One fresh token per good session at most: a refresh hook that keeps
    // returning rejected tokens must not turn into a reconnect loop.
    this.#authRetried = true;
    this.#refresh(refresh, info, (token) => {
      if (token !== null) {
        this.#token = token;
        this.#scheduleReconnect(info);
      } else {
        this.#giveUpAuth(info);
      }
    });
  }

  // The server closes a connection shortly before its token expires.
  // With a refreshToken hook the client gets a new token and reconnects
  // at once, resuming with since=, so nothing is missed meanwhile.
  // Without one, or when the hook gives no new token, it reconnects as
  // after any drop, with the token it has (a token function is asked
  // again then); should the server refuse it, 4001 takes the usual path.
  #tokenExpired(info) {
    const refresh = this.#opts.refreshToken;
    // A 4002 before the server said anything is no session to carry on:
    // backoff, so that a hook handing out tokens about to expire cannot
    // make a reconnect loop.
    const wasConnected = this.#state === States.CONNECTED;
    if (typeof refresh !== 'function') {
      this.#scheduleReconnect(info);
      return;
    }
    this.#refresh(refresh, info, (token) => {
      if (token !== null) this.#token = token;
      if (token === null || !wasConnected) {
        this.#scheduleReconnect(info);
        return;
      }
      this.#emit('reconnecting', { attempt: this.#attempt, delay: 0, code: info.code, reason: info.reason });
      this.#open();
    });
  }

  // Ask the refreshToken hook for a token to replace the last one; then
  // done(token), or done(null) when it gave none, the same one again, or
  // failed. Nothing happens if the client moved on meanwhile
  // (disconnect(), connect()).
  #refresh(refresh, info, done) {
    const generation = ++this.#generation;
    const oldToken = this.#lastToken;
    const settle = (token) => {
      if (generation !== this.#generation) return;
      done(typeof token === 'string' && token !== '' && token !== oldToken ? token : null);
    };
    this.#setState(States.RECONNECTING, { attempt: this.#attempt, delay: 0, refreshing: true });
    let result;
    try {
      result = refresh({ code: info.code, reason: info.reason });
    } catch (error) {
      this.#emit('error', { source: 'token', error });
      settle(null);
      return;
    }
    if (isThenable(result)) {
      result.then(settle, (error) => {
        if (generation !== this.#generation) return;
        this.#emit('error', { source: 'token', error });
        settle(null);
      });
    } else {
      settle(result);
    }
  }

  #giveUpAuth(info) {
    this.#watchOnline(false);
    this.#setState(States.AUTH_FAILED, { code: info.code, reason: info.reason });
    this.#emit('auth_failed', { code: info.code, reason: info.reason });
  }

  #scheduleReconnect(info) {
    const o = this.#opts;
    if (!o.reconnect || this.#attempt >= o.maxReconnectAttempts) {
      this.#watchOnline(false);
      this.#setState(States.DISCONNECTED, { code: info.code, reason: info.reason, gaveUp: true });
      return;
    }
    this.#attempt++;
    const delay = this.#backoff(this.#attempt);
    this.#setState(States.RECONNECTING, { attempt: this.#attempt, delay });
    this.#emit('reconnecting', { attempt: this.#attempt, delay, code: info.code, reason: info.reason });
    this.#setTimer('reconnect', delay, () => this.#open());
  }

  /**
   * Exponential backoff with jitter: attempt n waits
   * min(max, initial * factor^(n-1)), less up to `jitter` of it at random,
   * so clients dropped together by a server restart come back spread out.
   */
  #backoff(attempt) {
    const o = this.#opts;
    const base = Math.min(o.maxReconnectDelay,
      o.reconnectDelay * Math.pow(o.backoffFactor, attempt - 1));
    const jitter = Math.min(Math.max(o.jitter, 0), 1);
    return Math.round(base * (1 - jitter * this.#random()));
  }

  // A browser that comes back online need not wait out a long backoff.
  #watchOnline(on) {
    const g = globalThis;
    if (typeof g.addEventListener !== 'function') return;
    if (on && !this.#onlineListener) {
      this.#onlineListener = () => {
        if (this.#state === States.RECONNECTING && this.#timerIds.reconnect !== null) {
          this.#clearTimer('reconnect');
          this.#open();
        }
      };
      g.addEventListener('online', this.#onlineListener);
    } else if (!on && this.#onlineListener) {
      g.removeEventListener('online', this.#onlineListener);
      this.#onlineListener = null;
    }
  }

  // ---- heartbeat ----

  #scheduleHeartbeat() {
    this.#setTimer('heartbeat', this.#opts.heartbeatInterval, () => {
      const ws = this.#ws;
      if (!ws || this.#state !== States.CONNECTED) return;
      if (this.#timerIds.pong === null) {
        this.send({ type: 'ping' });
        this.#setTimer('pong', this.#opts.heartbeatTimeout, () => {
          if (ws === this.#ws) this.#abandon(ws, 'heartbeat timeout');
        });
      }
      this.#scheduleHeartbeat();
    });
  }

  // ---- inbound messages ----

  #onSocketMessage(ws, ev) {
    if (ws !== this.#ws) return;
    // Anything from the server proves the connection alive.
    this.#clearTimer('pong');
    if (typeof ev.data !== 'string') {
      this.#emit('error', { source: 'parse', error: new Error('non-text frame ignored') });
      return;
    }
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch (error) {
      this.#emit('error', { source: 'parse', error });
      return;
    }
    if (this.#state === States.CONNECTING) {
      this.#confirmed();
      if (ws !== this.#ws) return;
    }
    if (msg === null || typeof msg !== 'object') return;
    if (typeof msg.id === 'string') {
      this.#notification(msg);
    } else {
      this.#control(msg);
    }
  }

  #control(msg) {
    switch (msg.type) {
      case 'pong':
        break;
      case 'subscribed':
      case 'unsubscribed':
        this.#emit(msg.type, { channel: msg.channel });
        break;
      case 'error':
        this.#emit('error', { source: 'server', error: new Error(String(msg.error)), message: msg });
        break;
      case 'resume':
        // Anything but an explicit true may have lost messages: the app
        // must then reload its state, so err on that side.
        this.#emit('resume', { since: msg.since, recovered: msg.recovered === true });
        break;
      default:
        break;
    }
  }

  #notification(msg) {
    const id = msg.id;
    if (this.#seen.has(id)) {
      // Redelivered (an ack got lost, or a reconnect replayed it): drop,
      // but acknowledge again so that the server can forget it.
      this.#emit('duplicate', { id, message: msg });
      this.#ack(id);
      // Still a position the server has reached in order: resuming from
      // it cannot skip anything, and keeps an unknown since (answered
      // with the whole log) from being asked for again and again.
      this.#processed(msg);
      return;
    }
    this.#remember(id);
    this.#dispatch(this.#handlers.get(msg.type), msg);
    this.#dispatch(this.#handlers.get('*'), msg);
    this.#ack(id);
    this.#processed(msg);
  }

  // Only messages of the user's log carry seq; a broadcast's id is in no
  // log, and resuming from it would bring back the whole log.
  #processed(msg) {
    if (!Number.isInteger(msg.seq) || !isId(msg.id)) return;
    this.#lastId = msg.id;
    if (!this.#resume) return;
    try {
      this.#resume.storage.setItem(this.#resume.key, msg.id);
    } catch (error) {
      this.#emit('error', { source: 'storage', error });
    }
  }

  #loadLastId() {
    try {
      const v = this.#resume.storage.getItem(this.#resume.key);
      return isId(v) ? v : null;
    } catch (error) {
      this.#storageError = error;
      return null;
    }
  }

  #ack(id) {
    if (this.#opts.ack) {
      this.send({ type: 'ack', id });
    }
  }

  #remember(id) {
    this.#seen.add(id);
    const max = Math.max(0, this.#opts.dedupSize);
    while (this.#seen.size > max) {
      this.#seen.delete(this.#seen.values().next().value);
    }
  }

  #dispatch(set, msg) {
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(msg);
      } catch (error) {
        this.#emit('error', { source: 'handler', error, message: msg });
      }
    }
  }

  // ---- events, state and timers ----

  #setState(state, detail) {
    const previous = this.#state;
    this.#state = state;
    if (previous !== state || state === States.RECONNECTING || state === States.CONNECTING) {
      this.#emit('state', { ...detail, state, previous });
    }
  }

  #emit(name, detail) {
    const set = this.#listeners.get(name);
    if (!set || set.size === 0) {
      if (name === 'error' && detail.source === 'handler' && globalThis.console) {
        console.error('NotificationClient: handler failed:', detail.error);
      }
      return;
    }
    for (const fn of [...set]) {
      try {
        fn(detail);
      } catch (error) {
        if (globalThis.console) console.error(`NotificationClient: ${name} listener failed:`, error);
      }
    }
  }

  #setTimer(which, ms, fn) {
    this.#clearTimer(which);
    this.#timerIds[which] = this.#timers.setTimeout(() => {
      this.#timerIds[which] = null;
      fn();
    }, ms);
  }

  #clearTimer(which) {
    const id = this.#timerIds[which];
    if (id !== null) {
      this.#timers.clearTimeout(id);
      this.#timerIds[which] = null;
    }
  }

  #stopTimers() {
    this.#clearTimer('connect');
    this.#clearTimer('heartbeat');
    this.#clearTimer('pong');
  }

  static #add(map, name, fn) {
    if (typeof name !== 'string' || name === '') {
      throw new TypeError('NotificationClient: the name must be a non-empty string');
    }
    if (typeof fn !== 'function') {
      throw new TypeError('NotificationClient: the handler must be a function');
    }
    let set = map.get(name);
    if (!set) {
      set = new Set();
      map.set(name, set);
    }
    set.add(fn);
    return () => NotificationClient.#remove(map, name, fn);
  }

  static #remove(map, name, fn) {
    const set = map.get(name);
    if (!set) return;
    if (fn === undefined) {
      set.clear();
    } else {
      set.delete(fn);
    }
    if (set.size === 0) map.delete(name);
  }
}

export default NotificationClient;
