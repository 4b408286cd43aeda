"""Helpers of the notifyd-ws delivery and fault tests.

- Resp: a tiny pipelining Redis client over a loopback socket (the tests
  publish hundreds of messages while clients connect; one redis-cli
  process per message would be too slow to overlap a connect);
- send_targeted()/send_broadcast(): the Redis contract of notifyd(7)
  done by hand with the very append script of lib/nt_userlog.c (read out
  of its source), so these tests can send bursts over one pipelined
  connection and do not depend on notify-send;
- the log of a user as Redis holds it: log_ids(), read_mark(), log_last();
- uuid7(): ids that sort in creation order, like the real ones;
- presence helpers that compute what notifyd-api's online count sees;
- Collector: a python3-websockets client that records every message.
"""
import ast
import asyncio
import datetime
import json
import os
import re
import socket
import threading
import time

import websockets

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _c_literals(text):
    """The concatenated C string literals of text (comments dropped)."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "".join(ast.literal_eval(s) for s in
                   re.findall(r'"(?:[^"\\\n]|\\.)*"', text))


def userlog_script(name):
    """The Lua text of nt_lua_userlog_<name> as lib/nt_userlog.c holds it:
    the contract's own code, not a copy that could drift."""
    with open(os.path.join(ROOT, "lib", "nt_userlog.c")) as f:
        src = f.read()
    helpers = re.search(r"#define LUA_HELPERS \\\n(.*?)\n\n", src, re.S)
    body = re.search(r"const char nt_lua_userlog_%s\[\] =(.*?);\n" % name,
                     src, re.S).group(1)
    if "LUA_HELPERS" in body:
        before, after = body.split("LUA_HELPERS", 1)
        return _c_literals(before) + _c_literals(helpers.group(1)) + \
            _c_literals(after)
    return _c_literals(body)


APPEND_LUA = userlog_script("append")

_last_ms = 0
_seq = 0
_lock = threading.Lock()


def uuid7():
    """UUIDv7 text, strictly increasing within this process."""
    global _last_ms, _seq
    with _lock:
        ms = int(time.time() * 1000)
        if ms <= _last_ms:
            ms = _last_ms
            _seq += 1
        else:
            _seq = 0
        _last_ms = ms
        seq = _seq
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 50) - 1)
    v = (ms << 80) | (0x7 << 76) | ((seq & 0xfff) << 64) | (0b10 << 62) | (
        (seq >> 12) << 50) | rand
    h = f"{v:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def now_iso():
    t = datetime.datetime.now(datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def message(user=None, content="hello", channel=None, mtype="info", data=None,
            pad=0):
    return {"id": uuid7(), "type": mtype, "content": content + "x" * pad,
            "data": data or {}, "timestamp": now_iso(), "target_user": user,
            "channel": channel}


class Resp:
    """Minimal RESP2 client: command() or pipeline() of many commands."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def close(self):
        self.sock.close()

    @staticmethod
    def encode(*args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if not isinstance(a, bytes):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RuntimeError(f"bad reply {line!r}")

    def command(self, *args):
        self.sock.sendall(self.encode(*args))
        return self.reply()

    def pipeline(self, commands):
        self.sock.sendall(b"".join(self.encode(*c) for c in commands))
        return [self.reply() for _ in commands]


def log_key(user, prefix=""):
    return f"{prefix}offline:{{{user}}}"


def _text(msg):
    return json.dumps(msg, separators=(",", ":"))


def targeted_cmd(msg, prefix="", ttl=604800, maxn=1000,
                 channel="notifications"):
    """EVAL of the append script: store msg in its user's log and publish
    it on channel (another channel: stored, published to nobody)."""
    return ("EVAL", APPEND_LUA, 2, log_key(msg["target_user"], prefix),
            f"{prefix}{channel}", ttl, maxn, msg["id"], _text(msg))


def with_seq(msg, reply):
    """msg as stored and delivered: with the position the script gave."""
    out = dict(msg)
    out["seq"] = reply[0][0]
    return out


def send_targeted(r, user, content="hello", prefix="", **kw):
    """Store and publish one targeted message; returns it as delivered
    (with its seq)."""
    msg = message(user=user, content=content, **kw)
    return with_seq(msg, r.command(*targeted_cmd(msg, prefix=prefix)))


def send_many(r, msgs, prefix=""):
    """Store and publish msgs over one pipeline; returns them with seq."""
    replies = r.pipeline([targeted_cmd(m, prefix=prefix) for m in msgs])
    return [with_seq(m, rep) for m, rep in zip(msgs, replies)]


def send_broadcast(r, content="to all", channel=None, prefix=""):
    msg = message(user=None, content=content, channel=channel)
    r.command("PUBLISH", f"{prefix}notifications", _text(msg))
    return msg


def store_offline(r, msg, prefix=""):
    """A message stored while nobody listens (appended, never published);
    returns it with its seq."""
    return with_seq(msg, r.command(*targeted_cmd(
        msg, prefix=prefix, channel="nobody-listens-here")))


def log_ids(r, user, prefix=""):
    """Ids in user's log, in position order."""
    h = r.command("HGETALL", log_key(user, prefix)) or []
    fields = dict(zip(h[::2], h[1::2]))
    pos = sorted(int(k[2:]) for k in fields if k.startswith("m:"))
    return [json.loads(fields[f"m:{p}"])["id"] for p in pos]


def read_mark(r, user, prefix=""):
    """The read mark of user's log (0: none)."""
    return int(r.command("HGET", log_key(user, prefix), "read") or 0)


def log_last(r, user, prefix=""):
    """The last position of user's log (0: no log)."""
    return int(r.command("HGET", log_key(user, prefix), "seq") or 0)


def online_users(r, prefix=""):
    """What an online count across instances sees: the union of the sets
    of live instances (see notifyd(7))."""
    users = set()
    for inst in r.command("SMEMBERS", f"{prefix}presence:instances") or []:
        users.update(r.command("SMEMBERS", f"{prefix}presence:{inst}") or [])
    return users


def wait_for(pred, timeout=5.0, what="condition", step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


async def recv_json(ws, timeout=5.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws, pred, timeout=5.0):
    """Messages up to and including the first for which pred is true."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out; got {got!r}")
        m = await recv_json(ws, left)
        got.append(m)
        if pred(m):
            return got


async def recv_none(ws, wait=0.3):
    """Assert nothing arrives within wait seconds."""
    try:
        m = await asyncio.wait_for(ws.recv(), wait)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"unexpected message {m!r}")


def ws_connect(port, token, ack=False, since=None, **kw):
    url = f"ws://127.0.0.1:{port}/ws/notifications?token={token}"
    if ack:
        url += "&ack=1"
    if since is not None:
        url += f"&since={since}"
    return websockets.connect(url, open_timeout=5, close_timeout=2,
                              max_size=None, **kw)


def http_get(port, path, timeout=5.0):
    """(status, body) of a GET on notifyd-ws."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def metric(port, name):
    """Value of one sample of /metrics (name may include labels)."""
    _, body = http_get(port, "/metrics")
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0
