"""Helpers for the notifyd-api end-to-end tests: an HTTP client on
http.client, a raw-socket Redis subscriber (RESP), and a way to start the
daemon with API keys."""
import http.client
import json
import socket
import time

KEY_A = "svc-a-0123456789abcdef0123"
KEY_B = "svc-b-fedcba9876543210fedc"


def write_keys(path, pairs):
    with open(path, "w") as f:
        f.write("# name key\n")
        for name, key in pairs:
            f.write(f"{name} {key}\n")
    return str(path)


class Response:
    def __init__(self, status, headers, body, elapsed):
        self.status = status
        self.headers = headers
        self.body = body
        self.elapsed = elapsed

    @property
    def json(self):
        return json.loads(self.body)

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


class Api:
    """A running notifyd-api and an HTTP client for it."""

    def __init__(self, daemon, port, key=KEY_A):
        self.daemon = daemon
        self.port = port
        self.key = key

    def request(self, method, path, body=None, headers=None, key="default",
                ctype="application/json", timeout=10):
        hdrs = {}
        if key == "default":
            key = self.key
        if key is not None:
            hdrs["Authorization"] = f"Bearer {key}"
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if body is not None and ctype is not None:
            hdrs["Content-Type"] = ctype
        hdrs.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        start = time.monotonic()
        try:
            conn.request(method, path, body=body, headers=hdrs)
            r = conn.getresponse()
            data = r.read()
            return Response(r.status, r.getheaders(), data,
                            time.monotonic() - start)
        finally:
            conn.close()

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def send(self, body, **kw):
        return self.post("/api/notifications/send", body, **kw)

    def metrics(self):
        r = self.get("/metrics", key=None)
        assert r.status == 200
        return r.body.decode()


def metric_value(text, name, **labels):
    """The value of one sample in Prometheus text, 0 when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{want}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return 0.0


def start_api(daemons, redis, tmp_path, *extra, keys=None, env=None):
    """Start notifyd-api on a free port with KEY_A and KEY_B (or keys)."""
    from conftest import free_port
    port = free_port()
    args = ["--listen", f"127.0.0.1:{port}", "--redis", redis.url]
    if "--insecure-no-auth" not in extra and "--api-keys-file" not in extra:
        kf = write_keys(tmp_path / "api-keys",
                        keys or [("svc-a", KEY_A), ("svc-b", KEY_B)])
        args += ["--api-keys-file", kf]
    d = daemons("notifyd-api", *args, *extra, env=env)
    return Api(d, port)


def log_key(user, prefix=""):
    """A user's log, as notifyd(7) names it (a Cluster hash tag)."""
    return f"{prefix}offline:{{{user}}}"


def log_entries(redis, user, prefix=""):
    """The messages of a user's log in position order, decoded, read with
    redis-cli (HMGET of first and seq, then HGET m:N)."""
    key = log_key(user, prefix)
    first, last = redis.cli("HMGET", key, "first", "seq", raw=True).split("\n")[:2]
    if not first:
        return []
    out = []
    for n in range(int(first), int(last) + 1):
        raw = redis.cli("HGET", key, f"m:{n}", raw=True).strip()
        if raw:
            out.append(json.loads(raw))
    return out


def resp_command(*args):
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
    return b"".join(out)


class Subscriber:
    """SUBSCRIBE over a raw socket: an observer independent of the code
    under test."""

    def __init__(self, port, channel):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        self.sock.sendall(resp_command("SUBSCRIBE", channel))
        reply = self._value(time.monotonic() + 5)
        assert reply[0] == b"subscribe", reply

    def close(self):
        self.sock.close()

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no data from redis")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no data from redis") from None
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self.buf += chunk

    def _line(self, deadline):
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _value(self, deadline):
        line = self._line(deadline)
        kind, rest = line[:1], line[1:]
        if kind == b"*":
            return [self._value(deadline) for _ in range(int(rest))]
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill(deadline)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b":":
            return int(rest)
        return rest

    def messages(self, n, timeout=5.0):
        """The next n published payloads, decoded as JSON."""
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            v = self._value(deadline)
            if isinstance(v, list) and v and v[0] == b"message":
                out.append(json.loads(v[2]))
        return out

    def nothing_within(self, seconds):
        try:
            v = self._value(time.monotonic() + seconds)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected publish: {v!r}")


def raw_http(port, data, read_timeout=5.0):
    """Send raw bytes, return everything read until EOF or timeout."""
    s = socket.create_connection(("127.0.0.1", port), timeout=read_timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()
