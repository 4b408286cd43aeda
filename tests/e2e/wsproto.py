"""Helpers of the notifyd-ws auth and protocol tests.

- keys: an HS256 secret file and RSA / EC key pairs made with the openssl
  CLI in the test's temporary directory (test keys only, never committed);
- tokens minted with Debian's python3-jwt (PyJWT), or written by hand
  where PyJWT will not (alg "none");
- a raw-socket WebSocket client (RawWS) for the cases a well-behaved
  library refuses to produce: unmasked frames, invalid UTF-8, broken
  handshakes, and for watching exactly which frames the server sends;
- start_ws(): notifyd-ws on a free port against the test's redis.
"""
import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
import subprocess
import time

import jwt  # python3-jwt

from conftest import free_port

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SECRET = "e2e-test-secret-not-for-production"


class Keys:
    """Key files for one test: HS secret, RSA and EC (P-256) pairs."""

    def __init__(self, tmp_path, name="keys"):
        d = tmp_path / name
        d.mkdir(exist_ok=True)
        self.dir = d
        self.secret = SECRET
        self.secret_file = str(d / "hs256.secret")
        # A trailing newline, as `echo secret > file` leaves: the daemon
        # strips exactly one.
        with open(self.secret_file, "w") as f:
            f.write(SECRET + "\n")
        self._made = {}

    def _pair(self, kind):
        if kind in self._made:
            return self._made[kind]
        priv = str(self.dir / f"test-{kind}-private.pem")
        pub = str(self.dir / f"test-{kind}-public.pem")
        if kind == "rsa":
            gen = ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                   "rsa_keygen_bits:2048", "-out", priv]
        else:
            gen = ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                   "ec_paramgen_curve:P-256", "-out", priv]
        subprocess.run(gen, check=True, capture_output=True, timeout=30)
        subprocess.run(["openssl", "pkey", "-in", priv, "-pubout", "-out", pub],
                       check=True, capture_output=True, timeout=30)
        with open(priv) as f:
            priv_pem = f.read()
        with open(pub) as f:
            pub_pem = f.read()
        self._made[kind] = (priv, pub, priv_pem, pub_pem)
        return self._made[kind]

    def rsa(self):
        """(private path, public path, private PEM, public PEM)"""
        return self._pair("rsa")

    def ec(self):
        return self._pair("ec")


def claims(sub="alice", ttl=300, **extra):
    now = int(time.time())
    c = {"iat": now}
    if sub is not None:
        c["sub"] = sub
    if ttl is not None:
        c["exp"] = now + ttl
    c.update(extra)
    return c


def mint(key=SECRET, alg="HS256", **kw):
    """A signed token; kw go to claims() (sub may be any JSON value)."""
    return jwt.encode(claims(**kw), key, algorithm=alg)


def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_none(sub="alice"):
    """alg "none": no signature at all (PyJWT will not verify these)."""
    head = b64url(json.dumps({"alg": "none", "typ": "JWT"}))
    body = b64url(json.dumps(claims(sub=sub)))
    return f"{head}.{body}."


