"""notifyd-ws delivery, end to end: live messages and those waiting in the
user's log, exactly once per connection and in order, many connections
per user, channels and broadcasts, read marks and acknowledgements,
several instances, presence and metrics.

Messages are stored and published with the send script of
lib/nt_userlog.c (wsutil), clients are python3-websockets. The focused
tests of the log itself (resume, catch-up, bounds) are in test_ws_log.py.
"""
import asyncio
import json
import signal
import threading
import time

import pytest

from wsproto import arun, mint, start_ws
from wsutil import (Resp, http_get, log_ids, message, metric, online_users,
                    read_mark, recv_json, recv_none, send_broadcast,
                    send_targeted, store_offline, targeted_cmd, wait_for,
                    ws_connect)


@pytest.fixture
def ws(redis, daemons, keys):
    """ws(*flags) -> port of a notifyd-ws with those extra flags."""
    def start(*extra):
        return start_ws(daemons, redis, keys, *extra)[1]
    return start


def test_live_targeted_message_delivered_and_marked_read(ws, r):
    port = ws()

    async def go():
        async with ws_connect(port, mint(sub="alice")) as c:
            await asyncio.sleep(0.1)
            sent = send_targeted(r, "alice", "live one", data={"k": 1})
            got = await recv_json(c)
            assert got == sent and got["seq"] == 1
            # Written to the socket: read, and the log keeps it.
            wait_for(lambda: read_mark(r, "alice") == 1, what="read mark")
            assert log_ids(r, "alice") == [sent["id"]]
    arun(go())


def test_waiting_messages_come_in_log_order_and_are_marked_read(ws, r):
    port = ws()
    msgs = [store_offline(r, message(user="bob", content=f"m{i}"))
            for i in range(20)]
    assert [m["seq"] for m in msgs] == list(range(1, 21))
    other = store_offline(r, message(user="carol", content="not for bob"))

    async def go():
        async with ws_connect(port, mint(sub="bob")) as c:
            got = [await recv_json(c) for _ in msgs]
            assert got == msgs
            await recv_none(c)
        wait_for(lambda: read_mark(r, "bob") == 20, what="read mark of bob")
    arun(go())
    # Someone else's log is untouched.
    assert log_ids(r, "carol") == [other["id"]]
    assert read_mark(r, "carol") == 0
    assert metric(port, "notifyd_ws_offline_replayed_total") == 20


def test_message_nobody_receives_stays_for_next_connect(ws, r):
    port = ws()

    async def go():
        async with ws_connect(port, mint(sub="dave")) as c:
            await asyncio.sleep(0.1)
            # For erin, who is not connected: it stays in her hash.
            kept = send_targeted(r, "erin", "later")
            mine = send_targeted(r, "dave", "now")
            assert await recv_json(c) == mine
        assert log_ids(r, "erin") == [kept["id"]]
        assert read_mark(r, "erin") == 0
        async with ws_connect(port, mint(sub="erin")) as c:
            assert await recv_json(c) == kept
    arun(go())


def test_every_connection_of_a_user_gets_each_live_message(ws, r):
    port = ws()

    async def go():
        tabs = [await ws_connect(port, mint(sub="alice")) for _ in range(3)]
        bob = await ws_connect(port, mint(sub="bob"))
        try:
            await asyncio.sleep(0.2)
            sent = send_targeted(r, "alice", "to every tab")
            for t in tabs:
                assert await recv_json(t) == sent
            for_bob = send_targeted(r, "bob", "only bob")
            # Bob's first message is his own: alice's never reached him.
            assert await recv_json(bob) == for_bob
            for t in tabs:
                await recv_none(t, 0.2)
        finally:
            for c in tabs + [bob]:
                await c.close()
    arun(go())


def _publisher(port, user, n, rate_per_s, started, sent_ids):
    """Publish n targeted messages to user at about rate_per_s."""
    r = Resp(port)
    try:
        started.set()
        t0 = time.monotonic()
        for i in range(n):
            m = message(user=user, content=f"seq {i}")
            r.command(*targeted_cmd(m))
            sent_ids.append(m["id"])
            delay = t0 + (i + 1) / rate_per_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    finally:
        r.close()


