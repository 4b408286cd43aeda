"""notifyd-api together with real notifyd-ws instances and real WebSocket
clients (python3-websockets, tokens from python3-jwt): online counts come
from the presence the WebSocket daemons write, and a message sent over
HTTP reaches its user exactly once."""
import asyncio
import json
import os
import time

import jwt  # python3-jwt
import pytest
import websockets

from apiutil import start_api
from conftest import bin_path, free_port

pytestmark = pytest.mark.skipif(
    not os.access(bin_path("notifyd-ws"), os.X_OK),
    reason="bin/notifyd-ws is not built: the API/WebSocket tests need it")

SECRET = "api-ws-e2e-secret-not-for-production"
COUNT = "/api/notifications/online-count"


def start_ws(daemons, redis, tmp_path, instance):
    secret = tmp_path / "jwt.secret"
    secret.write_text(SECRET + "\n")
    port = free_port()
    daemons("notifyd-ws", "--listen", f"127.0.0.1:{port}", "--redis",
            redis.url, "--jwt-secret-file", str(secret), "--instance-id",
            instance)
    return port


def token(user):
    now = int(time.time())
    return jwt.encode({"sub": user, "iat": now, "exp": now + 300}, SECRET,
                      algorithm="HS256")


async def connect(port, user):
    url = f"ws://127.0.0.1:{port}/ws/notifications?token={token(user)}"
    return await websockets.connect(url, open_timeout=5, close_timeout=2)


async def notifications(ws, seconds):
    """Every notification (a message with an id) that arrives within
    seconds; other frames (pongs and the like) are skipped."""
    out = []
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return out
        try:
            raw = await asyncio.wait_for(ws.recv(), left)
        except asyncio.TimeoutError:
            return out
        msg = json.loads(raw)
        if "id" in msg:
            out.append(msg)


async def until(pred, what, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_online_count_across_two_ws_instances(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path)
    port_a = start_ws(daemons, redis, tmp_path, "ws-a")
    port_b = start_ws(daemons, redis, tmp_path, "ws-b")

    async def count():
        r = await asyncio.to_thread(api.get, COUNT)
        assert r.status == 200, r.body
        return r.json["online_count"]

    async def online(user):
        r = await asyncio.to_thread(api.get, f"/api/users/{user}/online")
        assert r.status == 200, r.body
        return r.json["online"]

    async def go():
        assert await count() == 0
        # bob is on both instances: counted once.
        clients = [await connect(port_a, "alice"), await connect(port_a, "bob"),
                   await connect(port_b, "bob"), await connect(port_b, "carol")]
        await until(lambda: _eq(count, 3), "online_count 3")
        assert await online("carol") and await online("bob")
        assert not await online("dave")
        await clients[3].close()
        await until(lambda: _eq(count, 2), "online_count 2 after carol left")
        assert not await online("carol")
        await clients[1].close()
        # bob is still connected to ws-b.
        assert await count() == 2 and await online("bob")
        for c in clients:
            await c.close()
        await until(lambda: _eq(count, 0), "online_count 0")

    asyncio.run(go())


async def _eq(fn, value):
    return await fn() == value


def test_api_message_reaches_the_websocket_client_exactly_once(redis, daemons,
                                                               tmp_path):
    api = start_api(daemons, redis, tmp_path)
    port_a = start_ws(daemons, redis, tmp_path, "ws-a")
    port_b = start_ws(daemons, redis, tmp_path, "ws-b")

    async def go():
        alice = await connect(port_a, "alice")
        bob = await connect(port_b, "bob")
        await until(lambda: _online(api, "alice"), "alice online")
        r = await asyncio.to_thread(api.send, {
            "target_user": "alice", "notification_type": "order",
            "content": "shipped", "data": {"order": 7}})
        assert r.status == 200, r.body
        got = await notifications(alice, 1.0)
        assert len(got) == 1, got
        msg = got[0]
        assert msg["id"] == r.json["id"] and msg["content"] == "shipped"
        assert msg["target_user"] == "alice" and msg["data"] == {"order": 7}
        assert await notifications(bob, 0.2) == []
        # Delivered live, so nothing waits to be replayed on reconnect.
        await alice.close()
        again = await connect(port_b, "alice")
        assert await notifications(again, 0.5) == []
        await again.close()

        # A broadcast reaches each connected user once.
        r = await asyncio.to_thread(api.post, "/api/notifications/broadcast"
                                    "?notification_type=info&content=all")
        assert r.status == 200
        got = await notifications(bob, 1.0)
        assert [m["id"] for m in got] == [r.json["id"]]
        await bob.close()

    asyncio.run(go())


async def _online(api, user):
    r = await asyncio.to_thread(api.get, f"/api/users/{user}/online")
    return r.status == 200 and r.json["online"]


def test_api_message_for_offline_user_is_replayed_once(redis, daemons,
                                                       tmp_path):
    api = start_api(daemons, redis, tmp_path)
    port = start_ws(daemons, redis, tmp_path, "ws-a")
    r = api.send({"target_users": ["erin", "frank"], "content": "later"})
    assert r.status == 200
    erin_id = r.json["ids"][0]

    async def go():
        erin = await connect(port, "erin")
        got = await notifications(erin, 1.0)
        assert [m["id"] for m in got] == [erin_id]
        await erin.close()
        erin = await connect(port, "erin")
        assert await notifications(erin, 0.5) == []
        await erin.close()

    asyncio.run(go())
    assert redis.cli("HGET", "offline:{frank}", "seq").strip() == "1"
