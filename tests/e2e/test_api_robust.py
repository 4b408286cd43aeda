"""notifyd-api under hostile or unlucky conditions: oversized and aborted
uploads, slow clients, key reloads, rate limits, Redis down, stalled or out
of memory, shutdown while a request is in flight, and refusing to start
without credentials."""
import json
import os
import signal
import socket
import time

from apiutil import (KEY_A, KEY_B, Subscriber, metric_value, raw_http,
                     start_api, write_keys)
from conftest import free_port, run

SEND = "/api/notifications/send"


def post_head(port, path, length=None, chunked=False, key=KEY_A,
              ctype="application/json"):
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
             f"Authorization: Bearer {key}", f"Content-Type: {ctype}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(raw):
    assert raw.startswith(b"HTTP/1.1 "), raw[:100]
    return int(raw[9:12])


def body_of(raw):
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


def chunk(data):
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def healthy(api):
    r = api.send({"target_user": "after", "content": "ok"})
    assert r.status == 200, r.body
    return r


# ---- body limits --------------------------------------------------------

def test_declared_length_over_max_body_is_413_before_reading(redis, daemons,
                                                            tmp_path):
    api = start_api(daemons, redis, tmp_path, "--max-body", "1k")
    # Only the headers are sent: the answer must not wait for the body.
    s = socket.create_connection(("127.0.0.1", api.port), timeout=3)
    s.sendall(post_head(api.port, SEND, length=2000))
    raw = s.recv(65536)
    s.close()
    assert status_of(raw) == 413
    assert body_of(raw)["status"] == "error"
    healthy(api)


def test_max_body_boundary(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path, "--max-body", "1k")
    base = {"target_user": "a", "content": ""}
    pad = 1024 - len(json.dumps(base))
    at_cap = json.dumps({"target_user": "a", "content": "x" * pad})
    assert len(at_cap) == 1024
    assert api.send(at_cap).status == 200
    over = json.dumps({"target_user": "a", "content": "x" * (pad + 1)})
    r = api.send(over)
    assert r.status == 413 and r.json["status"] == "error"


def test_chunked_body_over_max_body_is_413(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path, "--max-body", "1k")
    body = json.dumps({"target_user": "a", "content": "x" * 1500}).encode()
    req = post_head(api.port, SEND, chunked=True)
    req += chunk(body[:700]) + chunk(body[700:]) + b"0\r\n\r\n"
    raw = raw_http(api.port, req, read_timeout=3)
    assert status_of(raw) == 413, raw
    assert redis.cli("KEYS", "*").strip() == ""
    # A chunked body under the cap goes through.
    small = json.dumps({"target_user": "a", "content": "y"}).encode()
    req = post_head(api.port, SEND, chunked=True) + chunk(small[:5]) + \
        chunk(small[5:]) + b"0\r\n\r\n"
    assert status_of(raw_http(api.port, req, read_timeout=3)) == 200


def test_endless_chunked_upload_is_cut_off(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path, "--max-body", "4k")
    s = socket.create_connection(("127.0.0.1", api.port), timeout=5)
    s.sendall(post_head(api.port, SEND, chunked=True))
    sent, closed = 0, False
    piece = chunk(b"x" * 65536)
    # The daemon keeps at most --max-body and reads at most as much again
    # before hanging up; 64 MiB (bounded, in case it never does) is far
    # beyond that and beyond what socket buffers absorb.
    while sent < 64 * 1024 * 1024:
        try:
            s.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        sent += len(piece)
    if not closed:
        s.settimeout(3)
        try:
            data = s.recv(65536)
            closed = data == b"" or data.startswith(b"HTTP/1.1 413")
        except ConnectionResetError:
            closed = True
    s.close()
    assert closed and sent < 64 * 1024 * 1024
    healthy(api)


def test_aborted_uploads_leave_the_daemon_healthy(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path)
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", api.port), timeout=3)
        # Expect: 100-continue makes the daemon confirm it has taken the
        # headers before the (partial) body goes out.
        head = post_head(api.port, SEND, length=1000)
        s.sendall(head[:-2] + b"Expect: 100-continue\r\n\r\n")
        assert s.recv(1024).startswith(b"HTTP/1.1 100")
        s.sendall(b'{"target_user":')
        time.sleep(0.01)
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
        s.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        aborted = metric_value(api.metrics(), "notifyd_api_requests_total",
                               route="send", status="0")
        if aborted == 20:
            break
        time.sleep(0.05)
    # Every aborted request went through the completion callback (which
    # frees its buffer; the daemons fixture fails on any ASan report).
    assert aborted == 20
    healthy(api)
    assert redis.cli("KEYS", "offline:*").strip() == "offline:{after}"


