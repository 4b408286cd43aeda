"""notifyd-ws review: regression tests for defects found in a code review
of the daemon (lifetimes inside callbacks, unbounded growth a client can
drive, delivery across Redis reconnects). Each test failed before its fix;
the memory-safety ones fail through the sanitizer report that the daemons
fixture checks (run with NOTIFYD_BIN=build/san/bin), and most also show a
visible symptom in the plain build.
"""
import json
import signal
import socket
import struct
import threading
import time

import pytest

from wsproto import (OP_BINARY, OP_PING, OP_PONG, OP_TEXT, RawWS, frame,
                     mint, split_frames, start_ws)
from wsutil import (Resp, message, metric, read_mark, store_offline,
                    targeted_cmd, wait_for)


def healthy(port, user="bystander"):
    ws = RawWS(port, token=mint(sub=user))
    assert ws.status == 101, ws.status
    ws.ping_ok()
    return ws


def reset(sock):
    """Close with an RST (SO_LINGER 0): the server's next write fails."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                    struct.pack("ii", 1, 0))
    sock.close()


def test_close_from_a_frame_callback_survives_a_reset_peer(
        redis, daemons, keys):
    """A binary message makes the server close (1003) from inside wslay's
    message callback; when the peer has already reset the connection, the
    immediate write fails and the connection is killed there. wslay's
    context must not be freed under wslay_event_recv (use after free)."""
    d, port = start_ws(daemons, redis, keys)
    bystander = healthy(port)
    victims = []
    for i in range(8):
        v = RawWS(port, token=mint(sub=f"victim{i}"))
        assert v.status == 101
        v.ping_ok()
        victims.append(v)
    # Everything arrives while the server is stopped: the binary frame and
    # then the RST, so that the close it answers with cannot be written.
    d.signal(signal.SIGSTOP)
    try:
        for v in victims:
            v.send(frame(OP_BINARY, b"\x01\x02") +
                   frame(OP_TEXT, '{"type":"ping"}'))
            reset(v.sock)
        time.sleep(0.2)
    finally:
        d.signal(signal.SIGCONT)
    bystander.ping_ok()
    wait_for(lambda: metric(port, "notifyd_ws_connections") <= 1, 5,
             "the reset connections to go")
    bystander.ping_ok()
    assert d.proc.poll() is None


def test_offline_message_larger_than_the_send_queue_is_delivered(
        redis, daemons, keys, r):
    """A page of the log goes into the queue even when one message alone
    is over --send-queue-max. The enqueue used to refuse it as a slow
    consumer and close, which freed the replay state being iterated (use
    after free); and the user could never connect without being closed
    1013 again."""
    d, port = start_ws(daemons, redis, keys, "--send-queue-max", "1k")
    bystander = healthy(port)
    small = store_offline(r, message(user="big", content="small first"))
    large = store_offline(r, message(user="big", content="large", pad=3000))
    c = RawWS(port, token=mint(sub="big"))
    assert c.status == 101
    assert c.recv_json()["id"] == small["id"]
    assert c.recv_json()["id"] == large["id"]
    c.ping_ok()
    wait_for(lambda: read_mark(r, "big") == 2, 5, "both read")
    # A live one over the limit, to a connection with nothing queued.
    live = message(user="big", content="live", pad=3000)
    r.command(*targeted_cmd(live))
    assert c.recv_json()["id"] == live["id"]
    bystander.ping_ok()
    assert metric(port, "notifyd_ws_slow_consumers_total") == 0


def _stuffed_client(port, user):
    """An upgraded raw socket with a tiny receive buffer that never reads."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall((f"GET /ws/notifications?token={mint(sub=user)} HTTP/1.1"
               "\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade"
               "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
               "\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    return s


