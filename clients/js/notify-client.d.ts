/**
 * Type declarations of notify-client.js, the browser client of notifyd-ws.
 * Served by notifyd-ws at /notify-client.d.ts beside /notify-client.js.
 */

/** A notification as notifyd stores and sends it (see notifyd(7)). */
export interface Notification<D = Record<string, unknown>> {
  /** UUIDv7: unique, and sorts by creation time. */
  id: string;
  type: string;
  content: string;
  data: D;
  /** ISO 8601 UTC, e.g. "2026-11-26T22:43:46.123Z". */
  timestamp: string;
  /** The addressee; null for a broadcast. */
  target_user: string | null;
  channel: string | null;
  /**
   * The message's position in its user's log (1, 2, 3...), for targeted
   * messages; broadcasts have none. Passed through untouched.
   */
  seq?: number;
  [field: string]: unknown;
}

export type ConnectionState =
  | 'disconnected'
  | 'connecting'
  | 'connected'
  | 'reconnecting'
  | 'auth_failed';

export declare const States: Readonly<{
  DISCONNECTED: 'disconnected';
  CONNECTING: 'connecting';
  CONNECTED: 'connected';
  RECONNECTING: 'reconnecting';
  AUTH_FAILED: 'auth_failed';
}>;

export type TokenSource = string | (() => string | Promise<string>);

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
  now(): number;
}

/** Where the client keeps the last processed id: localStorage, sessionStorage or anything alike. */
export interface ResumeStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export interface ResumeOptions {
  /**
   * The storage key. Make it one per user (and per app), e.g.
   * 'notifyd:last-id:' + userId: an id from another user's log is unknown
   * to the server, which then resends the whole log (recovered: false).
   */
  key: string;
  /** Default globalThis.localStorage. */
  storage?: ResumeStorage;
}

export interface NotificationClientOptions {
  /** Ask the server for ack mode (?ack=1) and acknowledge every notification after its handlers ran. Default false. */
  ack?: boolean;
  /** 'query' (default): ?token=JWT. 'protocol': subprotocols ["bearer", JWT], keeping the token out of URLs. */
  tokenTransport?: 'query' | 'protocol';
  /** Reconnect after the connection drops. Default true. */
  reconnect?: boolean;
  /** First reconnect delay in ms. Default 1000. */
  reconnectDelay?: number;
  /** Upper bound of the reconnect delay in ms. Default 30000. */
  maxReconnectDelay?: number;
  /** Growth of the delay per failed attempt. Default 2. */
  backoffFactor?: number;
  /** Fraction (0..1) of each delay taken off at random. Default 0.5. */
  jitter?: number;
  /** Attempts before giving up. Default Infinity: never give up. */
  maxReconnectAttempts?: number;
  /** ms to wait for the handshake and the first answer from the server. Default 10000. */
  connectTimeout?: number;
  /** ms between heartbeat pings while connected. Default 25000. */
  heartbeatInterval?: number;
  /** ms to wait for any message after a ping before reconnecting. Default 10000. */
  heartbeatTimeout?: number;
  /** How many recent notification ids are remembered to drop repeats. Default 1000. */
  dedupSize?: number;
  /**
   * Resume the first connection after this notification id (?since=ID), as
   * if the client had processed it. Every reconnect resumes after the last
   * notification processed anyway. Takes precedence over a stored id.
   */
  since?: string | null;
  /**
   * Keep the last processed id across page loads: read from storage at
   * construction (used as since of the first connection), written after
   * each processed notification of the user's log.
   */
  resume?: ResumeOptions | null;
  /**
   * Called once after the server rejected the token (close 4001). A new,
   * different token makes the client reconnect with it; anything else, or
   * a second rejection before a good connection, ends in 'auth_failed'.
   *
   * Also called, with code 4002, when the server closes a connection
   * because its token is about to expire (a little before exp): a new,
   * different token makes the client reconnect at once, without backoff,
   * resuming with since=, so nothing is missed. Anything else reconnects
   * after the usual backoff with the current token. Without this hook a
   * 4002 reconnects after the backoff with the current token (a token
   * function is asked again).
   */
  refreshToken?: ((info: { code: number; reason: string }) => string | null | undefined | Promise<string | null | undefined>) | null;
  /** WebSocket class to use; default globalThis.WebSocket. */
  WebSocket?: { new (url: string, protocols?: string | string[]): WebSocket } | null;
  /** Timer functions; default the global ones. For tests. */
  timers?: Timers | null;
  /** Random source in [0, 1) for the jitter; default Math.random. */
  random?: (() => number) | null;
}