# ---- slow clients and connection limits ----------------------------------

def test_idle_connection_is_closed_by_the_timeout(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path, "--connection-timeout", "1s")
    s = socket.create_connection(("127.0.0.1", api.port), timeout=5)
    s.sendall(b"POST /api/notifications/send HTTP/1.1\r\nHost: x\r\n")
    start = time.monotonic()
    data = s.recv(1024)  # blocks until the daemon closes
    elapsed = time.monotonic() - start
    s.close()
    assert data == b""
    assert 0.5 < elapsed < 4
    healthy(api)


def test_dripped_body_is_cut_off(redis, daemons, tmp_path):
    # The idle timeout restarts with every byte; the daemon also bounds
    # the whole request by --request-timeout.
    api = start_api(daemons, redis, tmp_path, "--request-timeout", "1s")
    s = socket.create_connection(("127.0.0.1", api.port), timeout=5)
    s.sendall(post_head(api.port, SEND, length=100))
    start, closed = time.monotonic(), False
    while time.monotonic() - start < 5:
        try:
            s.sendall(b" ")
            s.settimeout(0.3)
            if s.recv(1024) == b"":
                closed = True
                break
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
    elapsed = time.monotonic() - start
    s.close()
    assert closed and elapsed < 4
    healthy(api)


def test_connection_limit(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path, "--max-connections", "2",
                    "--threads", "1")
    held = [socket.create_connection(("127.0.0.1", api.port)) for _ in
            range(2)]
    time.sleep(0.2)
    # At the limit the daemon takes no more connections: the third one
    # waits in the listen backlog, unserved.
    extra = socket.create_connection(("127.0.0.1", api.port), timeout=0.5)
    extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        data = extra.recv(1024)
    except socket.timeout:
        data = None
    assert data is None
    for s in held:
        s.close()
    extra.settimeout(3)
    assert extra.recv(1024).startswith(b"HTTP/1.1 200")
    extra.close()


# ---- keys and rate limits -----------------------------------------------

def test_sighup_reloads_the_key_file(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path)
    kf = tmp_path / "api-keys"
    new_key = "svc-c-" + "9" * 20
    assert api.send({"target_user": "a", "content": "x"}, key=new_key).status == 401
    write_keys(kf, [("svc-a", KEY_A), ("svc-c", new_key)])
    api.daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while api.send({"target_user": "a", "content": "x"}, key=new_key).status != 200:
        assert time.monotonic() < deadline, "new key never accepted"
        time.sleep(0.05)
    assert api.send({"target_user": "a", "content": "x"}, key=KEY_B).status == 401
    assert api.send({"target_user": "a", "content": "x"}, key=KEY_A).status == 200
    # A broken file on reload keeps the keys in force.
    kf.write_text("this line is not a key pair at all\n")
    api.daemon.signal(signal.SIGHUP)
    time.sleep(0.3)
    assert api.send({"target_user": "a", "content": "x"}, key=new_key).status == 200
    assert api.daemon.stop() == 0
    assert "key reload failed" in api.daemon.stderr()


def test_rate_limit_per_key_429_with_retry_after(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path, "--rate-limit", "2/s",
                    "--rate-burst", "3")
    codes = [api.send({"target_user": "a", "content": "x"}).status for _ in range(3)]
    assert codes == [200, 200, 200]
    r = api.send({"target_user": "a", "content": "x"})
    assert r.status == 429
    assert r.json["status"] == "error"
    assert int(r.header("Retry-After")) >= 1
    # Another key has its own bucket.
    assert api.send({"target_user": "a", "content": "x"}, key=KEY_B).status == 200
    # Tokens come back at the configured rate.
    deadline = time.monotonic() + 3
    while api.send({"target_user": "a", "content": "x"}).status != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert redis.cli("HGET", "offline:{a}", "seq").strip() == "5"


def test_insecure_no_auth_warns_and_serves(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path, "--insecure-no-auth")
    assert api.send({"target_user": "a", "content": "x"}, key=None).status == 200
    assert api.daemon.stop() == 0
    assert "insecure-no-auth" in api.daemon.stderr()


def test_env_fallbacks(redis, daemons, tmp_path):
    port = free_port()
    kf = write_keys(tmp_path / "k", [("svc-a", KEY_A)])
    from apiutil import Api
    d = daemons("notifyd-api", env={
        "NOTIFYD_API_LISTEN": f"127.0.0.1:{port}",
        "NOTIFYD_REDIS_URL": redis.url, "NOTIFYD_REDIS_PREFIX": "e:",
        "NOTIFYD_API_KEYS_FILE": kf})
    api = Api(d, port)
    r = api.send({"target_user": "a", "content": "x"})
    assert r.status == 200
    assert redis.cli("EXISTS", "e:offline:{a}").strip() == "1"


