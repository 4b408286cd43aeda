"""notifyd-ws delivery, end to end: live and offline messages, exactly once
per connection and in order, many connections per user, channels and
broadcasts, acknowledgements, several instances, presence and metrics.

Messages are stored and published with the Redis contract of notifyd(7)
done by hand (wsutil), clients are python3-websockets.
"""
import asyncio
import json
import signal
import threading
import time

import pytest

from wsproto import arun, mint, start_ws
from wsutil import (Resp, http_get, message, metric, offline_ids,
                    online_users, recv_json, recv_none,
                    send_broadcast, send_targeted, store_offline,
                    targeted_cmd, wait_for, ws_connect)


@pytest.fixture
def ws(redis, daemons, keys):
    """ws(*flags) -> port of a notifyd-ws with those extra flags."""
    def start(*extra):
        return start_ws(daemons, redis, keys, *extra)[1]
    return start


def test_live_targeted_message_delivered_and_removed_from_offline(ws, r):
    port = ws()

    async def go():
        async with ws_connect(port, mint(sub="alice")) as c:
            await asyncio.sleep(0.1)
            sent = send_targeted(r, "alice", "live one", data={"k": 1})
            got = await recv_json(c)
            assert got == sent
            # Written to the socket: the offline copy goes (HDEL by id).
            wait_for(lambda: offline_ids(r, "alice") == [], what="HDEL")
    arun(go())


def test_offline_messages_replayed_in_id_order_and_removed(ws, r):
    port = ws()
    msgs = [message(user="bob", content=f"m{i}") for i in range(20)]
    # Stored out of order: the replay must sort by id, not hash order.
    for m in reversed(msgs):
        store_offline(r, m)
    other = message(user="carol", content="not for bob")
    store_offline(r, other)

    async def go():
        async with ws_connect(port, mint(sub="bob")) as c:
            got = [await recv_json(c) for _ in msgs]
            assert [g["id"] for g in got] == [m["id"] for m in msgs]
            assert got == msgs
            await recv_none(c)
        wait_for(lambda: offline_ids(r, "bob") == [], what="HDEL of replay")
    arun(go())
    # Someone else's messages are untouched.
    assert offline_ids(r, "carol") == [other["id"]]
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
        assert offline_ids(r, "erin") == [kept["id"]]
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
    the ones sent before come from the offline hash, the ones after live,
    and the ones in between from either; every one arrives exactly once
    and in the order sent."""
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
        wait_for(lambda: offline_ids(r, u) == [], what=f"{u}'s hash emptied")


def test_two_connections_racing_a_stream_each_get_everything_once(ws, redis, r):
    """Two tabs of one user connect at different moments of a stream: each
    sees every message exactly once and in order (the HDEL of one tab must
    not hide a message from the other while it replays)."""
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
    for got in (a, b):
        assert len(set(got)) == len(got), "duplicate on one connection"
        # What a tab received is in send order...
        pos = [sent.index(i) for i in got]
        assert pos == sorted(pos)
        # ...and, from the first message on, nothing is skipped after the
        # earliest connect except what the other tab took from the hash
        # before this one replayed: the tail after both connected is whole.
        assert got[-50:] == sent[-50:]
    assert set(a) | set(b) == set(sent)


def test_ack_mode_keeps_unacked_messages_for_the_next_connect(ws, r):
    port = ws()
    msgs = [message(user="acker", content=f"a{i}") for i in range(3)]
    for m in msgs:
        store_offline(r, m)

    async def go():
        async with ws_connect(port, mint(sub="acker"), ack=True) as c:
            got = [await recv_json(c) for _ in msgs]
            assert [g["id"] for g in got] == [m["id"] for m in msgs]
            live = send_targeted(r, "acker", "live, acked")
            assert await recv_json(c) == live
            await c.send(json.dumps({"type": "ack", "id": msgs[1]["id"]}))
            await c.send(json.dumps({"type": "ack", "id": live["id"]}))
            left = sorted([msgs[0]["id"], msgs[2]["id"]])
            wait_for(lambda: offline_ids(r, "acker") == left, what="acks")
        # Written but not acknowledged: still there, and replayed again.
        assert offline_ids(r, "acker") == left
        async with ws_connect(port, mint(sub="acker"), ack=True) as c:
            again = [await recv_json(c) for _ in range(2)]
            assert [g["id"] for g in again] == left
    arun(go())


def test_without_ack_mode_an_ack_is_an_error_and_deletes_nothing(ws, r):
    port = ws()
    kept = message(user="noack", content="x")
    store_offline(r, message(user="other", content="y"))

    async def go():
        async with ws_connect(port, mint(sub="noack")) as c:
            await c.send(json.dumps({"type": "ack", "id": kept["id"]}))
            m = await recv_json(c)
            assert m["type"] == "error"
    arun(go())
    assert len(offline_ids(r, "other")) == 1


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
    """An offline backlog of several times --send-queue-max is fed to the
    socket as it drains: all of it arrives, in order, and live messages
    sent meanwhile come after it."""
    port = ws("--send-queue-max", "128k")
    msgs = [message(user="backlog", content=f"b{i}", pad=8000)
            for i in range(150)]            # about 1.2 MB
    r.pipeline([("HSET", "offline:backlog", m["id"],
                 json.dumps(m, separators=(",", ":"))) for m in msgs])

    async def go():
        async with ws_connect(port, mint(sub="backlog")) as c:
            first = await recv_json(c)
            live = send_targeted(r, "backlog", "sent during the replay")
            got = [first] + [await recv_json(c) for _ in range(len(msgs))]
            assert [g["id"] for g in got] == [m["id"] for m in msgs] + [
                live["id"]]
        wait_for(lambda: offline_ids(r, "backlog") == [], what="all HDEL")
    arun(go(), timeout=30)
    assert metric(port, "notifyd_ws_slow_consumers_total") == 0