@pytest.mark.parametrize("round_", range(3))
def test_exactly_once_in_order_while_messages_arrive_during_connect(
        ws, redis, r, round_):
    """A stream of messages to a user who connects in the middle of it:
    the ones sent before come from the log, the ones after live, and the
    ones in between from either; every one arrives exactly once and in
    the order sent."""
    port = ws()
    users = [f"racer{i}" for i in range(4)]
    n, rate = 300, 600.0
    sent = {u: [] for u in users}
    threads = []
    for u in users:
        started = threading.Event()
        t = threading.Thread(target=_publisher,
                             args=(redis.port, u, n, rate, started, sent[u]))
        t.start()
        started.wait(5)
        threads.append(t)

    async def client(u):
        # Connect while the publisher is mid-stream.
        await asyncio.sleep(0.15 + 0.05 * users.index(u))
        got = []
        async with ws_connect(port, mint(sub=u)) as c:
            while len(got) < n:
                m = await recv_json(c, 10)
                got.append(m["id"])
            await recv_none(c, 0.3)
        return got

    async def go():
        return await asyncio.gather(*(client(u) for u in users))
    results = arun(go(), timeout=30)
    for t in threads:
        t.join(10)
    for u, got in zip(users, results):
        assert len(set(got)) == len(got), "a message arrived twice"
        assert got == sent[u], "lost or out of order"
        wait_for(lambda: read_mark(r, u) == n, what=f"{u}'s read mark")


def test_two_connections_racing_a_stream_each_get_their_part_once(
        ws, redis, r):
    """Two tabs of one user connect at different moments of a stream: the
    first gets every message; the second starts after what the user had
    read when it connected (the read mark) and gets everything from there
    on. Each exactly once and in order, and what one tab reads never
    takes a message away from the other."""
    port = ws()
    n = 300
    sent = []
    started = threading.Event()
    t = threading.Thread(target=_publisher,
                         args=(redis.port, "twotabs", n, 600.0, started, sent))
    t.start()
    started.wait(5)

    async def tab(delay):
        await asyncio.sleep(delay)
        got = []
        async with ws_connect(port, mint(sub="twotabs")) as c:
            while True:
                try:
                    m = await recv_json(c, 1.5)
                except asyncio.TimeoutError:
                    break
                got.append(m["id"])
        return got

    async def go():
        return await asyncio.gather(tab(0.1), tab(0.3))
    a, b = arun(go(), timeout=30)
    t.join(10)
    assert a == sent, "the first tab lost or reordered messages"
    # The second: a contiguous tail of the stream, exactly once.
    assert b and b == sent[sent.index(b[0]):]


def test_ack_mode_marks_read_only_what_the_client_acknowledges(ws, r):
    """In ack mode a message written to the socket is not read until the
    client acknowledges it: a new connection gets it again. An ack raises
    the read mark to that message's position."""
    port = ws()
    msgs = [store_offline(r, message(user="acker", content=f"a{i}"))
            for i in range(3)]

    async def go():
        async with ws_connect(port, mint(sub="acker"), ack=True) as c:
            assert [await recv_json(c) for _ in msgs] == msgs
            await recv_none(c, 0.3)
        # Written, never acknowledged: nothing is read.
        assert read_mark(r, "acker") == 0
        async with ws_connect(port, mint(sub="acker"), ack=True) as c:
            assert [await recv_json(c) for _ in msgs] == msgs
            await c.send(json.dumps({"type": "ack", "id": msgs[1]["id"]}))
            wait_for(lambda: read_mark(r, "acker") == 2, what="ack")
            live = send_targeted(r, "acker", "live, not acked")
            assert await recv_json(c) == live
        await asyncio.sleep(0.3)
        assert read_mark(r, "acker") == 2
        async with ws_connect(port, mint(sub="acker"), ack=True) as c:
            assert [await recv_json(c) for _ in range(2)] == [msgs[2], live]
            await c.send(json.dumps({"type": "ack", "id": live["id"]}))
            wait_for(lambda: read_mark(r, "acker") == 4, what="last ack")
    arun(go())