def refuse(tmp_path, *args, env=None):
    p = run("notifyd-api", "--listen", f"127.0.0.1:{free_port()}", *args,
            env=env, timeout=10)
    return p.returncode, p.stderr.decode()


def test_refuses_to_start_without_credentials(tmp_path):
    code, err = refuse(tmp_path)
    assert code == 78 and "--api-keys-file" in err
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n\n")
    code, err = refuse(tmp_path, "--api-keys-file", str(empty))
    assert code == 78 and "no keys" in err
    short = write_keys(tmp_path / "short", [("a", "tooshort")])
    assert refuse(tmp_path, "--api-keys-file", short)[0] == 78
    dup = write_keys(tmp_path / "dup", [("a", KEY_A), ("a", KEY_B)])
    assert refuse(tmp_path, "--api-keys-file", dup)[0] == 78
    assert refuse(tmp_path, "--api-keys-file", str(tmp_path / "missing"))[0] \
        == 78


def test_bad_flags_and_values(tmp_path):
    kf = write_keys(tmp_path / "k", [("svc-a", KEY_A)])
    assert refuse(tmp_path, "--no-such-flag")[0] == 64
    assert refuse(tmp_path, "--api-keys-file", kf, "--insecure-no-auth")[0] \
        == 64
    secret = tmp_path / "secret"
    secret.write_text("a-secret-of-some-length-0123456789\n")
    assert refuse(tmp_path, "--jwt-secret-file", str(secret),
                  "--insecure-no-auth")[0] == 64
    assert refuse(tmp_path, "--jwt-secret-file", str(secret),
                  "--jwt-public-key", str(secret))[0] == 64
    for args in [("--jwt-secret-file", str(tmp_path / "missing")),
                 ("--jwt-secret-file", str(secret), "--jwt-alg", "none"),
                 ("--jwt-public-key", str(secret)),
                 ("--jwt-secret-file", str(secret), "--jwt-scope", "a b")]:
        code, err = refuse(tmp_path, *args)
        assert code == 78, (args, err)
    for flag, value in [("--max-body", "lots"), ("--rate-limit", "x/s"),
                        ("--threads", "0"), ("--offline-ttl", "-1"),
                        ("--offline-max", "0"), ("--offline-max", "1000001"),
                        ("--redis", "http://x"), ("--redis-prefix", "a b"),
                        ("--connection-timeout", "0"), ("--log-level", "x"),
                        ("--max-connections", "1")]:
        code, err = refuse(tmp_path, "--api-keys-file", kf, flag, value)
        assert code == 78, (flag, err)
        assert err.count("\n") == 1, err


def test_help_and_version():
    p = run("notifyd-api", "--help")
    assert p.returncode == 0
    out = p.stdout.decode()
    for flag in ["--listen", "--redis", "--redis-prefix", "--api-keys-file",
                 "--insecure-no-auth", "--max-body", "--max-content",
                 "--max-message", "--rate-limit", "--rate-burst", "--threads",
                 "--max-connections", "--connection-timeout",
                 "--redis-timeout", "--ready-fd", "--log-level",
                 "--offline-ttl", "--offline-max", "--jwt-secret-file",
                 "--jwt-public-key",
                 "--jwt-alg", "--jwt-scope", "--jwt-issuer", "--jwt-audience",
                 "--jwt-leeway"]:
        assert flag in out, flag
    p = run("notifyd-api", "--version")
    assert p.returncode == 0 and p.stdout.decode().startswith("notifyd-api ")


def test_help_matches_the_man_page_synopsis():
    import re
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    with open(os.path.join(root, "man", "notifyd-api.8")) as f:
        page = f.read()
    synopsis = page.split(".Sh SYNOPSIS")[1].split(".Sh ")[0]
    options = page.split(".Sh OPTIONS")[1].split(".Sh ")[0]
    in_synopsis = set(re.findall(r"Fl Fl ([a-z-]+)", synopsis))
    in_options = set(re.findall(r"^\.It Fl Fl ([a-z-]+)", options, re.M))
    in_help = set(re.findall(r"--([a-z-]+)", run("notifyd-api", "--help")
                             .stdout.decode()))
    assert in_help == in_synopsis == in_options


# ---- Redis trouble ------------------------------------------------------

