"""A resuming WebSocket client of notifyd-ws, for the delivery tests.

A ResumeClient is one device of one user. It connects with its token,
records every notification it gets, in order, as (id, seq), and after
any close (by the server, by a fault, or by drop()) it connects again
with since=<id of the last notification it processed>, the way a real
client resumes (notifyd-ws(8)). Each connection is a Session: the since
it asked for, the resume frame it got, how many notifications, how it
ended. A test stitches the sessions (received) and checks them.

A ClientLoop runs the asyncio loop of many clients in one thread, so a
test drives senders and faults from its own thread with blocking calls
and reads the clients' records (append-only lists) as they grow.
"""
import asyncio
import json
import random
import sys
import threading
import time
import urllib.parse

import websockets


class Session:
    """One WebSocket connection of a client."""

    def __init__(self, since):
        self.since = since          # id asked to resume after, or None
        self.frames = 0             # frames received
        self.resume = None          # the resume frame, if one came
        self.first = None           # the first frame, whatever it was
        self.notifications = 0
        self.close_code = None
        self.ended = None           # why it ended, in words

    def __repr__(self):
        return (f"Session(since={self.since!r}, resume={self.resume!r}, "
                f"notifications={self.notifications}, "
                f"close={self.close_code}, ended={self.ended!r})")