def test_without_ack_mode_an_ack_is_an_error_and_marks_nothing(ws, r):
    port = ws()

    async def go():
        async with ws_connect(port, mint(sub="noack")) as c:
            await asyncio.sleep(0.1)
            # In the log, never published: this connection never saw it.
            kept = store_offline(r, message(user="noack", content="x"))
            await c.send(json.dumps({"type": "ack", "id": kept["id"]}))
            m = await recv_json(c)
            assert m == {"type": "error", "error": "ack without ack mode"}
            await asyncio.sleep(0.3)
    arun(go())
    assert read_mark(r, "noack") == 0


def test_broadcast_reaches_every_connection_and_is_not_stored(ws, r):
    port = ws()

    async def go():
        a = await ws_connect(port, mint(sub="alice"))
        b = await ws_connect(port, mint(sub="bob"))
        try:
            await asyncio.sleep(0.2)
            sent = send_broadcast(r, "hello everyone")
            assert await recv_json(a) == sent
            assert await recv_json(b) == sent
            assert "seq" not in sent
        finally:
            await a.close()
            await b.close()
    arun(go())
    assert r.command("KEYS", "offline:*") == []


def test_channel_message_goes_only_to_subscribers(ws, r):
    port = ws()

    async def go():
        a = await ws_connect(port, mint(sub="alice"))
        b = await ws_connect(port, mint(sub="bob"))
        try:
            await a.send(json.dumps({"type": "subscribe", "channel": "news"}))
            assert await recv_json(a) == {"type": "subscribed",
                                          "channel": "news"}
            sent = send_broadcast(r, "headline", channel="news")
            assert await recv_json(a) == sent
            await recv_none(b, 0.3)
            await a.send(json.dumps({"type": "unsubscribe",
                                     "channel": "news"}))
            assert (await recv_json(a))["type"] == "unsubscribed"
            send_broadcast(r, "after unsubscribe", channel="news")
            mark = send_targeted(r, "alice", "marker")
            # The next thing alice sees is the marker, not the channel.
            assert await recv_json(a) == mark
        finally:
            await a.close()
            await b.close()
    arun(go())


def test_two_instances_share_redis(redis, daemons, keys, r):
    _, p1 = start_ws(daemons, redis, keys, "--instance-id", "ws-one")
    _, p2 = start_ws(daemons, redis, keys, "--instance-id", "ws-two")

    async def go():
        a1 = await ws_connect(p1, mint(sub="alice"))
        a2 = await ws_connect(p2, mint(sub="alice"))
        b2 = await ws_connect(p2, mint(sub="bob"))
        try:
            await asyncio.sleep(0.2)
            sent = send_targeted(r, "alice", "both devices")
            assert await recv_json(a1) == sent
            assert await recv_json(a2) == sent
            bc = send_broadcast(r, "all instances")
            for c in (a1, a2, b2):
                got = await recv_json(c)
                assert got == bc
            # Alice on two instances is still one user online.
            assert online_users(r) == {"alice", "bob"}
        finally:
            for c in (a1, a2, b2):
                await c.close()
    arun(go())
    wait_for(lambda: online_users(r) == set(), what="presence cleared")


def test_presence_follows_clean_connect_and_disconnect(ws, r):
    port = ws("--instance-id", "pres-1")

    async def go():
        c1 = await ws_connect(port, mint(sub="alice"))
        c2 = await ws_connect(port, mint(sub="alice"))
        wait_for(lambda: online_users(r) == {"alice"}, 1.0, "alice online")
        assert "pres-1" in r.command("SMEMBERS", "presence:instances")
        ttl = r.command("TTL", "presence:pres-1")
        assert 0 < ttl <= 30
        await c1.close()
        await asyncio.sleep(0.3)
        # One tab left: still online.
        assert online_users(r) == {"alice"}
        await c2.close()
        wait_for(lambda: online_users(r) == set(), 1.0, "alice offline")
    arun(go())


