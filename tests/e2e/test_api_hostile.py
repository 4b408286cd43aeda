"""notifyd-api against a hostile client: requests dripped one byte at a
time (--request-timeout), ambiguous framing that would let a request be
smuggled past a proxy, target_users fan-outs that cost far more than one
request (--max-targets, --max-fanout, one rate-limit token per
recipient), and request bodies that the strict schema refuses."""
import asyncio
import json
import os
import socket
import threading
import time

import pytest

from apiutil import (Subscriber, log_entries, metric_value, start_api)

SEND = "/api/notifications/send"
BROADCAST = "/api/notifications/broadcast"
DEADLINE = 2.0   # --request-timeout in the slow-client tests
MARGIN = 2.5     # watchdog tick, scheduling on a loaded 2-core machine


def exchange(port, data, timeout=5.0):
    """Send raw bytes; read until the server closes or timeout. Returns
    (bytes read, whether the server closed the connection)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        s.sendall(data)
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return out, False
            except ConnectionResetError:
                return out, True
            if not chunk:
                return out, True
            out += chunk
        return out, False
    finally:
        s.close()


def split_response(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


class Dripper:
    """Sockets that each send data one byte every `step` seconds, until
    the server closes them or `limit` seconds pass (bounded)."""

    def __init__(self, port, data, count, step=0.5, limit=12.0, head=b""):
        self.socks = []
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if head:
                s.sendall(head)
            self.socks.append(s)
        self.data = data
        self.step = step
        self.limit = limit
        self.closed_at = {}
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _closed(self, s):
        s.setblocking(False)
        try:
            return s.recv(4096) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _run(self):
        for i in range(int(self.limit / self.step)):
            for k, s in enumerate(self.socks):
                if k in self.closed_at:
                    continue
                if self._closed(s):
                    self.closed_at[k] = time.monotonic() - self.started
                    continue
                try:
                    s.send(self.data[i % len(self.data):][:1])
                except OSError:
                    self.closed_at[k] = time.monotonic() - self.started
            if len(self.closed_at) == len(self.socks):
                return
            time.sleep(self.step)

    def wait_all_closed(self, timeout):
        self.thread.join(timeout)
        return dict(self.closed_at)

    def close(self):
        self.limit = 0
        for s in self.socks:
            s.close()


def stop_and_log(api):
    api.daemon.stop()
    return api.daemon.stderr()


# ---- (a) a deadline on the whole request ---------------------------------

def test_slow_heads_are_cut_off_and_healthz_gets_in(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path, "--max-connections", "5",
                    "--request-timeout", "2s")
    head = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    drip = Dripper(api.port, head, 5)
    try:
        time.sleep(0.3)   # every slot taken by a dripping head
        r = api.get("/healthz", key=None, timeout=DEADLINE + MARGIN)
        assert r.status == 200
        # It waited for the slow sockets to be dropped: the slots were full.
        assert 0.8 < r.elapsed < DEADLINE + MARGIN
        closed = drip.wait_all_closed(DEADLINE + MARGIN)
        assert sorted(closed) == [0, 1, 2, 3, 4], closed
        assert all(t < DEADLINE + MARGIN for t in closed.values()), closed
        m = api.metrics()
        assert metric_value(m, "notifyd_api_request_timeouts_total") == 5
    finally:
        drip.close()
    log = stop_and_log(api)
    assert log.count("closed a connection from 127.0.0.1: no whole request "
                     "within --request-timeout") == 5, log


def test_silent_sockets_are_cut_off_and_healthz_gets_in(redis, daemons,
                                                       tmp_path):
    """A connection's first request is timed from the accept: sockets
    that connect and never send a byte hold their slots no longer than
    --request-timeout, not for the whole idle timeout."""
    api = start_api(daemons, redis, tmp_path, "--max-connections", "5",
                    "--request-timeout", "2s", "--connection-timeout", "60s")
    socks = [socket.create_connection(("127.0.0.1", api.port))
             for _ in range(5)]
    try:
        time.sleep(0.3)   # every slot taken by a silent socket
        r = api.get("/healthz", key=None, timeout=DEADLINE + MARGIN)
        assert r.status == 200
        assert 0.8 < r.elapsed < DEADLINE + MARGIN
        for s in socks:   # each one was shut down by the server: EOF
            s.settimeout(MARGIN)
            assert s.recv(1) == b""
        assert metric_value(api.metrics(),
                            "notifyd_api_request_timeouts_total") == 5
    finally:
        for s in socks:
            s.close()


def test_slow_body_is_cut_off_and_nothing_stored(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path, "--request-timeout", "2s")
    body = json.dumps({"target_user": "alice", "content": "x" * 100}).encode()
    head = (b"POST " + SEND.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + api.key.encode() + b"\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    drip = Dripper(api.port, body, 1, head=head)
    try:
        closed = drip.wait_all_closed(DEADLINE + MARGIN)
        assert 0 in closed and closed[0] < DEADLINE + MARGIN, closed
    finally:
        drip.close()
    assert log_entries(redis, "alice") == []
    assert metric_value(api.metrics(),
                        "notifyd_api_request_timeouts_total") == 1


def test_deadline_rearms_per_request_on_keep_alive(redis, daemons, tmp_path):
    """Idle time between requests is not counted (the idle timeout covers
    it), but each request's own bytes are."""
    api = start_api(daemons, redis, tmp_path, "--request-timeout", "1s")
    # A POST answered once its body is in keeps the connection open
    # (libmicrohttpd closes after an answer given from the headers alone).
    req = framed(api.key, b"Content-Length: %d\r\n" % len(BODY))
    s = socket.create_connection(("127.0.0.1", api.port), timeout=5)
    try:
        for _ in range(2):
            s.sendall(req)
            status, hdrs, _ = split_response(s.recv(4096))
            assert status == 200
            assert hdrs.get("connection", "").lower() != "close"
            time.sleep(1.5)   # idle longer than --request-timeout
        # Now a request that takes longer than the deadline to arrive.
        start = time.monotonic()
        closed = False
        for b in req[:40]:
            try:
                s.sendall(bytes([b]))
            except OSError:
                closed = True
                break
            s.settimeout(0.3)
            try:
                if s.recv(4096) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
            except OSError:
                closed = True
                break
            if time.monotonic() - start > 1.0 + MARGIN:
                break
        assert closed
        assert time.monotonic() - start < 1.0 + MARGIN
    finally:
        s.close()


