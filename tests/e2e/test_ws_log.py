"""notifyd-ws on the per-user log (notifyd(7)), focused cases.

Each connection has its own position in its user's log: what one device
reads never takes a message from another; a client resumes after the
last id it processed (since=ID); a position skipped live, or a lost
subscription, makes the connection read the log; memory stays bounded
by the send queues, whatever the backlog; big log reads do not starve
the command connection's liveness; read marks wait for Redis in bounded
room. The real daemon and redis-server; clients are python3-websockets
and raw sockets; messages are sent with the append script of
lib/nt_userlog.c (wsutil) or with notify-send.
"""
import asyncio
import json
import os
import re
import signal
import socket
import struct
import threading
import time

import pytest
import websockets

from conftest import free_port, run
from wsproto import (OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RawWS, arun, frame,
                     mint, split_frames, start_ws)
from wsutil import (Resp, http_get, log_key, message, metric, read_mark,
                    recv_json, recv_none, send_many, send_targeted,
                    targeted_cmd, uuid7, wait_for, ws_connect)


@pytest.fixture
def ws(redis, daemons, keys):
    """ws(*flags) -> (daemon, port) of a notifyd-ws with those flags."""
    def start(*extra):
        return start_ws(daemons, redis, keys, *extra)
    return start


def store(r, user, n, pad=0, first=0, maxn=1000):
    """n messages appended to user's log (kept: maxn) and published to
    nobody."""
    msgs = [message(user=user, content=f"m{first + i}", pad=pad)
            for i in range(n)]
    replies = r.pipeline([targeted_cmd(m, maxn=maxn,
                                       channel="nobody-listens-here")
                          for m in msgs])
    for m, rep in zip(msgs, replies):
        m["seq"] = rep[0][0]
    return msgs


async def recv_n(c, n, timeout=10):
    return [await recv_json(c, timeout) for _ in range(n)]


def sub_client_id(r, instance):
    for line in r.command("CLIENT", "LIST").splitlines():
        f = dict(x.split("=", 1) for x in line.split() if "=" in x)
        if f.get("name") == f"notifyd-ws:{instance}":
            return f["id"]
    return None


# ---- raw sockets that read slowly or never ---------------------------------