@pytest.mark.parametrize("kind", ["json-ping", "ws-ping", "subscribe"])
def test_replies_to_a_client_that_never_reads_are_bounded(
        redis, daemons, keys, kind):
    """Replies (pong, subscribed, wslay's pongs) used to bypass
    --send-queue-max: a client sending requests without reading made the
    server queue grow without bound. Now it is a slow consumer (1013)."""
    d, port = start_ws(daemons, redis, keys, "--send-queue-max", "64k")
    bystander = healthy(port)
    s = _stuffed_client(port, "flooder")
    one = {"json-ping": frame(OP_TEXT, '{"type":"ping"}'),
           "ws-ping": frame(OP_PING, b"p" * 125),
           "subscribe": frame(OP_TEXT, json.dumps(
               {"type": "subscribe", "channel": "c" * 60}))}[kind]
    try:
        # Until the server gives up on it, at most 300,000 requests: the
        # replies must outgrow the daemon's socket send buffer (Linux
        # grows it up to 4 MB on loopback when writes come slowly, as
        # under valgrind) before anything waits in its queue.
        for _ in range(300):
            s.sendall(one * 1000)
            if metric(port, "notifyd_ws_slow_consumers_total") == 1:
                break
    except OSError:
        pass   # closed by the server: what we want
    try:
        wait_for(lambda: metric(port, "notifyd_ws_slow_consumers_total") == 1,
                 10, "the flooder closed as a slow consumer")
        assert metric(port, "notifyd_ws_send_queue_bytes") < 256 * 1024
        bystander.ping_ok()
    finally:
        s.close()


def test_acks_while_redis_is_away_are_bounded(redis, daemons, keys):
    """Every ack used to become an HDEL kept in memory until Redis
    answered: with Redis away, one client could grow that list without
    bound. Now acks raise the user's read mark: what waits is one mark
    per user and at most 64 acknowledged ids (the oldest dropped: a lost
    read mark only means a new device is offered a message again), and
    it is written once Redis is back."""
    redis.stop()
    redis.start("--appendonly", "yes", "--appendfsync", "always")
    d, port = start_ws(daemons, redis, keys)
    r = Resp(redis.port)
    msgs = [store_offline(r, message(user="acker", content=f"m{i}"))
            for i in range(100)]
    r.close()
    tok = mint(sub="acker")
    c = RawWS(port, path=f"/ws/notifications?ack=1&token={tok}")
    assert c.status == 101
    assert [c.recv_json()["id"] for _ in msgs] == [m["id"] for m in msgs]
    redis.stop()
    wait_for(lambda: metric(port, "notifyd_ws_redis_up") == 0, 10,
             "redis seen down")
    # 67,000 acks, the last 64 of them for positions 37 to 100.
    burst = b"".join(frame(OP_TEXT, json.dumps({"type": "ack", "id": m["id"]}))
                     for m in msgs)
    for _ in range(670):
        c.send(burst)
    c.ping_ok(timeout=10)   # every ack taken, none answered with an error
    assert metric(port, "notifyd_ws_read_marks_pending") == 1
    assert metric(port, "notifyd_ws_acks_dropped_total") == 67000 - 64
    assert metric(port, "notifyd_ws_read_marks_written_total") == 0
    redis.start("--appendonly", "yes", "--appendfsync", "always")
    wait_for(lambda: metric(port, "notifyd_ws_read_marks_pending") == 0, 15,
             "the pending marks written")
    wait_for(lambda: metric(port, "notifyd_ws_read_marks_written_total")
             == 64, 5, "64 ack marks answered")
    r = Resp(redis.port)
    try:
        assert read_mark(r, "acker") == 100
    finally:
        r.close()
    c.ping_ok()


def _read_frames(sock, want_ids, deadline):
    """Ids of the text messages read from an upgraded raw socket (its 101
    head already consumed) until every id in want_ids was seen."""
    buf, out, seen = b"", [], set()
    while time.monotonic() < deadline and not want_ids <= seen:
        sock.settimeout(0.5)
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        if not chunk:
            break
        buf += chunk
        frames, buf = split_frames(buf)
        for op, payload in frames:
            if op == OP_TEXT:
                try:
                    mid = json.loads(payload)["id"]
                except ValueError:
                    mid = payload[:20].decode()
                out.append(mid)
                seen.add(mid)
    return out