# ---- (b) framing that two readers could take differently ------------------

BODY = json.dumps({"target_user": "alice", "content": "smuggled?"}).encode()


def framed(key, headers, body=BODY, version=b"HTTP/1.1"):
    return (b"POST " + SEND.encode() + b" " + version + b"\r\nHost: x\r\n"
            b"Authorization: Bearer " + key.encode() + b"\r\n"
            b"Content-Type: application/json\r\n" + headers + b"\r\n" + body)


def chunked(body):
    return b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


@pytest.mark.parametrize("name,headers,body,version", [
    ("CL.CL different", b"Content-Length: %d\r\nContent-Length: 5\r\n"
     % len(BODY), BODY, b"HTTP/1.1"),
    ("CL.CL equal", b"Content-Length: %d\r\nContent-Length: %d\r\n"
     % (len(BODY), len(BODY)), BODY, b"HTTP/1.1"),
    ("TE+CL", b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n"
     % len(BODY), chunked(BODY), b"HTTP/1.1"),
    ("TE gzip", b"Transfer-Encoding: gzip\r\n", chunked(BODY), b"HTTP/1.1"),
    ("TE list", b"Transfer-Encoding: gzip, chunked\r\n", chunked(BODY),
     b"HTTP/1.1"),
    ("TE twice", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: "
     b"chunked\r\n", chunked(BODY), b"HTTP/1.1"),
    ("TE in HTTP/1.0", b"Transfer-Encoding: chunked\r\n", chunked(BODY),
     b"HTTP/1.0"),
    ("space before colon", b"Content-Length : %d\r\n" % len(BODY), BODY,
     b"HTTP/1.1"),
])
def test_ambiguous_framing_is_400_and_closed(redis, daemons, tmp_path, name,
                                             headers, body, version):
    api = start_api(daemons, redis, tmp_path)
    sub = Subscriber(redis.port, "notifications")
    try:
        raw, closed = exchange(api.port, framed(api.key, headers, body,
                                                version))
        status, hdrs, rbody = split_response(raw)
        assert status == 400, raw
        assert hdrs.get("connection", "").lower() == "close"
        assert hdrs.get("content-type") == "application/json"
        err = json.loads(rbody)
        assert err["status"] == "error"
        assert "framing" in err["error"]
        assert closed, "the server kept the connection open"
        assert log_entries(redis, "alice") == []
        assert sub.nothing_within(0.3)
    finally:
        sub.close()


def test_plain_framings_still_work(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path)
    for headers, body in [
            (b"Content-Length: %d\r\nConnection: close\r\n" % len(BODY), BODY),
            (b"Transfer-Encoding: Chunked\r\nConnection: close\r\n",
             chunked(BODY))]:
        raw, _ = exchange(api.port, framed(api.key, headers, body))
        assert split_response(raw)[0] == 200, raw
    assert len(log_entries(redis, "alice")) == 2


# ---- (c) what one request may fan out to -----------------------------------

def test_target_users_over_max_targets_is_413(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path, "--max-targets", "3")
    users = ["u1", "u2", "u3", "u4"]
    r = api.send({"target_users": users, "content": "x"})
    assert r.status == 413
    assert "--max-targets" in r.json["error"]
    assert r.json["field"] == "target_users"
    for u in users:
        assert log_entries(redis, u) == []
    assert api.send({"target_users": users[:3], "content": "x"}).status == 200