class ResumeClient:
    """One device: connects, records, resumes after every close."""

    def __init__(self, port, token, user, name, seed=0, backoff=(0.02, 0.2),
                 log=None):
        self.port = port
        self.token = token
        self.user = user
        self.name = name
        self.backoff = backoff
        self.rng = random.Random(f"{seed}/{name}")
        self.log = log              # callable(str) for events, or None
        # Everything below is appended to by the loop thread only.
        self.received = []          # (id, seq, k) stitched over sessions
        self.broadcasts = []        # ids of messages without a target_user
        self.sessions = []          # Session, one per opened connection
        self.problems = []          # protocol faults seen, in words
        self.failed_connects = 0
        self.last_id = None
        self.connected = threading.Event()   # a connection is open now
        self._ws = None
        self._stopping = False
        self._task = None

    # ---- what the test thread calls (thread-safe through ClientLoop) ----

    def snapshot(self):
        return list(self.received)

    def count(self):
        return len(self.received)

    def resumed_sessions(self):
        return [s for s in self.sessions if s.since is not None]

    # ---- the client itself, on the loop thread ----

    def url(self):
        u = (f"ws://127.0.0.1:{self.port}/ws/notifications?token="
             f"{urllib.parse.quote(self.token)}")
        if self.last_id is not None:
            u += "&since=" + urllib.parse.quote(self.last_id)
        return u

    def _note(self, what):
        if self.log:
            self.log(f"{self.name}: {what}")

    async def run(self):
        while not self._stopping:
            since = self.last_id
            try:
                ws = await asyncio.wait_for(
                    websockets.connect(self.url(), open_timeout=3,
                                       close_timeout=1, max_size=None,
                                       ping_interval=None,
                                       max_queue=None), 5)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # refused, reset, 503, timeout...
                self.failed_connects += 1
                if self.failed_connects % 50 == 1:
                    self._note(f"connect failed: {e!r}")
                await asyncio.sleep(self.rng.uniform(*self.backoff))
                continue
            sess = Session(since)
            self.sessions.append(sess)
            self._ws = ws
            self.connected.set()
            try:
                async for raw in ws:
                    self._frame(sess, raw)
                sess.ended = "closed"
            except websockets.ConnectionClosed as e:
                sess.ended = f"connection closed: {e}"
            except asyncio.CancelledError:
                sess.ended = "stopped"
                raise
            except Exception as e:
                sess.ended = f"error: {e!r}"
            finally:
                self.connected.clear()
                self._ws = None
                sess.close_code = ws.close_code
                if not self._stopping:
                    self._note(f"session {len(self.sessions)} ended "
                               f"({sess.ended}, code {sess.close_code}, "
                               f"{sess.notifications} notifications)")
            if not self._stopping:
                await asyncio.sleep(self.rng.uniform(*self.backoff))

    def _frame(self, sess, raw):
        sess.frames += 1
        try:
            msg = json.loads(raw)
        except (TypeError, ValueError):
            self.problems.append(f"session {len(self.sessions)}: frame "
                                 f"that is not JSON: {raw[:80]!r}")
            return
        first = sess.first is None
        if first:
            sess.first = msg
        # A notification's "type" is its sender's to choose: the resume
        # frame is the one without an id.
        resume = (isinstance(msg, dict) and msg.get("type") == "resume"
                  and "id" not in msg)
        if first and sess.since is not None and not resume:
            self.problems.append(
                f"session {len(self.sessions)} (since={sess.since}): first "
                f"frame is not a resume frame: {str(msg)[:120]}")
        if resume:
            self._resume_frame(sess, msg, first)
            return
        if not isinstance(msg, dict) or "id" not in msg:
            return      # pong, subscribed, error...: not notifications
        if msg.get("target_user") is None:
            self.broadcasts.append(msg["id"])
            return
        if msg["target_user"] != self.user:
            self.problems.append(f"got {msg['id']} of user "
                                 f"{msg['target_user']!r}")
        data = msg.get("data")
        k = data.get("k") if isinstance(data, dict) else None
        # One string per id for all the clients of a loop (a long run
        # holds every id once per connection).
        mid = sys.intern(msg["id"])
        self.received.append((mid, msg.get("seq"), k))
        self.last_id = mid
        sess.notifications += 1

    def _resume_frame(self, sess, msg, first):
        n = len(self.sessions)
        if sess.resume is not None or not first:
            self.problems.append(f"session {n}: resume frame that is not "
                                 f"the first frame: {msg}")
        sess.resume = msg
        if sess.since is None:
            self.problems.append(f"session {n}: resume frame without since:"
                                 f" {msg}")
        elif msg.get("since") != sess.since:
            self.problems.append(f"session {n}: resume frame for "
                                 f"{msg.get('since')!r}, asked {sess.since}")
        if msg.get("recovered") is not True:
            self.problems.append(f"session {n}: not recovered (since="
                                 f"{sess.since}): {msg}")

    async def drop(self, abrupt):
        """Close the current connection; run() resumes after it."""
        ws = self._ws
        if ws is None:
            return False
        if abrupt:
            ws.transport.abort()
        else:
            await ws.close(1000, "client goes away")
        return True

    async def stop(self):
        self._stopping = True
        ws = self._ws
        if ws is not None:
            ws.transport.abort()


class ClientLoop:
    """An asyncio loop in a thread, running ResumeClients."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.clients = []
        self.events = []            # (monotonic time, text)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="resumeclients")
        self._thread.start()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def note(self, text):
        self.events.append((time.monotonic(), text))

    def _call(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(
            timeout)

    def add(self, client):
        """Start a client; returns it."""
        if client.log is None:
            client.log = self.note

        async def start():
            client._task = asyncio.ensure_future(client.run())
        self._call(start())
        self.clients.append(client)
        return client

    def drop(self, client, abrupt=False):
        return self._call(client.drop(abrupt))

    def wait_connected(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        for c in self.clients:
            if not c.connected.wait(max(0.0, deadline - time.monotonic())):
                raise AssertionError(f"{c.name} did not connect: "
                                     f"{c.failed_connects} failed attempts")

    def close(self, timeout=5.0):
        """Stop every client and the loop; safe to call twice."""
        if not self._thread.is_alive():
            return

        async def shutdown():
            for c in self.clients:
                await c.stop()
            tasks = [c._task for c in self.clients if c._task]
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=timeout) if tasks else None
        try:
            self._call(shutdown(), timeout + 1)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
