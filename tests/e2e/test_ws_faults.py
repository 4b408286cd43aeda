"""notifyd-ws under faults: Redis down at start, restarted, or stalled;
slow readers; clients that stop answering; SIGTERM and SIGINT; file
descriptor exhaustion; several processes on one port (SO_REUSEPORT).
Each test also checks that the daemon keeps serving a healthy client.
"""
import asyncio
import json
import os
import signal
import socket
import subprocess
import time

import pytest
import websockets

from conftest import bin_path, free_port, wait_port
from wsproto import OP_PING, RawWS, arun, mint, wait_closed_by_peer
from wsutil import (Resp, http_get, log_ids, log_key, message, metric,
                    online_users, read_mark, recv_json, send_targeted,
                    store_offline, targeted_cmd, wait_for, ws_connect)


def ws_args(redis, keys, port, *extra):
    return ("--listen", f"127.0.0.1:{port}", "--redis", redis.url,
            "--jwt-secret-file", keys.secret_file, *extra)


def healthz(port):
    try:
        return http_get(port, "/healthz", timeout=2)[0]
    except OSError:
        return None


async def delivered(port, r, user="bystander"):
    """A fresh client of user gets a fresh message: the daemon serves."""
    async with ws_connect(port, mint(sub=user)) as c:
        await asyncio.sleep(0.05)
        sent = send_targeted(r, user, "still serving")
        got = await recv_json(c)
        while got.get("id") != sent["id"]:
            got = await recv_json(c)
        return True


def test_starts_while_redis_is_down_and_serves_once_it_is_up(
        redis, daemons, keys):
    port = free_port()
    redis.stop()
    d = daemons("notifyd-ws", *ws_args(redis, keys, port,
                                       "--redis-timeout", "500ms"),
                ready=False)
    wait_port(port)
    status, body = http_get(port, "/healthz")
    assert status == 503 and json.loads(body)["status"] == "error"
    time.sleep(0.5)
    assert d.proc.poll() is None, "must not exit because Redis is down"
    redis.start()
    wait_for(lambda: healthz(port) == 200, 8, "healthz 200 after Redis came")
    r = Resp(redis.port)
    try:
        assert arun(delivered(port, r))
    finally:
        r.close()


def test_redis_restart_resubscribes_and_replays_what_was_missed(
        redis, daemons, keys):
    port = free_port()
    daemons("notifyd-ws", *ws_args(redis, keys, port, "--redis-timeout",
                                   "500ms"))

    async def go():
        async with ws_connect(port, mint(sub="alice")) as c:
            await asyncio.sleep(0.1)
            redis.stop()
            wait_for(lambda: healthz(port) == 503, 5, "healthz 503")
            redis.start()
            r = Resp(redis.port)
            try:
                # Sent while the daemon may not be subscribed again yet: it
                # must come exactly once, by the replay after resubscribing
                # or live.
                early = send_targeted(r, "alice", "during reconnect")
                wait_for(lambda: healthz(port) == 200, 8, "healthz 200")
                got = await recv_json(c, 8)
                assert got == early
                live = send_targeted(r, "alice", "after reconnect")
                assert await recv_json(c) == live
                wait_for(lambda: read_mark(r, "alice") == live["seq"],
                         what="read mark")
                # The presence set was written again after the restart.
                wait_for(lambda: online_users(r) == {"alice"}, 3, "presence")
            finally:
                r.close()
            # The connection itself survived the restart.
            await c.send(json.dumps({"type": "ping"}))
            assert (await recv_json(c))["type"] == "pong"
    arun(go(), timeout=30)


def test_stalled_redis_detected_by_ping_deadline(redis, daemons, keys):
    port = free_port()
    daemons("notifyd-ws", *ws_args(redis, keys, port, "--redis-timeout",
                                   "400ms"))
    assert healthz(port) == 200
    # A frozen Redis keeps its sockets open: only a deadline notices.
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: healthz(port) == 503, 4, "healthz 503 while stalled")
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: healthz(port) == 200, 8, "healthz 200 after stall")
    r = Resp(redis.port)
    try:
        assert arun(delivered(port, r))
    finally:
        r.close()