def mint_hs_with_key_text(key_text, sub="alice"):
    """HS256 with arbitrary bytes as the HMAC secret, built by hand: PyJWT
    refuses to use a PEM as an HMAC key, which is exactly the attack."""
    import hmac
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}))
    body = b64url(json.dumps(claims(sub=sub)))
    sig = hmac.new(key_text.encode(), f"{head}.{body}".encode(),
                   hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


def start_ws(daemons, redis, keys, *extra, alg="HS256", key_file=None,
             env=None):
    """notifyd-ws on a free port; returns (daemon, port)."""
    port = free_port()
    if key_file is None:
        if alg.startswith("HS"):
            key_file = keys.secret_file
        elif alg.startswith("RS"):
            key_file = keys.rsa()[1]
        else:
            key_file = keys.ec()[1]
    key_flag = "--jwt-secret-file" if alg.startswith("HS") else "--jwt-public-key"
    d = daemons("notifyd-ws", "--listen", f"127.0.0.1:{port}",
                "--redis", redis.url, "--jwt-alg", alg, key_flag, key_file,
                *extra, env=env)
    return d, port


def ws_url(port, token=None, path="/ws/notifications"):
    url = f"ws://127.0.0.1:{port}{path}"
    if token is not None:
        url += f"?token={token}"
    return url


def wait_until(pred, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def arun(coro, timeout=15):
    """Run a coroutine to completion with an overall deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def offline_message(user, content="waiting", msg_id=None):
    from wsutil import uuid7   # ids of now: the log skips those past age
    msg_id = msg_id or uuid7()
    return {"id": msg_id, "type": "info", "content": content, "data": {},
            "timestamp": "2026-11-26T22:43:46.123Z", "target_user": user,
            "channel": None}


def store_offline(redis, msg, prefix=""):
    """Append a message to its user's log with the real send script of
    lib/nt_userlog.c, published to nobody (a channel nobody listens to):
    a message that waits. Returns it as it is delivered (with its seq)."""
    from wsutil import targeted_cmd, with_seq
    cmd = targeted_cmd(msg, prefix=prefix, channel="nobody-listens-here")
    out = redis.cli(*cmd, raw=True).split()
    return with_seq(msg, [[int(out[0])]])


def read_mark(redis, user, prefix=""):
    """The read mark of user's log: the highest position read (0: none)."""
    out = redis.cli("HGET", f"{prefix}offline:{{{user}}}", "read",
                    raw=True).strip()
    return int(out or 0)


def log_key(user, prefix=""):
    return f"{prefix}offline:{{{user}}}"


# ---------------------------------------------------------------------------
# Raw sockets

def http_exchange(port, request, timeout=5.0):
    """Send raw bytes, read one HTTP response. Returns (status, headers
    (lower-case names), body bytes). status is None if the server closed
    without answering."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_http_response(s, timeout)


def read_http_response(s, timeout=5.0, want_body=True):
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\r\n\r\n" not in buf:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            if not buf:
                return None, {}, b""
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if not want_body:
        return status, headers, rest
    n = int(headers.get("content-length", "0") or 0)
    while len(rest) < n:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:n] if n else rest


def ws_key():
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def upgrade_request(port, path="/ws/notifications", token=None, key=None,
                    version="13", extra=(), omit=(), method="GET"):
    """A handshake request; omit drops headers by lower-case name."""
    if token is not None:
        path += f"?token={token}"
    hdrs = [("Host", f"127.0.0.1:{port}"), ("Upgrade", "websocket"),
            ("Connection", "Upgrade"), ("Sec-WebSocket-Key", key or ws_key()),
            ("Sec-WebSocket-Version", version)]
    hdrs = [(k, v) for k, v in hdrs if k.lower() not in omit] + list(extra)
    text = f"{method} {path} HTTP/1.1\r\n"
    text += "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n"
    return text.encode()


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0):
    """One client frame; masked unless told otherwise."""
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    mkey = os.urandom(4)
    masked = bytes(c ^ mkey[i % 4] for i, c in enumerate(payload))
    return head + mkey + masked


OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def split_frames(buf):
    """The whole unmasked server frames at the start of buf, as
    [(opcode, payload)], and the bytes left over (a frame still coming)."""
    frames = []
    while len(buf) >= 2:
        n, off = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, off = struct.unpack("!H", buf[2:4])[0], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, off = struct.unpack("!Q", buf[2:10])[0], 10
        if len(buf) < off + n:
            break
        frames.append((buf[0] & 0x0F, buf[off:off + n]))
        buf = buf[off + n:]
    return frames, buf


class Closed(Exception):
    """The TCP connection ended (no close frame)."""


class RawWS:
    """A minimal client on a plain socket: does exactly what it is told."""

    def __init__(self, port, token=None, path="/ws/notifications",
                 extra_headers=(), timeout=5.0, first_frames=b""):
        self.key = ws_key()
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout)
        self.sock.sendall(upgrade_request(port, path=path, token=token,
                                          key=self.key,
                                          extra=extra_headers) + first_frames)
        self.status, self.headers, self.buf = read_http_response(
            self.sock, timeout, want_body=False)

    def close_socket(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def send_text(self, text):
        self.sock.sendall(frame(OP_TEXT, text))

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    def _need(self, n, deadline):
        while len(self.buf) < n:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no frame from the server in time")
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise Closed()
            self.buf += chunk

    def recv_frame(self, timeout=5.0):
        """(fin, opcode, payload) of the next server frame."""
        deadline = time.monotonic() + timeout
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "server frames must not be masked"
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4, deadline)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10, deadline)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(off + n, deadline)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_message(self, timeout=5.0, answer_pings=True):
        """Next data message (opcode, bytes); a close frame raises
        ClosedWith."""
        deadline = time.monotonic() + timeout
        parts, op = [], None
        while True:
            fin, opcode, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if opcode == OP_CLOSE:
                raise ClosedWith(payload)
            if opcode == OP_PING:
                if answer_pings:
                    self.send(frame(OP_PONG, payload))
                continue
            if opcode == OP_PONG:
                continue
            if opcode != OP_CONT:
                op = opcode
            parts.append(payload)
            if fin:
                return op, b"".join(parts)

    def recv_json(self, timeout=5.0):
        op, data = self.recv_message(timeout)
        assert op == OP_TEXT, f"expected a text frame, got opcode {op}"
        return json.loads(data.decode("utf-8"))

    def expect_close(self, timeout=5.0):
        """Read until the server's close frame; returns (code, reason)
        and answers the close. Data messages on the way fail the test."""
        try:
            op, data = self.recv_message(timeout)
        except ClosedWith as c:
            try:
                self.send(frame(OP_CLOSE, c.payload[:2]))
            except OSError:
                pass
            return c.code, c.reason
        raise AssertionError(f"expected a close frame, got opcode {op}: {data[:200]!r}")

    def ping_ok(self, timeout=5.0):
        """The application-level ping works: the connection is healthy."""
        self.send_json({"type": "ping"})
        msg = self.recv_json(timeout)
        assert msg.get("type") == "pong", msg
        return msg


class ClosedWith(Exception):
    def __init__(self, payload):
        super().__init__(payload)
        self.payload = payload
        self.code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        self.reason = payload[2:].decode("utf-8", "replace")


def wait_closed_by_peer(sock, timeout):
    """Seconds until the peer closes the TCP connection (reads and drops
    whatever it sends first); raises TimeoutError."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return time.monotonic() - start
        if not chunk:
            return time.monotonic() - start
    raise TimeoutError("the server kept the connection open")