def test_redis_down_is_503_fast_then_recovers(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path)
    healthy(api)
    redis.stop()
    for path in [SEND, "/api/notifications/online-count", "/healthz"]:
        if path == SEND:
            r = api.send({"target_user": "a", "content": "lost"})
        else:
            r = api.get(path)
        assert r.status == 503, (path, r.body)
        assert r.json["status"] == "error"
        assert r.elapsed < 1.0
    redis.start()
    deadline = time.monotonic() + 5
    while api.send({"target_user": "a", "content": "back"}).status != 200:
        assert time.monotonic() < deadline, "no recovery"
        time.sleep(0.05)
    assert api.get("/healthz", key=None).status == 200
    assert metric_value(api.metrics(), "notifyd_api_redis_errors_total") >= 1


def test_starts_with_redis_down(tmp_path, daemons):
    from conftest import Redis
    r = Redis(tmp_path)
    api = start_api(daemons, r, tmp_path)
    res = api.send({"target_user": "a", "content": "x"})
    assert res.status == 503 and res.elapsed < 1.0
    r.start()
    try:
        deadline = time.monotonic() + 5
        while api.send({"target_user": "a", "content": "x"}).status != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        r.stop()


def test_stalled_redis_is_503_within_redis_timeout(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path, "--redis-timeout", "300ms")
    healthy(api)
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        r = api.send({"target_user": "a", "content": "x"})
        assert r.status == 503 and r.elapsed < 1.5, (r.status, r.elapsed)
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 5
    while api.send({"target_user": "a", "content": "x"}).status != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_stalled_redis_holds_up_only_its_own_worker(redis, daemons,
                                                   tmp_path):
    import threading
    api = start_api(daemons, redis, tmp_path, "--redis-timeout", "3s",
                    "--threads", "2")
    healthy(api)
    redis.proc.send_signal(signal.SIGSTOP)
    stuck = {}
    try:
        t = threading.Thread(target=lambda: stuck.update(
            r=api.send({"target_user": "a", "content": "stuck"})))
        t.start()
        time.sleep(0.3)
        # That worker is blocked on Redis; the other one still serves.
        r = api.get("/metrics", key=None, timeout=2)
        assert r.status == 200 and r.elapsed < 1.0, r.elapsed
        r = api.send({"target_user": "a", "content": "x"}, key=None)
        assert r.status == 401 and r.elapsed < 1.0
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    t.join(10)
    assert stuck["r"].status in (200, 503)


def test_redis_oom_is_503_and_nothing_published(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path)
    sub = Subscriber(redis.port, "notifications")
    redis.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
    redis.cli("CONFIG", "SET", "maxmemory", "1")
    r = api.send({"target_user": "a", "content": "x"})
    assert r.status == 503, r.body
    assert "OOM" in r.json["error"]
    r = api.send({"target_users": ["a", "b"], "content": "x"})
    assert r.status == 503
    sub.nothing_within(0.3)
    redis.cli("CONFIG", "SET", "maxmemory", "0")
    assert redis.cli("KEYS", "offline:*").strip() == ""
    healthy(api)


# ---- shutdown -----------------------------------------------------------

def test_sigterm_drains_in_flight_request_and_exits_0(redis, daemons,
                                                      tmp_path):
    api = start_api(daemons, redis, tmp_path)
    body = json.dumps({"target_user": "drain", "content": "last"}).encode()
    s = socket.create_connection(("127.0.0.1", api.port), timeout=5)
    s.sendall(post_head(api.port, SEND, length=len(body)) + body[:10])
    time.sleep(0.2)
    api.daemon.signal(signal.SIGTERM)
    time.sleep(0.3)
    # No longer accepting, still finishing what it started.
    try:
        socket.create_connection(("127.0.0.1", api.port), timeout=1).close()
        accepting = True
    except OSError:
        accepting = False
    assert not accepting
    assert api.daemon.proc.poll() is None
    s.sendall(body[10:])
    raw = b""
    while b"\r\n\r\n" not in raw or not raw.endswith(b"}"):
        chunk_ = s.recv(65536)
        if not chunk_:
            break
        raw += chunk_
    s.close()
    assert status_of(raw) == 200
    assert body_of(raw)["id"]
    assert api.daemon.wait(timeout=5) == 0
    assert redis.cli("HGET", "offline:{drain}", "seq").strip() == "1"


def test_sigterm_when_idle_exits_0(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path)
    idle = socket.create_connection(("127.0.0.1", api.port))
    start = time.monotonic()
    api.daemon.signal(signal.SIGTERM)
    assert api.daemon.wait(timeout=5) == 0
    assert time.monotonic() - start < 2
    idle.close()