def stalled_socket(port, user, path_extra="", rcvbuf=4096):
    """An upgraded raw socket with a tiny receive buffer; nothing read
    past the 101 head."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    s.sendall((f"GET /ws/notifications?token={mint(sub=user)}{path_extra} "
               "HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: "
               "Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert b" 101 " in head, head
    return s


def drain_frames(sock, timeout=10.0):
    """Every frame the server sends until it closes: (texts, close code)."""
    buf, texts, code = b"", [], None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            break
        except ConnectionResetError:
            chunk = b""
        buf += chunk
        frames, buf = split_frames(buf)
        for op, payload in frames:
            if op == OP_TEXT:
                texts.append(json.loads(payload))
            elif op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0]
        if not chunk:
            break
    return texts, code


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


# ---- (a) no consume-on-write -----------------------------------------------

def test_a_device_gets_what_another_device_already_read(ws, r):
    """Device B read m0 and left; device A reads m1..m5 live. B comes
    back after m0 and gets m1..m5 too: reading on A took nothing from B
    (the old store deleted a message once any connection wrote it)."""
    _, port = ws()
    m0 = store(r, "alice", 1)[0]

    async def go():
        async with ws_connect(port, mint(sub="alice")) as b:
            assert await recv_json(b) == m0
        async with ws_connect(port, mint(sub="alice")) as a:
            await asyncio.sleep(0.1)
            sent = [send_targeted(r, "alice", f"m{i}") for i in range(1, 6)]
            assert await recv_n(a, 5) == sent
            wait_for(lambda: read_mark(r, "alice") == 6, what="A's reads")
        async with ws_connect(port, mint(sub="alice"), since=m0["id"]) as b:
            assert await recv_json(b) == {"type": "resume",
                                          "since": m0["id"],
                                          "recovered": True}
            assert await recv_n(b, 5) == sent
            await recv_none(b)
    arun(go())


# ---- (b) resume with since -------------------------------------------------

def test_resume_since_an_id_starts_right_after_it_in_order(ws, r):
    """since=ID: first the resume frame, then exactly the messages after
    ID, in order, then live ones; a ping sent at once is answered after
    the resume frame."""
    _, port = ws()
    msgs = store(r, "bob", 10)

    async def go():
        async with ws_connect(port, mint(sub="bob"),
                              since=msgs[3]["id"]) as c:
            await c.send(json.dumps({"type": "ping"}))
            assert await recv_json(c) == {"type": "resume",
                                          "since": msgs[3]["id"],
                                          "recovered": True}
            got = await recv_n(c, 7)
            pong = [g for g in got if g.get("type") == "pong"]
            assert len(pong) == 1
            assert [g for g in got if g.get("type") != "pong"] == msgs[4:]
            live = send_targeted(r, "bob", "live")
            assert await recv_json(c) == live
            await recv_none(c)
    arun(go())
    assert metric(port, 'notifyd_ws_resumes_total{recovered="true"}') == 1


def test_resume_from_an_unknown_or_trimmed_id_gets_the_retained_log(ws, r):
    """An id not in the log (never there, or trimmed away): recovered is
    false and the log comes from its first retained entry."""
    _, port = ws()
    msgs = store(r, "carol", 10)
    # One more sent with a bound of 5 entries: the log keeps 7..11.
    extra = message(user="carol", content="trims")
    rep = r.command(*targeted_cmd(extra, maxn=5,
                                  channel="nobody-listens-here"))
    extra["seq"] = rep[0][0]
    kept = msgs[6:] + [extra]
    unknown = uuid7()

    async def go():
        for since in (unknown, msgs[0]["id"]):
            async with ws_connect(port, mint(sub="carol"), since=since) as c:
                assert await recv_json(c) == {"type": "resume",
                                              "since": since,
                                              "recovered": False}
                assert await recv_n(c, 5) == kept
                await recv_none(c)
    arun(go())
    assert metric(port, 'notifyd_ws_resumes_total{recovered="false"}') == 2


def test_since_that_is_not_an_id_is_closed_1008(ws):
    _, port = ws()
    c = RawWS(port, path=f"/ws/notifications?token={mint(sub='dan')}"
              "&since=not-an-id")
    assert c.status == 101
    code, reason = c.expect_close()
    assert code == 1008 and "since" in reason


# ---- (c) a new device gets what is unread ----------------------------------

def test_new_device_without_since_gets_only_what_is_unread(ws, r):
    """Device A (ack mode) acknowledges the third of six messages; a new
    device B without since gets the fourth to the sixth, then live ones."""
    _, port = ws()
    msgs = store(r, "erin", 6)

    async def go():
        async with ws_connect(port, mint(sub="erin"), ack=True) as a:
            assert await recv_n(a, 6) == msgs
            await a.send(json.dumps({"type": "ack", "id": msgs[2]["id"]}))
            wait_for(lambda: read_mark(r, "erin") == 3, what="the ack")
            async with ws_connect(port, mint(sub="erin")) as b:
                assert await recv_n(b, 3) == msgs[3:]
                live = send_targeted(r, "erin", "live")
                assert await recv_json(b) == live
                assert await recv_json(a) == live
                await recv_none(b)
    arun(go())


def test_log_reads_and_marks_survive_a_script_flush(ws, r):
    """notifyd-ws runs its scripts by SHA1; after SCRIPT FLUSH (or a
    failover to a server that never saw them) Redis answers NOSCRIPT, and
    the daemon sends those calls again with the script text: a new
    device still reads the log, and read marks are still written."""
    _, port = ws()
    msgs = store(r, "fay", 3)

    async def go():
        async with ws_connect(port, mint(sub="fay")) as a:
            assert await recv_n(a, 3) == msgs
            wait_for(lambda: read_mark(r, "fay") == 3, what="first marks")
        assert r.command("SCRIPT", "FLUSH") == "OK"
        more = store(r, "fay", 2, first=3)
        async with ws_connect(port, mint(sub="fay")) as b:
            assert await recv_n(b, 2) == more
            wait_for(lambda: read_mark(r, "fay") == 5, what="marks again")
            await recv_none(b)
    arun(go())


def test_notify_send_messages_carry_their_position(ws, redis):
    """The real sender, end to end: what notify-send stores comes with its
    seq, to a connection that was there and to one that comes later."""
    _, port = ws()

    async def go():
        async with ws_connect(port, mint(sub="fay")) as c:
            await asyncio.sleep(0.1)
            for i in range(3):
                p = run("notify-send", "--redis", redis.url, "-u", "fay",
                        f"n{i}")
                assert p.returncode == 0, p.stderr
            got = await recv_n(c, 3)
            assert [g["seq"] for g in got] == [1, 2, 3]
            assert [g["content"] for g in got] == ["n0", "n1", "n2"]
        async with ws_connect(port, mint(sub="fay"),
                              since=got[0]["id"]) as c:
            assert (await recv_json(c))["recovered"] is True
            assert await recv_n(c, 2) == got[1:]
    arun(go())


# ---- (d) a position skipped live -------------------------------------------

def test_a_skipped_position_makes_the_connection_read_the_log(ws, r):
    """Position 3 is stored but never published (as if the subscription
    lost it); position 4 arrives live: the connection reads the log and
    gets 3 then 4, once each."""
    _, port = ws()

    async def go():
        async with ws_connect(port, mint(sub="gus")) as c:
            await asyncio.sleep(0.1)
            first = [send_targeted(r, "gus", f"m{i}") for i in range(2)]
            assert await recv_n(c, 2) == first
            lost = store(r, "gus", 1, first=2)[0]
            after = send_targeted(r, "gus", "m3")
            assert await recv_n(c, 2) == [lost, after]
            await recv_none(c)
            nxt = send_targeted(r, "gus", "m4")
            assert await recv_json(c) == nxt
    arun(go())
    assert metric(port, "notifyd_ws_catchup_gaps_total") == 1


def test_a_log_replaced_while_connected_is_read_from_its_start(ws, r):
    """The log is deleted (and with it its positions) while a connection
    is at position 5: the new log's first message, position 1 again, is
    not taken for a copy of the old position 1."""
    _, port = ws()

    async def go():
        async with ws_connect(port, mint(sub="hal")) as c:
            await asyncio.sleep(0.1)
            old = [send_targeted(r, "hal", f"m{i}") for i in range(5)]
            assert await recv_n(c, 5) == old
            r.command("DEL", log_key("hal"))
            new = [send_targeted(r, "hal", f"n{i}") for i in range(2)]
            assert [n["seq"] for n in new] == [1, 2]
            assert await recv_n(c, 2) == new
            await recv_none(c)
    arun(go())


# ---- (e) the subscription killed again and again ---------------------------

def test_subscriber_killed_during_a_burst_loses_nothing_anywhere(
        redis, daemons, keys, r):
    """Two instances, a user with two connections on each; 2,000 messages
    while the subscriber connection of the first instance is killed five
    times: every connection gets every message, once, in order."""
    _, p1 = start_ws(daemons, redis, keys, "--instance-id", "k1",
                     "--redis-timeout", "1s")
    _, p2 = start_ws(daemons, redis, keys, "--instance-id", "k2",
                     "--redis-timeout", "1s")
    n = 2000

    def sender(out):
        s = Resp(redis.port)
        try:
            for k in range(20):
                out.extend(send_many(s, [message(user="ivy", content=f"b{k}")
                                         for _ in range(n // 20)]))
                time.sleep(0.02)
        finally:
            s.close()

    def killer():
        k = Resp(redis.port)
        try:
            for _ in range(5):
                time.sleep(0.08)
                cid = sub_client_id(k, "sub:k1")
                if cid is not None:
                    k.command("CLIENT", "KILL", "ID", cid)
        finally:
            k.close()

    async def reader(c, got):
        while len(got) < n:
            got.append(await recv_json(c, 15))

    async def go():
        conns = [await ws_connect(p, mint(sub="ivy"))
                 for p in (p1, p1, p2, p2)]
        try:
            await asyncio.sleep(0.2)
            sent, gots = [], [[] for _ in conns]
            ts = [threading.Thread(target=sender, args=(sent,)),
                  threading.Thread(target=killer)]
            for t in ts:
                t.start()
            await asyncio.gather(*(reader(c, g) for c, g in zip(conns, gots)))
            for t in ts:
                t.join(10)
            for g in gots:
                assert [m["seq"] for m in g] == list(range(1, n + 1))
                assert g == sent
            for c in conns:
                await recv_none(c, 0.3)
        finally:
            for c in conns:
                await c.close()
    arun(go(), timeout=60)
    assert metric(p1, 'notifyd_ws_redis_reconnects_total'
                  '{connection="subscriber"}') >= 3
    assert metric(p1, "notifyd_ws_catchups_total") >= 3


def test_subscriber_dropped_at_the_pubsub_buffer_limit_loses_nothing(
        redis, daemons, keys, r):
    """Redis drops a subscriber that falls behind its client-output-buffer
    -limit pubsub (here: instance 1 stopped during a burst), while a device
    on instance 2 reads, and so marks read, everything. Instance 1 catches
    up from the log once subscribed again: its connection gets all of it,
    in order (the old store had lost what the other device took)."""
    big = ("--send-queue-max", "32M")     # the burst is 10 MB
    d1, p1 = start_ws(daemons, redis, keys, "--instance-id", "lim1",
                      "--redis-timeout", "2s", *big)
    _, p2 = start_ws(daemons, redis, keys, "--instance-id", "lim2", *big)
    r.command("CONFIG", "SET", "client-output-buffer-limit",
              "pubsub 256kb 128kb 1")
    n = 200

    async def go():
        a = await ws_connect(p1, mint(sub="una"))
        b = await ws_connect(p2, mint(sub="una"))
        try:
            await asyncio.sleep(0.2)
            d1.signal(signal.SIGSTOP)
            try:
                sent = send_many(r, [message(user="una", content=f"m{i}",
                                             pad=50000) for i in range(n)])
                assert await recv_n(b, n) == sent
                wait_for(lambda: sub_client_id(r, "sub:lim1") is None, 5,
                         "Redis to drop the subscriber")
            finally:
                d1.signal(signal.SIGCONT)
            assert await recv_n(a, n, timeout=15) == sent
            await recv_none(a)
        finally:
            await a.close()
            await b.close()
    arun(go(), timeout=40)
    assert metric(p1, 'notifyd_ws_redis_reconnects_total'
                  '{connection="subscriber"}') == 1


# ---- (f) a stalled device resumes ------------------------------------------

def test_stalled_device_closed_1013_resumes_with_since_and_loses_nothing(
        ws, r):
    """Device A reads everything; device B stalls, is closed 1013 as a
    slow consumer, reconnects with since= the last message it got whole,
    and gets the rest: nothing lost, nothing twice."""
    _, port = ws("--send-queue-max", "128k")
    b = stalled_socket(port, "jo")
    n = 400

    def sender(out):
        s = Resp(r.sock.getpeername()[1])
        try:
            for k in range(0, n, 4):   # at a pace device A keeps up with
                out.extend(send_many(s, [message(user="jo", content=f"m{i}",
                                                 pad=20000)
                                         for i in range(k, k + 4)]))
                time.sleep(0.005)
        finally:
            s.close()

    async def go():
        async with ws_connect(port, mint(sub="jo")) as a:
            await asyncio.sleep(0.1)
            sent = []
            t = threading.Thread(target=sender, args=(sent,))
            t.start()
            got_a = await recv_n(a, n)
            t.join()
            assert got_a == sent
            wait_for(lambda: metric(port, "notifyd_ws_slow_consumers_total")
                     == 1, 5, "B closed as a slow consumer")
            got, code = drain_frames(b)
            assert code == 1013
            assert 0 < len(got) < n and got == sent[:len(got)]
            async with ws_connect(port, mint(sub="jo"),
                                  since=got[-1]["id"]) as b2:
                assert (await recv_json(b2))["recovered"] is True
                rest = await recv_n(b2, n - len(got))
                assert got + rest == sent
                await recv_none(b2)
    try:
        arun(go(), timeout=30)
    finally:
        b.close()


# ---- (g) memory bounded by the send queues ---------------------------------

def test_connections_that_never_read_a_big_backlog_hold_bounded_memory(
        redis, daemons, keys, r):
    """40 connections of a user with a 12 MB backlog that never read:
    each holds at most a page or two (the old store held one copy of
    the whole backlog per connection: 40 x 12 MB)."""
    sqm = 256 * 1024
    # Under AddressSanitizer freed memory waits in a quarantine (256 MB)
    # before reuse: RSS would measure that, not the daemon.
    asan = os.environ.get("ASAN_OPTIONS", "")
    d, port = start_ws(daemons, redis, keys, "--send-queue-max", str(sqm),
                       "--max-conns-per-user", "40",
                       env={"ASAN_OPTIONS": asan + ":quarantine_size_mb=0"})
    for k in range(12):                       # 12 MB in all
        store(r, "kim", 100, pad=10000, first=100 * k, maxn=2000)
    base = rss_kib(d.proc.pid)
    socks = [stalled_socket(port, "kim") for _ in range(40)]
    try:
        # Each reads pages while the kernel takes them, then stops.
        def settled(last=[-1]):
            n = metric(port, "notifyd_ws_pages_read_total")
            done = n >= 40 and n == last[0] and metric(
                port, "notifyd_ws_page_reads_inflight") == 0
            last[0] = n
            return done
        wait_for(settled, 20, "the reads to stop", step=0.5)
        assert metric(port, "notifyd_ws_connections") == 40
        grown = rss_kib(d.proc.pid) - base
        bound = (40 * sqm + 24 * 1024 * 1024) // 1024
        assert grown < bound, f"RSS grew {grown} KiB, bound {bound} KiB"
        assert metric(port, "notifyd_ws_queued_bytes") <= 40 * sqm
        assert metric(port, "notifyd_ws_send_queue_bytes") <= 40 * sqm
    finally:
        for s in socks:
            s.close()


# ---- (h) big reads do not starve the command connection --------------------

async def fast_reader(port, user, want):
    """Read want notifications on a raw connection in ack mode (what one
    reads is not read for the others: each gets the whole log); returns
    their seqs."""
    rd, wr = await asyncio.open_connection("127.0.0.1", port)
    wr.write((f"GET /ws/notifications?token={mint(sub=user)}&ack=1 "
              "HTTP/1.1\r\n"
              "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    await rd.readuntil(b"\r\n\r\n")
    seqs, tail = [], re.compile(rb'"seq":(\d+)}$')
    try:
        while len(seqs) < want:
            b0, b1 = await rd.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await rd.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await rd.readexactly(8))[0]
            payload = await rd.readexactly(n)
            if b0 & 0x0F == OP_PING:
                wr.write(frame(OP_PONG, payload))
            elif b0 & 0x0F == OP_TEXT:
                seqs.append(int(tail.search(payload).group(1)))
    finally:
        wr.close()
    return seqs


def test_replay_storm_keeps_the_command_connection(ws, r):
    """40 connections each read a 13 MB backlog with --redis-timeout 1s:
    log reads are paged, and the command connection's deadline is on its
    progress, so it is never dropped; everything arrives in order."""
    d, port = ws("--redis-timeout", "1s", "--max-conns-per-user", "40")
    for k in range(13):
        store(r, "lee", 100, pad=10000, first=100 * k, maxn=2000)

    async def go():
        return await asyncio.gather(*(fast_reader(port, "lee", 1300)
                                      for _ in range(40)))
    for seqs in arun(go(), timeout=90):
        assert seqs == list(range(1, 1301))
    assert metric(port, 'notifyd_ws_redis_reconnects_total'
                  '{connection="commands"}') == 0
    assert metric(port, 'notifyd_ws_redis_reconnects_total'
                  '{connection="subscriber"}') == 0
    assert metric(port, "notifyd_ws_pages_read_total") >= 40 * 13


# ---- (i) read marks while the command connection is down -------------------

def test_read_marks_wait_bounded_while_commands_are_down(redis, daemons,
                                                         keys, r):
    """The command connection is cut and cannot come back (its Redis user
    is disabled; the subscription lives on): 10 users read 50 live
    messages each. What waits is one read mark per user, /readyz says
    503, and once the connection is back every mark is written."""
    r.command("ACL", "SETUSER", "ws", "on", ">pw", "~*", "&*", "+@all")
    url = f"redis://ws:pw@127.0.0.1:{redis.port}"
    port = free_port()
    daemons("notifyd-ws", "--listen", f"127.0.0.1:{port}", "--redis", url,
            "--jwt-secret-file", keys.secret_file, "--instance-id", "acl",
            "--redis-timeout", "500ms")
    users = [f"u{i}" for i in range(10)]

    async def go():
        conns = [await ws_connect(port, mint(sub=u)) for u in users]
        try:
            await asyncio.sleep(0.2)
            r.command("ACL", "SETUSER", "ws", "off")
            cid = sub_client_id(r, "cmd:acl")
            r.command("CLIENT", "KILL", "ID", cid)
            wait_for(lambda: http_get(port, "/readyz")[0] == 503, 5,
                     "readyz 503")
            for u in users:
                send_many(r, [message(user=u, content=f"m{i}")
                              for i in range(50)])
            for c in conns:
                got = await recv_n(c, 50)
                assert [g["seq"] for g in got] == list(range(1, 51))
            wait_for(lambda: metric(port, "notifyd_ws_read_marks_pending")
                     == 10, 5, "a mark per user")
            time.sleep(0.5)
            assert metric(port, "notifyd_ws_read_marks_pending") == 10
            assert http_get(port, "/healthz")[0] == 503
            assert all(read_mark(r, u) == 0 for u in users)
            r.command("ACL", "SETUSER", "ws", "on")
            wait_for(lambda: all(read_mark(r, u) == 50 for u in users), 10,
                     "the marks written")
            assert metric(port, "notifyd_ws_read_marks_pending") == 0
            assert http_get(port, "/readyz")[0] == 200
        finally:
            for c in conns:
                await c.close()
    arun(go(), timeout=40)


# ---- (j) per-user cap, write deadline --------------------------------------

def test_connections_past_the_per_user_cap_are_closed_1013(ws):
    _, port = ws("--max-conns-per-user", "3")

    async def code_of(c):
        try:
            await asyncio.wait_for(c.recv(), 3)
        except websockets.ConnectionClosed as e:
            return e.rcvd.code, e.rcvd.reason
        return None

    async def go():
        three = [await ws_connect(port, mint(sub="max")) for _ in range(3)]
        other = await ws_connect(port, mint(sub="other"))
        fourth = await ws_connect(port, mint(sub="max"))
        code, reason = await code_of(fourth)
        assert code == 1013 and "too many connections" in reason
        for c in three + [other]:
            await c.send(json.dumps({"type": "ping"}))
            assert (await recv_json(c))["type"] == "pong"
        await three[0].close()
        await asyncio.sleep(0.2)
        again = await ws_connect(port, mint(sub="max"))
        await again.send(json.dumps({"type": "ping"}))
        assert (await recv_json(again))["type"] == "pong"
        for c in three[1:] + [other, again]:
            await c.close()
    arun(go())
    assert metric(port, "notifyd_ws_refused_user_limit_total") == 1


def test_client_that_only_sends_pongs_is_closed_at_the_write_deadline(ws, r):
    """A client that never reads but keeps sending pongs is not idle, so
    pings never catch it; with data queued and nothing written for
    --write-timeout it is closed anyway."""
    _, port = ws("--write-timeout", "1s", "--ping-interval", "30s")
    store(r, "pat", 300, pad=10000)           # 3 MB waiting
    s = stalled_socket(port, "pat")
    stop = threading.Event()

    def pong_forever():
        while not stop.wait(0.05):
            try:
                s.sendall(frame(OP_PONG))
            except OSError:
                return
    t = threading.Thread(target=pong_forever)
    t0 = time.monotonic()
    t.start()
    try:
        wait_for(lambda: metric(port, "notifyd_ws_write_timeouts_total") == 1,
                 8, "the write deadline")
        assert 0.9 < time.monotonic() - t0 < 5
        # Its close frame cannot get through either: dropped after the
        # linger, though the pongs go on.
        wait_for(lambda: metric(port, "notifyd_ws_connections") == 0, 5,
                 "the connection gone")
    finally:
        stop.set()
        t.join()
        s.close()
    assert metric(port, 'notifyd_ws_closes_total{code="1013"}') == 1


def test_past_max_queued_bytes_live_messages_wait_in_the_log(ws, r):
    """A connection that never reads holds megabytes of queue, over
    --max-queued-bytes: live messages for another user are then not
    queued but left in the log, and that user's connection reads them
    from there, all of them, in order."""
    _, port = ws("--max-queued-bytes", "64k", "--send-queue-max", "16M")
    s = stalled_socket(port, "sam")
    try:
        send_many(r, [message(user="sam", content=f"s{i}", pad=100000)
                      for i in range(60)])          # 6 MB, never read
        wait_for(lambda: metric(port, "notifyd_ws_queued_bytes") > 65536, 5,
                 "the stalled queue over the cap")

        async def go():
            async with ws_connect(port, mint(sub="rex")) as c:
                await asyncio.sleep(0.1)
                sent = send_many(r, [message(user="rex", content=f"r{i}")
                                     for i in range(50)])
                assert await recv_n(c, 50) == sent
                await recv_none(c)
        arun(go())
        assert metric(port, "notifyd_ws_catchup_deferred_total") >= 1
        assert metric(port, "notifyd_ws_slow_consumers_total") == 0
    finally:
        s.close()
