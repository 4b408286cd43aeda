"""notifyd-ws operations: its option table (--help, exit codes), --listen
:PORT, --issue-token, /livez and /readyz, the process metrics, CORS on
the client module, the connect and disconnect log lines, and the client
address behind a trusted proxy.

Every case runs the real daemon against a private redis-server; clients
are python3-websockets, curl, notify-send and PyJWT.
"""
import asyncio
import json
import re
import socket
import subprocess
import time

import jwt  # python3-jwt
import pytest

from conftest import free_port, run
from wsproto import SECRET, arun, start_ws
from wsutil import http_get, metric, recv_json, wait_for, ws_connect


def one_line(stderr):
    lines = [ln for ln in stderr.decode(errors="replace").splitlines()
             if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def curl_head(port, path, *headers):
    """Status line and headers of a GET by curl, as a dict (lower-case)."""
    cmd = ["curl", "-sS", "-o", "/dev/null", "-D", "-", "--max-time", "5"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, check=True, timeout=10)
    lines = out.stdout.decode().split("\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            fields[k.strip().lower()] = v.strip()
    return status, fields


# --- the option table ---------------------------------------------------------

# (flag, variable, default as --help shows it) of flags that existed before
# the table, and the new ones.
FLAGS = [
    ("listen", "NOTIFYD_WS_LISTEN", "127.0.0.1:8080"),
    ("redis", "NOTIFYD_REDIS_URL", "redis://127.0.0.1:6379"),
    ("redis-prefix", "NOTIFYD_REDIS_PREFIX", None),
    ("redis-timeout", "NOTIFYD_REDIS_TIMEOUT", "5s"),
    ("jwt-alg", "NOTIFYD_JWT_ALG", "HS256"),
    ("jwt-secret-file", "NOTIFYD_JWT_SECRET_FILE", None),
    ("jwt-public-key", "NOTIFYD_JWT_PUBLIC_KEY", None),
    ("jwt-issuer", "NOTIFYD_JWT_ISSUER", None),
    ("jwt-audience", "NOTIFYD_JWT_AUDIENCE", None),
    ("jwt-leeway", "NOTIFYD_JWT_LEEWAY", "30s"),
    ("require-exp", "NOTIFYD_JWT_REQUIRE_EXP", "yes"),
    ("max-token-age", "NOTIFYD_JWT_MAX_TOKEN_AGE", "0"),
    ("allowed-origin", "NOTIFYD_WS_ALLOWED_ORIGIN", None),
    ("trusted-proxy", "NOTIFYD_TRUSTED_PROXY", None),
    ("reuseport", "NOTIFYD_WS_REUSEPORT", None),
    ("demo", "NOTIFYD_WS_DEMO", None),
    ("instance-id", "NOTIFYD_WS_INSTANCE_ID", None),
    ("log-level", "NOTIFYD_LOG_LEVEL", "info"),
    ("max-message", "NOTIFYD_WS_MAX_MESSAGE", "64k"),
    ("send-queue-max", "NOTIFYD_WS_SEND_QUEUE_MAX", "1M"),
    ("max-queued-bytes", "NOTIFYD_WS_MAX_QUEUED_BYTES", "256M"),
    ("write-timeout", "NOTIFYD_WS_WRITE_TIMEOUT", "30s"),
    ("max-conns-per-user", "NOTIFYD_WS_MAX_CONNS_PER_USER", "32"),
    ("private-prefix", "NOTIFYD_WS_PRIVATE_PREFIX", "private-"),
    ("max-channels", "NOTIFYD_WS_MAX_CHANNELS", "64"),
    ("ping-interval", "NOTIFYD_WS_PING_INTERVAL", "25s"),
    ("ping-timeout", "NOTIFYD_WS_PING_TIMEOUT", "20s"),
    ("handshake-timeout", "NOTIFYD_WS_HANDSHAKE_TIMEOUT", "10s"),
    ("shutdown-timeout", "NOTIFYD_WS_SHUTDOWN_TIMEOUT", "5s"),
    ("ttl", "NOTIFYD_WS_TOKEN_TTL", "1h"),
    ("ready-fd", None, None),
    ("issue-token", None, None),
]


def help_entries():
    """{flag: text of its --help entry}, entries joined across lines."""
    p = run("notifyd-ws", "--help")
    assert p.returncode == 0
    entries, cur = {}, None
    for ln in p.stdout.decode().splitlines():
        m = re.match(r"(?:  -\w, |      )--([a-z-]+)", ln)
        if m:
            cur = m.group(1)
            entries[cur] = ln
        elif cur and ln.startswith(" " * 20):
            entries[cur] += " " + ln.strip()
        else:
            cur = None
    return {k: re.sub(r"\s+", " ", v) for k, v in entries.items()}


def test_help_shows_every_flag_with_its_default_and_variable():
    entries = help_entries()
    for flag, env, default in FLAGS:
        assert flag in entries, flag
        if env:
            assert f"[env: {env}]" in entries[flag], entries[flag]
        if default:
            assert f"(default: {default})" in entries[flag], entries[flag]
    assert set(entries) == {f for f, _, _ in FLAGS} | {"help", "version"}


def test_bad_value_from_the_environment_exits_78_naming_the_variable(keys):
    p = run("notifyd-ws", "--jwt-secret-file", keys.secret_file,
            env={"NOTIFYD_WS_PING_INTERVAL": "soon"})
    assert p.returncode == 78
    assert "NOTIFYD_WS_PING_INTERVAL='soon'" in one_line(p.stderr)


def test_bad_trusted_proxy_list_exits_78(keys):
    p = run("notifyd-ws", "--jwt-secret-file", keys.secret_file,
            "--trusted-proxy", "10.0.0.0/8,not-an-address")
    assert p.returncode == 78
    assert "--trusted-proxy" in one_line(p.stderr)


# --- --listen :PORT -----------------------------------------------------------

def test_listen_colon_port_listens_on_every_ipv4_interface(redis, daemons,
                                                           keys):
    port = free_port()
    d = daemons("notifyd-ws", "--listen", f":{port}", "--redis", redis.url,
                "--jwt-secret-file", keys.secret_file)
    # 127.0.0.2 answers only when the socket is bound to 0.0.0.0.
    with socket.create_connection(("127.0.0.2", port), timeout=2) as s:
        s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.1 200")
    d.stop()
    assert f"listening on 0.0.0.0:{port}" in d.stderr()


# --- --issue-token -------------------------------------------------------------

def issue(*args, env=None):
    return run("notifyd-ws", *args, env=env, timeout=10)


def decode(token, **kw):
    return jwt.decode(token, SECRET, algorithms=["HS256"],
                      options={"verify_aud": False}, **kw)


def test_issued_token_is_accepted_by_a_daemon_with_the_same_secret(
        redis, daemons, keys):
    """The form bin/notifyd-run uses; keys.secret_file ends in a newline,
    which must be left out of the key on both sides."""
    p = issue("--jwt-secret-file", keys.secret_file, "--issue-token",
              "alice", "--ttl", "1h")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert out.endswith("\n") and out.count("\n") == 1, out
    token = out.strip()
    assert p.stderr == b""
    _, port = start_ws(daemons, redis, keys)

    async def go():
        async with ws_connect(port, token) as c:
            await asyncio.sleep(0.1)
            sent = run("notify-send", "--redis", redis.url, "-u", "alice",
                       "minted by notifyd-ws")
            assert sent.returncode == 0, sent.stderr
            got = await recv_json(c)
            assert got["content"] == "minted by notifyd-ws"
            assert got["target_user"] == "alice"
    arun(go())


def test_issued_token_claims_exp_is_iat_plus_ttl(keys):
    before = int(time.time())
    p = issue("--jwt-secret-file", keys.secret_file, "--issue-token",
              "bob@example.com", "--ttl", "90s", "--jwt-issuer", "me",
              "--jwt-audience", "notifyd")
    assert p.returncode == 0, p.stderr
    c = decode(p.stdout.decode().strip(), audience="notifyd", issuer="me")
    assert c["sub"] == "bob@example.com"
    assert before <= c["iat"] <= int(time.time())
    assert c["exp"] - c["iat"] == 90
    assert c["iss"] == "me" and c["aud"] == "notifyd"
    # Default one hour; the variable of --ttl; the flag wins over it.
    c = decode(issue("--jwt-secret-file", keys.secret_file, "--issue-token",
                     "bob").stdout.decode().strip())
    assert c["exp"] - c["iat"] == 3600 and "iss" not in c and "aud" not in c
    env = {"NOTIFYD_WS_TOKEN_TTL": "2m",
           "NOTIFYD_JWT_SECRET_FILE": keys.secret_file}
    c = decode(issue("--issue-token", "bob", env=env).stdout.decode().strip())
    assert c["exp"] - c["iat"] == 120
    c = decode(issue("--issue-token", "bob", "--ttl", "5s",
                     env=env).stdout.decode().strip())
    assert c["exp"] - c["iat"] == 5


def test_issue_token_never_touches_redis(keys):
    """Nothing listens on that port: minting still works, at once."""
    t0 = time.monotonic()
    p = issue("--redis", f"redis://127.0.0.1:{free_port()}",
              "--jwt-secret-file", keys.secret_file, "--issue-token", "carol")
    assert p.returncode == 0, p.stderr
    assert time.monotonic() - t0 < 3
    assert decode(p.stdout.decode().strip())["sub"] == "carol"


def test_issue_token_refuses_rs256_with_the_reason(keys):
    p = issue("--jwt-alg", "RS256", "--jwt-public-key", keys.rsa()[1],
              "--issue-token", "alice")
    assert p.returncode == 78
    assert p.stdout == b""
    line = one_line(p.stderr)
    assert "RS256" in line and "private key" in line, line


def test_issue_token_with_a_missing_key_file_exits_78(keys, tmp_path):
    missing = str(tmp_path / "no-such-secret")
    p = issue("--jwt-secret-file", missing, "--issue-token", "alice")
    assert p.returncode == 78 and p.stdout == b""
    assert missing in one_line(p.stderr)
    # No key named at all: the line says which flag to give.
    p = issue("--issue-token", "alice")
    assert p.returncode == 78
    assert "--jwt-secret-file" in one_line(p.stderr)


def test_issue_token_refuses_a_bad_user_id(keys):
    p = issue("--jwt-secret-file", keys.secret_file, "--issue-token",
              "not a user")
    assert p.returncode == 78 and p.stdout == b""
    assert "--issue-token" in one_line(p.stderr)


# --- /livez, /readyz, /healthz -------------------------------------------------

def status_of(port, path):
    try:
        return http_get(port, path, timeout=2)
    except OSError:
        return (None, "")


def test_livez_stays_up_while_readyz_follows_redis(redis, daemons, keys):
    _, port = start_ws(daemons, redis, keys, "--redis-timeout", "500ms")
    for path in ("/livez", "/readyz", "/healthz"):
        assert http_get(port, path) == (200, '{"status":"ok"}'), path
    redis.stop()
    wait_for(lambda: status_of(port, "/readyz")[0] == 503, 5, "readyz 503")
    status, body = http_get(port, "/readyz")
    b = json.loads(body)
    assert b["status"] == "error"
    assert b["redis_subscriber"] == "down" and b["redis_commands"] == "down"
    assert http_get(port, "/healthz")[0] == 503
    assert http_get(port, "/livez") == (200, '{"status":"ok"}')
    redis.start()
    wait_for(lambda: status_of(port, "/readyz")[0] == 200, 8, "readyz 200")
    assert http_get(port, "/healthz")[0] == 200


# --- process metrics -----------------------------------------------------------

def test_metrics_include_process_series_and_build_info(redis, daemons, keys):
    _, port = start_ws(daemons, redis, keys)
    _, body = http_get(port, "/metrics")
    for name in ("process_cpu_seconds_total", "process_start_time_seconds",
                 "process_resident_memory_bytes",
                 "process_virtual_memory_bytes", "process_open_fds",
                 "process_max_fds"):
        assert re.search(rf"^# TYPE {name} ", body, re.M), name
    assert re.search(r'^notifyd_build_info\{program="notifyd-ws",'
                     r'version="[^"]+"\} 1$', body, re.M), body
    assert metric(port, "process_resident_memory_bytes") > 0
    assert abs(metric(port, "process_start_time_seconds") - time.time()) < 60
    before = metric(port, "process_open_fds")
    assert before > 0

    async def go():
        conns = [await ws_connect(port, jwt.encode(
            {"sub": f"u{i}", "exp": int(time.time()) + 60}, SECRET,
            algorithm="HS256")) for i in range(20)]
        try:
            await asyncio.sleep(0.1)
            return metric(port, "process_open_fds")
        finally:
            for c in conns:
                await c.close()
    during = arun(go())
    assert during >= before + 20, (before, during)


# --- CORS on the client module -------------------------------------------------

@pytest.mark.parametrize("path", ["/notify-client.js", "/notify-client.d.ts"])
def test_client_module_cors_without_an_origin_list(redis, daemons, keys, path):
    _, port = start_ws(daemons, redis, keys)
    status, h = curl_head(port, path, "Origin: https://app.example")
    assert status == 200
    assert h.get("access-control-allow-origin") == "*", h


@pytest.mark.parametrize("path", ["/notify-client.js", "/notify-client.d.ts"])
def test_client_module_cors_echoes_a_listed_origin(redis, daemons, keys, path):
    _, port = start_ws(daemons, redis, keys, "--allowed-origin",
                       "https://other.example, https://app.example")
    status, h = curl_head(port, path, "Origin: https://app.example")
    assert status == 200
    assert h.get("access-control-allow-origin") == "https://app.example", h
    assert "origin" in h.get("vary", "").lower(), h


def test_client_module_cors_absent_for_an_origin_not_listed(redis, daemons,
                                                            keys):
    _, port = start_ws(daemons, redis, keys, "--allowed-origin",
                       "https://app.example")
    status, h = curl_head(port, "/notify-client.js",
                          "Origin: https://evil.example")
    assert status == 200
    assert "access-control-allow-origin" not in h, h
    status, h = curl_head(port, "/notify-client.js")
    assert "access-control-allow-origin" not in h, h


# --- connect and disconnect log lines ------------------------------------------

def token_for(user):
    return jwt.encode({"sub": user, "exp": int(time.time()) + 60}, SECRET,
                      algorithm="HS256")


async def connect_and_close(port, token, **kw):
    async with ws_connect(port, token, **kw) as c:
        await c.send(json.dumps({"type": "ping"}))
        await recv_json(c)
        await asyncio.sleep(0.2)


def log_line(stderr, what):
    lines = [ln for ln in stderr.splitlines() if what in ln]
    assert len(lines) == 1, (what, stderr)
    return lines[0]


def test_connect_and_disconnect_are_logged_without_the_token(redis, daemons,
                                                            keys):
    d, port = start_ws(daemons, redis, keys)
    token = token_for("alice")
    arun(connect_and_close(port, token))
    time.sleep(0.3)
    d.stop()
    err = d.stderr()
    on = log_line(err, "user alice connected")
    assert " info: " in on and re.search(r"\(127\.0\.0\.1:\d+\)", on), on
    off = log_line(err, "user alice disconnected")
    m = re.search(r"code (\d+), (\d+\.\d)s", off)
    assert m and m.group(1) == "1000" and 0.1 <= float(m.group(2)) < 5, off
    assert token not in err and token.split(".")[2] not in err


def test_log_level_warn_quiets_the_connection_lines(redis, daemons, keys):
    d, port = start_ws(daemons, redis, keys, "--log-level", "warn")
    arun(connect_and_close(port, token_for("alice")))
    time.sleep(0.3)
    d.stop()
    assert "connected" not in d.stderr(), d.stderr()


# --- the client behind a trusted proxy -----------------------------------------

def test_trusted_proxy_names_the_client_from_x_forwarded_for(redis, daemons,
                                                            keys):
    d, port = start_ws(daemons, redis, keys, "--trusted-proxy", "127.0.0.1")
    hdr = {"X-Forwarded-For": "203.0.113.7"}
    arun(connect_and_close(port, token_for("alice"), extra_headers=hdr))
    # A chain: the rightmost address that is not a trusted proxy.
    hdr = {"X-Forwarded-For": "198.51.100.9, 203.0.113.8"}
    arun(connect_and_close(port, token_for("bob"), extra_headers=hdr))
    time.sleep(0.3)
    d.stop()
    err = d.stderr()
    assert "(203.0.113.7): user alice connected" in err, err
    assert "(203.0.113.7): user alice disconnected" in err, err
    assert "(203.0.113.8): user bob connected" in err, err


def test_x_forwarded_for_is_ignored_without_a_trusted_proxy(redis, daemons,
                                                           keys):
    """Any client can send the header: without --trusted-proxy, or from a
    peer not in the list, the TCP peer is what is logged."""
    d, port = start_ws(daemons, redis, keys)
    hdr = {"X-Forwarded-For": "203.0.113.7"}
    arun(connect_and_close(port, token_for("alice"), extra_headers=hdr))
    oport = free_port()
    other = daemons("notifyd-ws", "--listen", f"127.0.0.1:{oport}",
                    "--redis", redis.url, "--jwt-secret-file",
                    keys.secret_file, "--trusted-proxy", "10.0.0.0/8")
    arun(connect_and_close(oport, token_for("bob"), extra_headers=hdr))
    time.sleep(0.3)
    d.stop()
    other.stop()
    assert re.search(r"\(127\.0\.0\.1:\d+\): user alice connected",
                     d.stderr()), d.stderr()
    assert re.search(r"\(127\.0\.0\.1:\d+\): user bob connected",
                     other.stderr()), other.stderr()
    assert "203.0.113.7" not in d.stderr() + other.stderr()


def test_trusted_proxy_from_the_environment_in_the_auth_failure_line(
        redis, daemons, keys):
    d, port = start_ws(daemons, redis, keys,
                       env={"NOTIFYD_TRUSTED_PROXY": "127.0.0.0/8, ::1"})

    async def refused():
        async with ws_connect(port, "garbage", extra_headers={
                "X-Forwarded-For": "2001:db8::5"}) as c:
            try:
                await asyncio.wait_for(c.recv(), 3)
            except Exception:
                pass
    arun(refused())
    time.sleep(0.2)
    d.stop()
    assert "(2001:db8::5): authentication failed" in d.stderr(), d.stderr()