def test_presence_of_a_killed_instance_is_a_lease_that_runs_out(
        redis, daemons, keys, r):
    d, port = start_ws(daemons, redis, keys, "--instance-id", "doomed")

    async def go():
        c = await ws_connect(port, mint(sub="ghost"))
        wait_for(lambda: online_users(r) == {"ghost"}, 1.0, "ghost online")
        d.signal(signal.SIGKILL)
        d.wait(5)
        try:
            await c.close()
        except Exception:
            pass
    arun(go())
    # Nobody removed it, but it is a lease: it expires within 30 s and is
    # not renewed any more.
    t1 = r.command("PTTL", "presence:doomed")
    assert 0 < t1 <= 30000
    time.sleep(1.2)
    t2 = r.command("PTTL", "presence:doomed")
    assert 0 < t2 < t1 - 1000
    # Once the lease runs out the user is gone from the count.
    r.command("PEXPIRE", "presence:doomed", 1)
    time.sleep(0.05)
    assert online_users(r) == set()


def test_presence_rewritten_when_the_lease_key_vanishes(ws, r):
    """Redis lost the set (restart, eviction): the renewal notices and
    writes it again within a renewal period."""
    port = ws("--instance-id", "rewriter")

    async def go():
        async with ws_connect(port, mint(sub="alice")):
            wait_for(lambda: online_users(r) == {"alice"}, 1.0, "online")
            r.command("DEL", "presence:rewriter")
            assert online_users(r) == set()
            wait_for(lambda: online_users(r) == {"alice"}, 12.0,
                     "rewritten", step=0.2)
    arun(go(), timeout=20)


def test_healthz_and_metrics_count_deliveries(ws, r):
    port = ws()
    assert http_get(port, "/healthz") == (200, '{"status":"ok"}')

    async def go():
        async with ws_connect(port, mint(sub="alice")) as c:
            await asyncio.sleep(0.1)
            assert metric(port, "notifyd_ws_connections") == 1
            assert metric(port, "notifyd_ws_users") == 1
            sent = send_targeted(r, "alice", "counted")
            assert await recv_json(c) == sent
            wait_for(lambda: metric(port, "notifyd_ws_deliveries_total") == 1)
            assert metric(port, "notifyd_ws_messages_in_total") == 1
            assert metric(
                port, "notifyd_ws_delivery_latency_seconds_count") == 1
            await c.send(json.dumps({"type": "ping"}))
            assert (await recv_json(c))["type"] == "pong"
            wait_for(lambda: metric(port, "notifyd_ws_replies_total") == 1)
            assert metric(port, "notifyd_ws_messages_out_total") == 2
            assert metric(port, "notifyd_ws_client_messages_total") == 1
        try:
            async with ws_connect(port, "garbage") as c:
                await c.recv()
        except Exception:
            pass
    arun(go())
    wait_for(lambda: metric(port, "notifyd_ws_connections") == 0)
    assert metric(port, "notifyd_ws_auth_failures_total") == 1
    assert metric(port, 'notifyd_ws_closes_total{code="4001"}') == 1
    assert metric(port, "notifyd_ws_redis_up") == 1


def test_client_js_is_served(ws):
    port = ws()
    status, body = http_get(port, "/notify-client.js")
    assert status == 200 and len(body) > 100
    assert http_get(port, "/")[0] == 404


def test_demo_page_served_with_demo_flag(ws):
    port = ws("--demo")
    status, body = http_get(port, "/")
    assert status == 200 and "<html" in body.lower()


def test_backlog_larger_than_the_send_queue_is_paced_not_dropped(ws, r):
    """A backlog of several times --send-queue-max is read page by page as
    the socket drains: all of it arrives, in order, and live messages
    sent meanwhile come after it."""
    port = ws("--send-queue-max", "128k")
    msgs = [store_offline(r, message(user="backlog", content=f"b{i}",
                                     pad=8000))
            for i in range(150)]            # about 1.2 MB

    async def go():
        async with ws_connect(port, mint(sub="backlog")) as c:
            first = await recv_json(c)
            live = send_targeted(r, "backlog", "sent during the replay")
            got = [first] + [await recv_json(c) for _ in range(len(msgs))]
            assert [g["id"] for g in got] == [m["id"] for m in msgs] + [
                live["id"]]
        wait_for(lambda: read_mark(r, "backlog") == 151, what="all read")
    arun(go(), timeout=30)
    assert metric(port, "notifyd_ws_slow_consumers_total") == 0