def test_default_max_targets_is_1000(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path)
    r = api.send({"target_users": ["u%d" % i for i in range(1001)],
                  "content": "x"})
    assert r.status == 413
    assert "--max-targets (1000)" in r.json["error"]
    assert redis.cli("KEYS", "*").strip() == ""


def test_fanout_over_max_fanout_is_413(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path, "--max-fanout", "4k")
    users = ["u%d" % i for i in range(5)]
    big = "y" * 1000    # about 1.2k encoded per recipient: 5 are over 4k
    r = api.send({"target_users": users, "content": big})
    assert r.status == 413
    assert "--max-fanout" in r.json["error"]
    for u in users:
        assert log_entries(redis, u) == []
    assert api.send({"target_users": users[:3], "content": big}).status == 200


# ---- (d) one rate-limit token per recipient -------------------------------

def test_each_recipient_costs_a_token_all_or_nothing(redis, daemons,
                                                     tmp_path):
    # 60 tokens, refilled at one a minute: nothing comes back in the test.
    api = start_api(daemons, redis, tmp_path, "--rate-limit", "1/m",
                    "--rate-burst", "60")
    first = ["a%d" % i for i in range(30)]
    assert api.send({"target_users": first, "content": "x"}).status == 200
    # 30 tokens left; 50 recipients need 50.
    fifty = ["b%d" % i for i in range(50)]
    r = api.send({"target_users": fifty, "content": "x"})
    assert r.status == 429
    assert int(r.header("Retry-After")) >= 1
    for u in fifty:
        assert log_entries(redis, u) == []
    # Within what is left (29 after the refused request's one token).
    r = api.send({"target_users": fifty[:20], "content": "x"})
    assert r.status == 200, r.body
    assert all(len(log_entries(redis, u)) == 1 for u in fifty[:20])
    # More recipients than a full bucket holds can never pass: 413.
    r = api.send({"target_users": ["c%d" % i for i in range(61)],
                  "content": "x"})
    assert r.status == 413
    assert "--rate-burst" in r.json["error"]


# ---- (e) the strict schema --------------------------------------------------

@pytest.mark.parametrize("body,field", [
    ({"target_user": "alice", "content": "x", "bogus": 1}, "bogus"),
    ({"target_usr": "alice", "content": "x"}, "target_usr"),
    ({"target_user": "alice", "content": ""}, "content"),
    ({"target_user": "alice", "content": 5}, "content"),
])
def test_send_strict_schema_names_the_field(redis, daemons, tmp_path, body,
                                            field):
    api = start_api(daemons, redis, tmp_path)
    r = api.send(body)
    assert r.status == 400
    assert r.json["status"] == "error"
    assert r.json["field"] == field
    assert field in r.json["error"]
    assert log_entries(redis, "alice") == []


def test_typo_in_target_user_is_never_a_broadcast(redis, daemons, tmp_path):
    from conftest import bin_path
    if not os.access(bin_path("notifyd-ws"), os.X_OK):
        pytest.skip("bin/notifyd-ws is not built")
    from test_api_ws import connect, notifications, start_ws
    api = start_api(daemons, redis, tmp_path)
    ws_port = start_ws(daemons, redis, tmp_path, "ws-a")

    async def scenario():
        ws = await connect(ws_port, "bob")
        try:
            r = api.send({"target_usr": "alice", "content": "typo"})
            assert r.status == 400
            assert r.json["field"] == "target_usr"
            assert await notifications(ws, 1.0) == []
            # Bob does get what is meant for everyone: the check above
            # would have seen a broadcast.
            r = api.post(BROADCAST, {"content": "for all"})
            assert r.status == 200
            got = await notifications(ws, 3.0)
            assert [m["content"] for m in got] == ["for all"]
        finally:
            await ws.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("query,field", [
    ("?notification_type=info&content=hi&bogus=1", "bogus"),
    ("?notification_type=info&content=", "content"),
    ("?notification_type=info&content=a&content=b", "content"),
    ("?notification_type=info", "content"),
])
def test_query_broadcast_is_as_strict(redis, daemons, tmp_path, query, field):
    api = start_api(daemons, redis, tmp_path)
    sub = Subscriber(redis.port, "notifications")
    try:
        r = api.post(BROADCAST + query)
        assert r.status == 400, r.body
        assert r.json["field"] == field
        assert sub.nothing_within(0.3)
        r = api.post(BROADCAST + "?notification_type=info&content=hi")
        assert r.status == 200
        assert sub.messages(1)[0]["content"] == "hi"
    finally:
        sub.close()


def test_query_and_body_together_are_400(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path)
    r = api.post(BROADCAST + "?content=hi", {"content": "there"})
    assert r.status == 400
    assert "not both" in r.json["error"]
