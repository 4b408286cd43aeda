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
                     mint, start_ws)
from wsutil import (message, metric, offline_ids, store_offline,
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
    """The replay feeds one offline message into an empty queue even when
    it alone is over --send-queue-max (room_for() allows it). The enqueue
    used to refuse it as a slow consumer and close, which freed the replay
    state that ntws_replay_pump() was iterating (use after free); and the
    user could never connect without being closed 1013 again."""
    d, port = start_ws(daemons, redis, keys, "--send-queue-max", "1k")
    bystander = healthy(port)
    small = message(user="big", content="small first")
    large = message(user="big", content="large", pad=3000)
    store_offline(r, small)
    store_offline(r, large)
    c = RawWS(port, token=mint(sub="big"))
    assert c.status == 101
    assert c.recv_json()["id"] == small["id"]
    assert c.recv_json()["id"] == large["id"]
    c.ping_ok()
    wait_for(lambda: offline_ids(r, "big") == [], 5, "both HDEL")
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
        # About 2 MB of replies: far over the 64k limit.
        for _ in range(40):
            s.sendall(one * 1000)
            if metric(port, "notifyd_ws_slow_consumers_total") == 1:
                break
    except OSError:
        pass   # closed by the server: what we want
    try:
        wait_for(lambda: metric(port, "notifyd_ws_slow_consumers_total") == 1,
                 5, "the flooder closed as a slow consumer")
        assert metric(port, "notifyd_ws_send_queue_bytes") < 256 * 1024
        bystander.ping_ok()
    finally:
        s.close()


def test_acks_while_redis_is_away_are_bounded(redis, daemons, keys):
    """Every ack became an HDEL kept in memory until Redis answers: with
    Redis away (or slower than the client), one client could grow that
    list without bound. Past a cap, acks are refused with an error (the
    message simply comes again on the next connect, as ack mode allows)."""
    d, port = start_ws(daemons, redis, keys)
    tok = mint(sub="acker")
    c = RawWS(port, path=f"/ws/notifications?ack=1&token={tok}")
    assert c.status == 101
    c.ping_ok()
    redis.stop()
    wait_for(lambda: metric(port, "notifyd_ws_redis_up") == 0, 10,
             "redis seen down")
    one = frame(OP_TEXT, json.dumps({"type": "ack", "id": message()["id"]}))
    for _ in range(67):
        c.send(one * 1000)
    err = c.recv_json(timeout=10)
    assert err["type"] == "error" and "ack" in err["error"], err
    pending = metric(port, "notifyd_ws_redis_pending_hdels")
    assert 60000 <= pending <= 65536, pending
    redis.start()
    # Kept ones are sent once Redis is back.
    wait_for(lambda: metric(port, "notifyd_ws_redis_pending_hdels") == 0, 15,
             "the kept HDELs done")


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
            op, payload, buf = buf[0] & 0x0F, buf[off:off + n], buf[off + n:]
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
    """After the subscription is lost every connection reads its store
    again. A message still in the send queue when that HGETALL runs is in
    its result; if the socket takes it before the reply is in, neither the
    queue check nor the seen set knew it, and it was sent twice on the same
    connection. (The window is widened by a large store, whose reply takes
    many reads to come in while the client reads as fast as it can; this
    failed in 8 of 9 runs before the fix.)"""
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
    # A large store: the HGETALL reply takes many reads to come in.
    junk = {f"zz-junk-{i}": json.dumps({"id": f"zz-junk-{i}",
                                        "content": "j" * 2000000})
            for i in range(4)}
    for k, v in junk.items():
        r.command("HSET", "offline:racer", k, v)
    r.command("CLIENT", "KILL", "TYPE", "pubsub")
    # Read at full speed from the moment the server subscribes again,
    # which is when it sends the HGETALL.
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
    their HGETALL waits in a stalled Redis are kept until the reply, which
    then touches no freed memory (checked under the sanitizers)."""
    d, port = start_ws(daemons, redis, keys, "--redis-timeout", "3s")
    for i in range(5):
        store_offline(r, message(user="ghost", content=f"o{i}"))
    # Redis holds every command (the HGETALLs too) for a while.
    assert r.command("CLIENT", "PAUSE", "600", "ALL") == "OK"
    for _ in range(5):
        g = RawWS(port, token=mint(sub="ghost"))
        assert g.status == 101
        reset(g.sock)
    wait_for(lambda: metric(port, "notifyd_ws_connections") == 0, 5,
             "the ghosts killed")
    # Still allocated: their HGETALL replies will name them.
    assert metric(port, "notifyd_ws_sockets") >= 5
    wait_for(lambda: metric(port, "notifyd_ws_sockets") <= 1, 5,
             "the ghosts reaped")
    assert len(offline_ids(r, "ghost")) == 5   # nothing was written
    c = RawWS(port, token=mint(sub="ghost"))
    assert [c.recv_json()["content"] for _ in range(5)] == [
        f"o{i}" for i in range(5)]


def test_ack_mode_replay_restarted_midway_sends_nothing_twice(
        redis, daemons, keys, r):
    """A replay cut by a lost subscription starts over, remembering the ids
    it already wrote; in ack mode those are still in the store. The
    connection timer retired that memory before the new read was in (its
    fence was left from before), so they were all sent again."""
    d, port = start_ws(daemons, redis, keys, "--send-queue-max", "256k",
                       "--ping-interval", "50ms", "--ping-timeout", "10s")
    msgs = [message(user="acker", content=f"m{i}", pad=20000)
            for i in range(300)]   # beyond what the kernel buffers hold
    r.pipeline([("HSET", "offline:acker", m["id"],
                 json.dumps(m, separators=(",", ":"))) for m in msgs])
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