export interface StateEvent {
  state: ConnectionState;
  previous: ConnectionState;
  /** reconnecting/connecting: the attempt number (0 for the first connection). */
  attempt?: number;
  /** reconnecting: ms until the next attempt (0 after a 4002 with a new token). */
  delay?: number;
  /** auth_failed, or disconnected after giving up: the close code. */
  code?: number;
  reason?: string;
  gaveUp?: boolean;
  refreshing?: boolean;
}

export interface CloseEvent {
  code: number;
  reason: string;
  wasClean: boolean;
  /** true when disconnect() closed it. */
  byClient?: boolean;
}

export interface ErrorEvent {
  /** storage: reading or writing the resume storage failed (reading is reported on connect()). */
  source: 'server' | 'socket' | 'parse' | 'handler' | 'token' | 'storage';
  error: unknown;
  /**
   * The message involved (server error reply, or the notification whose
   * handler threw). A subscribe to a private channel the token does not
   * open is answered with {type: 'error', error: 'channel not allowed',
   * channel}: the channel stays wanted, and is asked for again after a
   * reconnect (a new token may open it).
   */
  message?: unknown;
}

/**
 * The server's answer to ?since=ID, before any notification of the
 * connection. recovered: false means ID is no longer in the user's log
 * (trimmed, expired, unknown): messages may have been missed, so reload
 * the state the notifications feed (unread counts, lists) from your own
 * API. The messages still kept follow, from the log's first one; those
 * already processed are dropped by id (within dedupSize).
 */
export interface ResumeEvent {
  since: string;
  recovered: boolean;
}

export interface ClientEvents {
  state: StateEvent;
  /** Connected: the server answered on the new connection. */
  open: Record<string, never>;
  close: CloseEvent;
  reconnecting: { attempt: number; delay: number; code: number; reason: string };
  /** The server rejected the token (close 4001) and the client stopped: get a new token, setToken(), connect(). */
  auth_failed: { code: number; reason: string };
  subscribed: { channel: string };
  unsubscribed: { channel: string };
  /** The connection resumed after the id it sent as since (see ResumeEvent). */
  resume: ResumeEvent;
  /** A notification id seen before was dropped (acknowledged again in ack mode). */
  duplicate: { id: string; message: Notification };
  error: ErrorEvent;
}

export declare class NotificationClient {
  /**
   * @param url the WebSocket endpoint, e.g. "wss://example.com/ws/notifications";
   *   http(s) URLs and, in a page, relative URLs are accepted too.
   * @param token a JWT, or a function called before each connection attempt.
   */
  constructor(url: string, token: TokenSource, options?: NotificationClientOptions);

  readonly state: ConnectionState;
  /** Channels re-subscribed after every reconnect. */
  readonly channels: string[];
  /** Reconnect attempts since the last good connection. */
  readonly reconnectAttempts: number;
  /**
   * Id of the last processed notification of the user's log (one with a
   * seq; broadcasts do not count), sent as ?since= on the next
   * connection. In ack mode, the last one acknowledged. null before any.
   */
  readonly lastId: string | null;

  /** Open the connection; no-op while connecting or connected. */
  connect(): this;
  /** Close for good (code 1000 by default); no reconnect until connect(). */
  disconnect(code?: number, reason?: string): this;
  /** Use this token from the next connection attempt on. */
  setToken(token: TokenSource): this;

  /** Handle notifications of one type, or '*' for all. Returns a function removing the handler. */
  on<D = Record<string, unknown>>(type: string, handler: (msg: Notification<D>) => void): () => void;
  /** Remove one handler, or all handlers of the type. */
  off(type: string, handler?: (msg: Notification<any>) => void): this;

  /** Listen to a client event. Returns a function removing the listener. */
  onEvent<K extends keyof ClientEvents>(name: K, listener: (event: ClientEvents[K]) => void): () => void;
  offEvent<K extends keyof ClientEvents>(name: K, listener?: (event: ClientEvents[K]) => void): this;

  /** Subscribe now (when connected) and after every reconnect. Throws TypeError on an invalid name. */
  subscribe(channel: string): this;
  unsubscribe(channel: string): this;

  /** Send a JSON message; false when not connected. */
  send(data: unknown): boolean;
}

export default NotificationClient;