def test_message_written_while_the_replay_read_is_in_flight_not_resent(
        redis, daemons, keys, r):
    """After the subscription is lost every connection reads its log
    again. A message still in the send queue when that read runs is in
    its result; if the socket takes it before the reply is in, it must
    not be sent twice on the same connection. (The window is widened by
    large entries after it, while the client reads as fast as it can;
    with the old hash store this failed in 8 of 9 runs before its fix;
    with the log the cursor rules it out.)"""
    d, port = start_ws(daemons, redis, keys, "--send-queue-max", "64M")
    s = _stuffed_client(port, "racer")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert b" 101 " in head
    msgs = [message(user="racer", content=f"m{i}", pad=20000)
            for i in range(300)]   # beyond what the kernel buffers hold
    r.pipeline([targeted_cmd(m) for m in msgs])
    wait_for(lambda: metric(port, "notifyd_ws_send_queue_bytes") > 500000, 5,
             "messages queued for the stuck reader")
    # Large entries after them, stored but never published.
    junk = [store_offline(r, message(user="racer", content=f"junk {i}",
                                     pad=2000000))["id"] for i in range(4)]
    r.command("CLIENT", "KILL", "TYPE", "pubsub")
    # Read at full speed from the moment the server subscribes again,
    # which is when it reads the log.
    wait_for(lambda: r.command("PUBSUB", "NUMSUB", "notifications")[1] == 1,
             5, "resubscribed", step=0.001)
    want = {m["id"] for m in msgs} | set(junk)
    got = _read_frames(s, want, time.monotonic() + 30)
    s.close()
    dups = sorted({i for i in got if got.count(i) > 1})
    assert not dups, f"{len(dups)} sent twice"
    assert want <= set(got)


def test_connection_gone_while_its_store_read_is_in_flight(
        redis, daemons, keys, r):
    """Guard (passed before the review): connections that vanish while
    their log read waits in a stalled Redis leave their session until the
    reply, which then touches no freed memory (checked under the
    sanitizers)."""
    d, port = start_ws(daemons, redis, keys, "--redis-timeout", "3s")
    for i in range(5):
        store_offline(r, message(user="ghost", content=f"o{i}"))
    # Redis holds every command (the log reads too) for a while.
    assert r.command("CLIENT", "PAUSE", "600", "ALL") == "OK"
    for _ in range(5):
        g = RawWS(port, token=mint(sub="ghost"))
        assert g.status == 101
        reset(g.sock)
    wait_for(lambda: metric(port, "notifyd_ws_connections") == 0, 5,
             "the ghosts killed")
    # Their reads still wait for Redis.
    assert metric(port, "notifyd_ws_page_reads_inflight") >= 1
    wait_for(lambda: metric(port, "notifyd_ws_page_reads_inflight") == 0, 5,
             "the reads answered")
    assert read_mark(r, "ghost") == 0   # nothing was written
    c = RawWS(port, token=mint(sub="ghost"))
    assert [c.recv_json()["content"] for _ in range(5)] == [
        f"o{i}" for i in range(5)]


def test_ack_mode_replay_restarted_midway_sends_nothing_twice(
        redis, daemons, keys, r):
    """A replay cut by a lost subscription goes on from its cursor; in ack
    mode what it wrote is not read yet. (The old store remembered the ids
    it had written and a connection timer retired that memory too early,
    so they were all sent again.)"""
    d, port = start_ws(daemons, redis, keys, "--send-queue-max", "256k",
                       "--ping-interval", "50ms", "--ping-timeout", "10s")
    msgs = [message(user="acker", content=f"m{i}", pad=20000)
            for i in range(300)]   # beyond what the kernel buffers hold
    r.pipeline([targeted_cmd(m, channel="nobody-listens-here")
                for m in msgs])
    c = RawWS(port, path=f"/ws/notifications?ack=1&token={mint(sub='acker')}")
    assert c.status == 101
    # Unsolicited pongs keep the connection busy, never idle: its timer
    # then runs every 50ms instead of waiting for a pong to a ping.
    stop = threading.Event()

    def keep_busy():
        while not stop.wait(0.01):
            c.send(frame(OP_PONG))
    busy = threading.Thread(target=keep_busy)
    busy.start()
    try:
        wait_for(lambda: metric(port, "notifyd_ws_offline_replayed_total")
                 > 50, 5, "the replay under way")
        assert metric(port, "notifyd_ws_offline_replayed_total") < len(msgs)
        r.command("CLIENT", "KILL", "TYPE", "pubsub")
        wait_for(lambda: r.command("PUBSUB", "NUMSUB", "notifications")[1]
                 == 1, 5, "resubscribed")
        time.sleep(0.2)   # several ticks of the connection timer
    finally:
        stop.set()
        busy.join()
    got = [c.recv_json(timeout=10)["id"] for _ in range(len(msgs))]
    assert got == [m["id"] for m in msgs]
    c.ping_ok()   # and nothing else came