def test_slow_reader_is_closed_and_its_messages_wait_unread(
        redis, daemons, keys):
    port = free_port()
    daemons("notifyd-ws", *ws_args(redis, keys, port,
                                   "--send-queue-max", "64k"))
    r = Resp(redis.port)
    # A client with a tiny receive buffer that never reads.
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", port))
    slow.sendall((f"GET /ws/notifications?token={mint(sub='slow')} HTTP/1.1"
                  "\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade"
                  "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
                  "\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    time.sleep(0.2)

    async def go():
        async with ws_connect(port, mint(sub="fast")) as fast:
            await asyncio.sleep(0.1)
            cmds = []
            # Well over what the kernel buffers of both ends can hold.
            for i in range(400):
                m = message(user="slow", content=f"big {i}", pad=20000)
                cmds.append(targeted_cmd(m))
            r.pipeline(cmds)
            # The others are not held up by the slow one.
            t0 = time.monotonic()
            sent = send_targeted(r, "fast", "not blocked")
            assert await recv_json(fast) == sent
            assert time.monotonic() - t0 < 1.0
    try:
        arun(go())
        wait_for(lambda: metric(port, "notifyd_ws_slow_consumers_total") == 1,
                 5, "slow consumer closed")
        wait_for(lambda: metric(port, "notifyd_ws_connections") == 1, 5,
                 "slow connection gone")
        # What never reached its socket waits in the log, unread.
        assert len(log_ids(r, "slow")) == 400
        assert read_mark(r, "slow") < 400
        assert metric(port, 'notifyd_ws_closes_total{code="1013"}') == 1
    finally:
        slow.close()
        r.close()


def test_client_that_stops_answering_pings_is_dropped(redis, daemons, keys):
    port = free_port()
    daemons("notifyd-ws", *ws_args(redis, keys, port, "--ping-interval",
                                   "300ms", "--ping-timeout", "300ms"))
    mute = RawWS(port, token=mint(sub="mute"))
    assert mute.status == 101
    # The server pings an idle connection...
    fin, op, payload = mute.recv_frame(2)
    assert op == OP_PING
    # ...and, with no pong, closes it.
    assert wait_closed_by_peer(mute.sock, 3) < 2.5

    async def go():
        # A client that answers (websockets does) stays across many pings.
        async with ws_connect(port, mint(sub="talker"),
                              ping_interval=None) as c:
            await asyncio.sleep(1.5)
            await c.send(json.dumps({"type": "ping"}))
            assert (await recv_json(c))["type"] == "pong"
    arun(go())


def test_silent_client_dropped_at_handshake_deadline(redis, daemons, keys):
    port = free_port()
    daemons("notifyd-ws", *ws_args(redis, keys, port, "--handshake-timeout",
                                   "300ms"))
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /ws/notifications HTTP/1.1\r\nHost: x\r\n")
        took = wait_closed_by_peer(s, 3)
        assert 0.2 < took < 2


def test_sigterm_closes_clients_with_1001_and_exits_0(redis, daemons, keys):
    port = free_port()
    d = daemons("notifyd-ws", *ws_args(redis, keys, port, "--instance-id",
                                       "going", "--shutdown-timeout", "3s"))
    r = Resp(redis.port)

    async def go():
        c = await ws_connect(port, mint(sub="alice"))
        wait_for(lambda: online_users(r) == {"alice"}, 2, "online")
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        with pytest.raises(websockets.ConnectionClosed) as e:
            await c.recv()
        assert e.value.rcvd is not None and e.value.rcvd.code == 1001
        assert d.wait(5) == 0
        assert time.monotonic() - t0 < 3
    try:
        arun(go())
        # It took its presence with it.
        assert "going" not in (r.command("SMEMBERS", "presence:instances")
                               or [])
        assert r.command("EXISTS", "presence:going") == 0
        # Undelivered messages wait for the next connect.
        kept = send_targeted(r, "alice", "after shutdown")
        assert log_ids(r, "alice") == [kept["id"]]
        assert read_mark(r, "alice") == 0
    finally:
        r.close()


def test_sigterm_gives_up_on_a_stuck_client_at_the_deadline(
        redis, daemons, keys):
    port = free_port()
    d = daemons("notifyd-ws", *ws_args(redis, keys, port,
                                       "--shutdown-timeout", "700ms"))
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", port))
    stuck.sendall((f"GET /ws/notifications?token={mint(sub='stuck')} "
                   "HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection:"
                   " Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
                   "\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    r = Resp(redis.port)
    try:
        time.sleep(0.2)
        r.pipeline([targeted_cmd(message(user="stuck", pad=8000))
                    for _ in range(60)])
        time.sleep(0.3)
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        assert d.wait(5) == 0
        assert 0.5 < time.monotonic() - t0 < 3
    finally:
        stuck.close()
        r.close()


def test_second_sigint_exits_at_once(redis, daemons, keys):
    port = free_port()
    d = daemons("notifyd-ws", *ws_args(redis, keys, port,
                                       "--shutdown-timeout", "30s"))
    # A client that never reads keeps the graceful shutdown waiting.
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", port))
    stuck.sendall((f"GET /ws/notifications?token={mint(sub='stuck')} "
                   "HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection:"
                   " Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
                   "\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    r = Resp(redis.port)
    try:
        time.sleep(0.2)
        r.pipeline([targeted_cmd(message(user="stuck", pad=8000))
                    for _ in range(60)])
        time.sleep(0.3)
        d.signal(signal.SIGINT)
        time.sleep(0.5)
        assert d.proc.poll() is None, "first SIGINT: graceful, still flushing"
        d.signal(signal.SIGINT)
        d.wait(2)
    finally:
        stuck.close()
        r.close()


def _spawn(args, nofile=None):
    """notifyd-ws outside the fixture, for resource limits."""
    rfd, wfd = os.pipe()
    cmd = [bin_path("notifyd-ws"), *args, "--ready-fd", str(wfd)]
    if nofile is not None:
        cmd = ["prlimit", f"--nofile={nofile}", "--"] + cmd
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFYD_")}
    p = subprocess.Popen(cmd, pass_fds=(wfd,), env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(wfd)
    import select
    ok = select.select([rfd], [], [], 10)[0]
    os.close(rfd)
    if not ok:
        p.kill()
        raise RuntimeError(p.stderr.read().decode())
    return p


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_raises_its_soft_open_files_limit_to_the_hard_one(redis, keys):
    port = free_port()
    p = _spawn(ws_args(redis, keys, port), nofile="256:4096")
    try:
        with open(f"/proc/{p.pid}/limits") as f:
            line = [x for x in f if x.startswith("Max open files")][0]
        assert line.split()[3:5] == ["4096", "4096"]
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(5) == 0


def test_out_of_descriptors_pauses_accept_without_spinning(redis, keys):
    port = free_port()
    p = _spawn(ws_args(redis, keys, port), nofile="40:40")
    socks = []
    try:
        # More connections than descriptors: the extra ones wait in the
        # kernel backlog while accept() fails with EMFILE.
        for _ in range(60):
            socks.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(0.3)
        c0 = _cpu_seconds(p.pid)
        time.sleep(1.0)
        used = _cpu_seconds(p.pid) - c0
        assert used < 0.3, f"busy loop: {used}s of CPU in 1s"
        assert p.poll() is None
        # Freeing descriptors lets the waiting ones in again.
        for s in socks:
            s.close()
        socks = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if http_get(port, "/healthz", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("not serving after descriptors freed")
    finally:
        for s in socks:
            s.close()
        p.send_signal(signal.SIGTERM)
        p.wait(5)
        err = p.stderr.read().decode()
        assert "EMFILE" in err or "Too many open files" in err


def test_reuseport_lets_processes_share_one_port(redis, daemons, keys):
    port = free_port()
    daemons("notifyd-ws", *ws_args(redis, keys, port, "--reuseport",
                                   "--instance-id", "rp-1"))
    daemons("notifyd-ws", *ws_args(redis, keys, port, "--reuseport",
                                   "--instance-id", "rp-2"))
    # Without the flag the port is taken: refused with a reason.
    p = subprocess.run([bin_path("notifyd-ws"),
                        *ws_args(redis, keys, port)], capture_output=True,
                       timeout=10)
    assert p.returncode != 0 and b"listen" in p.stderr
    r = Resp(redis.port)

    async def go():
        conns = [await ws_connect(port, mint(sub=f"u{i}")) for i in range(24)]
        try:
            await asyncio.sleep(0.2)
            # Connections land on both processes (the kernel spreads them).
            members = [set(r.command("SMEMBERS", f"presence:rp-{k}") or [])
                       for k in (1, 2)]
            assert members[0] and members[1]
            assert members[0] | members[1] == {f"u{i}" for i in range(24)}
            for i, c in enumerate(conns[:4]):
                sent = send_targeted(r, f"u{i}", "wherever you are")
                assert await recv_json(c) == sent
        finally:
            for c in conns:
                await c.close()
    try:
        arun(go())
    finally:
        r.close()


def test_sighup_reloads_the_jwt_key(redis, daemons, keys, tmp_path):
    port = free_port()
    secret = tmp_path / "rotating.secret"
    secret.write_text("first-secret-0123456789-0123456789\n")
    d = daemons("notifyd-ws", "--listen", f"127.0.0.1:{port}", "--redis",
                redis.url, "--jwt-secret-file", str(secret))

    async def code_for(tok):
        """None when accepted (a ping answers), else the close code."""
        async with ws_connect(port, tok) as c:
            try:
                await c.send(json.dumps({"type": "ping"}))
                await recv_json(c)
                return None
            except websockets.ConnectionClosed as e:
                return e.rcvd.code if e.rcvd else None
    old = mint(key="first-secret-0123456789-0123456789", sub="alice")
    new = mint(key="second-secret-9876543210-9876543210", sub="alice")
    assert arun(code_for(old)) is None
    assert arun(code_for(new)) == 4001
    secret.write_text("second-secret-9876543210-9876543210\n")
    d.signal(signal.SIGHUP)

    def rotated():
        return arun(code_for(new)) is None
    wait_for(rotated, 3, "new key in use", step=0.1)
    assert arun(code_for(old)) == 4001
    # A broken key file is refused and the current key stays.
    secret.write_text("")
    d.signal(signal.SIGHUP)
    time.sleep(0.3)
    assert arun(code_for(new)) is None
    assert d.proc.poll() is None


def test_connect_while_redis_is_down_replays_once_it_is_back(
        redis, daemons, keys):
    """A client that authenticates while Redis is away is kept open and
    gets its offline messages once Redis answers again."""
    port = free_port()
    daemons("notifyd-ws", *ws_args(redis, keys, port, "--redis-timeout",
                                   "500ms"))

    async def go():
        redis.stop()
        wait_for(lambda: healthz(port) == 503, 5, "healthz 503")
        async with ws_connect(port, mint(sub="early")) as c:
            redis.start()
            r = Resp(redis.port)
            try:
                waiting = message(user="early", content="stored before")
                store_offline(r, waiting)
                # Whether the replay ran before or after the store, the
                # next live message brings nothing twice and the stored
                # one arrives exactly once by the time Redis is healthy
                # and one more message went through.
                wait_for(lambda: healthz(port) == 200, 8, "healthz 200")
                live = send_targeted(r, "early", "live")
                got = []
                while not got or got[-1]["id"] != live["id"]:
                    got.append(await recv_json(c, 5))
                ids = [g["id"] for g in got]
                assert len(ids) == len(set(ids))
                assert ids[-1] == live["id"]
            finally:
                r.close()
    arun(go(), timeout=30)


def test_environment_fallbacks_configure_the_daemon(redis, daemons, keys):
    port = free_port()
    daemons("notifyd-ws", env={
        "NOTIFYD_WS_LISTEN": f"127.0.0.1:{port}",
        "NOTIFYD_REDIS_URL": redis.url,
        "NOTIFYD_REDIS_PREFIX": "envpfx:",
        "NOTIFYD_JWT_SECRET_FILE": keys.secret_file,
        "NOTIFYD_WS_INSTANCE_ID": "from-env",
    })
    r = Resp(redis.port)

    async def go():
        async with ws_connect(port, mint(sub="alice")) as c:
            wait_for(lambda: r.command("SMEMBERS", "envpfx:presence:from-env")
                     == ["alice"], 2, "prefixed presence")
            m = message(user="alice", content="prefixed")
            r.command(*targeted_cmd(m, prefix="envpfx:"))
            assert (await recv_json(c))["id"] == m["id"]
            wait_for(lambda: r.command("HGET", log_key("alice", "envpfx:"),
                                       "read") == "1", what="prefixed mark")
    try:
        arun(go())
    finally:
        r.close()


def test_usage_errors_exit_64_with_a_reason(redis, keys):
    """A command line that cannot be read: exit 64 (notifyd(7))."""
    for args in (["--no-such-flag"], ["stray-operand"], ["--listen"],
                 ["--ttl", "1h"]):
        p = subprocess.run([bin_path("notifyd-ws"), "--jwt-secret-file",
                            keys.secret_file, *args], capture_output=True,
                           timeout=10)
        assert p.returncode == 64, (args, p.stderr)
        assert len(p.stderr.decode().strip().splitlines()) == 1, args


def test_bad_values_exit_78_naming_the_flag(redis, keys):
    """A value that does not parse is a configuration error, exit 78, with
    one line naming the flag and the value."""
    for args in (["--listen", "nonsense"], ["--ping-interval", "soon"],
                 ["--max-message", "lots"], ["--redis", "http://x"]):
        p = subprocess.run([bin_path("notifyd-ws"), "--jwt-secret-file",
                            keys.secret_file, *args], capture_output=True,
                           timeout=10)
        err = p.stderr.decode().strip()
        assert p.returncode == 78, (args, err)
        assert len(err.splitlines()) == 1, err
        assert f"{args[0]} '{args[1]}'" in err, err


def test_redis_password_and_database_from_the_url(redis, daemons, keys):
    redis.cli("CONFIG", "SET", "requirepass", "s3cret")
    port, bad_port = free_port(), free_port()
    url = f"redis://:s3cret@127.0.0.1:{redis.port}/3"
    daemons("notifyd-ws", "--listen", f"127.0.0.1:{port}", "--redis", url,
            "--jwt-secret-file", keys.secret_file)
    # A wrong password: refused by Redis, reported, retried; never an exit.
    bad = daemons("notifyd-ws", "--listen", f"127.0.0.1:{bad_port}",
                  "--redis", f"redis://:wrong@127.0.0.1:{redis.port}",
                  "--jwt-secret-file", keys.secret_file, ready=False)
    r = Resp(redis.port)
    r.command("AUTH", "s3cret")
    r.command("SELECT", 3)

    async def go():
        async with ws_connect(port, mint(sub="alice")) as c:
            await asyncio.sleep(0.1)
            sent = send_targeted(r, "alice", "in db 3")
            assert await recv_json(c) == sent
            wait_for(lambda: read_mark(r, "alice") == 1, what="mark in db 3")
    try:
        arun(go())
        wait_port(bad_port)
        assert healthz(bad_port) == 503
        time.sleep(0.3)
        assert bad.proc.poll() is None
    finally:
        r.close()
    bad.stop()
    assert "WRONGPASS" in bad.stderr() or "invalid" in bad.stderr()
    assert "wrong" not in bad.stderr().replace("WRONGPASS", "")


def _kill_client(r, name):
    """CLIENT KILL the connection of notifyd-ws named name."""
    for line in r.command("CLIENT", "LIST").splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields.get("name") == name:
            r.command("CLIENT", "KILL", "ID", fields["id"])
            return True
    return False


def test_lost_subscription_replays_what_was_published_meanwhile(
        redis, daemons, keys):
    """Redis stays up but the subscriber connection drops: a message
    published before the daemon subscribes again reaches the connected
    user exactly once, from the replay that follows the resubscribe."""
    port = free_port()
    daemons("notifyd-ws", *ws_args(redis, keys, port, "--instance-id", "ks"))
    r = Resp(redis.port)

    async def go():
        async with ws_connect(port, mint(sub="alice")) as c:
            await asyncio.sleep(0.1)
            assert _kill_client(r, "notifyd-ws:sub:ks")
            missed = send_targeted(r, "alice", "while unsubscribed")
            assert await recv_json(c, 5) == missed
            live = send_targeted(r, "alice", "after")
            assert await recv_json(c) == live
            wait_for(lambda: read_mark(r, "alice") == live["seq"],
                     what="read mark")
    try:
        arun(go())
        assert metric(port, 'notifyd_ws_redis_reconnects_total'
                      '{connection="subscriber"}') == 1
        assert metric(port, 'notifyd_ws_redis_reconnects_total'
                      '{connection="commands"}') == 0
    finally:
        r.close()


def test_lost_command_connection_writes_the_read_mark_once_back(
        redis, daemons, keys):
    """The command connection drops while a delivery's read mark is to be
    written: it is written after reconnecting, so a new connection is not
    offered the message again."""
    port = free_port()
    daemons("notifyd-ws", *ws_args(redis, keys, port, "--instance-id", "kc"))
    r = Resp(redis.port)

    async def go():
        async with ws_connect(port, mint(sub="bob")) as c:
            await asyncio.sleep(0.1)
            # The delivery happens while the command connection is gone
            # (it comes back after a backoff): its read mark has to wait.
            assert _kill_client(r, "notifyd-ws:cmd:kc")
            sent = send_targeted(r, "bob", "delivered, mark pending")
            assert await recv_json(c) == sent
            wait_for(lambda: read_mark(r, "bob") == sent["seq"], 5,
                     "read mark written")
        async with ws_connect(port, mint(sub="bob")) as c:
            mark = send_targeted(r, "bob", "marker")
            assert await recv_json(c) == mark
    try:
        arun(go())
        assert metric(port, 'notifyd_ws_redis_reconnects_total'
                      '{connection="commands"}') == 1
    finally:
        r.close()
