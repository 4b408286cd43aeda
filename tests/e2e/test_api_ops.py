"""notifyd-api as operators meet it: the flag table and its exit codes,
--listen :PORT, liveness and readiness probes, process metrics, the
access log and the client address behind a trusted proxy."""
import http.client
import re
import socket
import time

import pytest

from apiutil import KEY_A, Api, metric_value, start_api, write_keys
from conftest import free_port, run

SEND = "/api/notifications/send"
BROADCAST = "/api/notifications/broadcast"

# One access log line: METHOD PATH STATUS DURATIONms client=ADDR key=NAME
ACCESS = re.compile(r" info: (GET|POST|HEAD|PUT|DELETE) (\S+) (\d+) "
                    r"(\d+\.\d+)ms client=(\S+) key=(\S+)$", re.M)


def access_lines(api):
    """The access log lines of a daemon, once it has stopped."""
    assert api.daemon.stop() == 0
    return ACCESS.findall(api.daemon.stderr())


def start(daemons, redis, *args, env=None):
    """notifyd-api with only the given flags (plus Redis), on a free port."""
    port = free_port()
    d = daemons("notifyd-api", "--listen", f"127.0.0.1:{port}",
                "--redis", redis.url, *args, env=env)
    return Api(d, port)


def refuse(*args, env=None):
    p = run("notifyd-api", *args, env=env, timeout=10)
    assert p.returncode != 0
    err = p.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("notifyd-api: "), err
    return p.returncode, err


# ---- the flag table ------------------------------------------------------

def test_help_names_every_flag_with_its_default_and_variable():
    p = run("notifyd-api", "--help")
    assert p.returncode == 0
    out = p.stdout.decode()
    for flag, default, var in [
            ("--listen", "127.0.0.1:8081", "NOTIFYD_API_LISTEN"),
            ("--redis", "redis://127.0.0.1:6379", "NOTIFYD_REDIS_URL"),
            ("--offline-ttl", "7d", "NOTIFYD_OFFLINE_TTL"),
            ("--offline-max", "1000", "NOTIFYD_OFFLINE_MAX"),
            ("--max-body", "1M", "NOTIFYD_API_MAX_BODY"),
            ("--max-content", "64k", "NOTIFYD_MAX_CONTENT"),
            ("--max-message", "128k", "NOTIFYD_MAX_MESSAGE"),
            ("--threads", "2", "NOTIFYD_API_THREADS"),
            ("--max-connections", "512", "NOTIFYD_API_MAX_CONNECTIONS"),
            ("--connection-timeout", "30s",
             "NOTIFYD_API_CONNECTION_TIMEOUT"),
            ("--redis-timeout", "2s", "NOTIFYD_REDIS_TIMEOUT"),
            ("--request-timeout", "10s", "NOTIFYD_API_REQUEST_TIMEOUT"),
            ("--max-targets", "1000", "NOTIFYD_API_MAX_TARGETS"),
            ("--max-fanout", "16M", "NOTIFYD_API_MAX_FANOUT"),
            ("--jwt-leeway", "30s", "NOTIFYD_API_JWT_LEEWAY"),
            ("--jwt-scope", "notifications:send", "NOTIFYD_API_JWT_SCOPE"),
            ("--trusted-proxy", "none", "NOTIFYD_TRUSTED_PROXY"),
            ("--log-level", "info", "NOTIFYD_LOG_LEVEL")]:
        # The flag's entry runs from its name to the next flag's.
        entry = re.search(r"^\s+" + re.escape(flag) + r" .*?(?=^\s+-)", out,
                          re.M | re.S)
        assert entry, flag
        text = " ".join(entry.group(0).split())
        assert f"(default: {default})" in text, (flag, text)
        assert f"[env: {var}]" in text, (flag, text)


def test_a_bad_flag_value_exits_78_naming_the_flag(tmp_path):
    for flag, value in [("--threads", "0"), ("--offline-ttl", "soon"),
                        ("--trusted-proxy", "10.0.0.0/99"),
                        ("--jwt-alg", "none"), ("--listen", "nowhere")]:
        code, err = refuse("--insecure-no-auth", flag, value)
        assert code == 78, (flag, err)
        assert f"{flag} '{value}'" in err, err


def test_a_bad_environment_value_exits_78_naming_the_variable(tmp_path):
    for var, value in [("NOTIFYD_API_THREADS", "many"),
                       ("NOTIFYD_TRUSTED_PROXY", "proxy.example"),
                       ("NOTIFYD_LOG_LEVEL", "loud"),
                       ("NOTIFYD_API_KEYS_FILE", str(tmp_path / "gone"))]:
        code, err = refuse(env={var: value})
        assert code == 78, (var, err)
        assert f"{var}='{value}'" in err, err


def test_an_unreadable_keys_file_is_named_with_its_flag(tmp_path):
    code, err = refuse("--api-keys-file", str(tmp_path / "gone"))
    assert code == 78 and "--api-keys-file" in err, err


def test_command_lines_that_cannot_be_read_exit_64(tmp_path):
    kf = write_keys(tmp_path / "k", [("svc-a", KEY_A)])
    assert refuse("--no-such-flag")[0] == 64
    assert refuse("--insecure-no-auth", "--threads")[0] == 64
    assert refuse("--insecure-no-auth", "stray")[0] == 64
    code, err = refuse("--jwt-secret-file", kf, "--jwt-public-key", kf)
    assert code == 64 and "exclude" in err


def test_a_clash_with_the_environment_is_a_config_error_78(tmp_path):
    kf = write_keys(tmp_path / "k", [("svc-a", KEY_A)])
    code, err = refuse("--jwt-public-key", kf,
                       env={"NOTIFYD_API_JWT_SECRET_FILE": kf})
    assert code == 78
    assert "NOTIFYD_API_JWT_SECRET_FILE" in err and "--jwt-public-key" in err


def test_listen_colon_port_serves_every_ipv4_interface(redis, daemons):
    port = free_port()
    d = daemons("notifyd-api", "--listen", f":{port}", "--redis", redis.url,
                "--insecure-no-auth")
    # 127.0.0.2 reaches only a socket bound to every interface, not one
    # bound to 127.0.0.1 alone.
    for host in ["127.0.0.1", "127.0.0.2"]:
        c = http.client.HTTPConnection(host, port, timeout=5)
        c.request("GET", "/livez")
        assert c.getresponse().status == 200, host
        c.close()
    assert d.stop() == 0
    assert f"listening on 0.0.0.0:{port}" in d.stderr()


# ---- probes --------------------------------------------------------------

def test_livez_and_readyz_follow_redis(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path)
    for path in ["/livez", "/readyz", "/healthz"]:
        r = api.get(path, key=None)
        assert r.status == 200 and r.json["status"] == "ok", path
    redis.stop()
    # Alive, and without a single attempt to reach Redis.
    for _ in range(5):
        r = api.get("/livez", key=None)
        assert r.status == 200 and r.json == {"status": "ok"}
        assert r.elapsed < 1.0
    assert metric_value(api.metrics(), "notifyd_api_redis_errors_total") == 0
    for path in ["/readyz", "/healthz"]:
        r = api.get(path, key=None)
        assert r.status == 503, path
        assert r.header("Content-Type") == "application/json"
        assert r.json["status"] == "error" and r.json["error"], r.json
        # Callers without credentials learn nothing of the Redis server.
        assert str(redis.port) not in r.body.decode(), r.body
    assert metric_value(api.metrics(), "notifyd_api_redis_errors_total") >= 1
    redis.start()
    deadline = time.monotonic() + 5
    while api.get("/readyz", key=None).status != 200:
        assert time.monotonic() < deadline, "/readyz never recovered"
        time.sleep(0.05)
    assert api.get("/healthz", key=None).status == 200


def test_probes_are_counted_by_route(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path)
    api.get("/livez", key=None)
    api.get("/readyz", key=None)
    deadline = time.monotonic() + 5
    while True:
        text = api.metrics()
        got = [metric_value(text, "notifyd_api_requests_total", route=r,
                            status="200") for r in ("livez", "readyz")]
        if got == [1, 1] or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert got == [1, 1], got


# ---- process metrics -----------------------------------------------------

def test_metrics_carry_process_series_and_build_info(redis, daemons,
                                                     tmp_path):
    before = time.time()
    api = start_api(daemons, redis, tmp_path)
    text = api.metrics()
    assert metric_value(text, "process_open_fds") > 0
    assert metric_value(text, "process_max_fds") >= \
        metric_value(text, "process_open_fds")
    assert metric_value(text, "process_resident_memory_bytes") > 1 << 20
    assert metric_value(text, "process_virtual_memory_bytes") > \
        metric_value(text, "process_resident_memory_bytes")
    assert metric_value(text, "process_cpu_seconds_total") >= 0
    assert "process_cpu_seconds_total " in text
    start_time = metric_value(text, "process_start_time_seconds")
    assert before - 5 < start_time < time.time() + 1, (before, start_time)
    assert "# TYPE process_open_fds gauge" in text
    version = run("notifyd-api", "--version").stdout.decode().split()[1]
    assert metric_value(text, "notifyd_build_info", program="notifyd-api",
                        version=version) == 1


# ---- the access log ------------------------------------------------------

def test_one_log_line_per_request_without_secrets(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path)
    assert api.send({"target_user": "a", "content": "x"}).status == 200
    assert api.post(BROADCAST + "?notification_type=t&content=query-secret",
                    key=KEY_A).status == 200
    wrong = "wrong-key-" + "z" * 20
    assert api.send({"target_user": "a", "content": "x"}, key=wrong).status == 401
    assert api.get("/nowhere", key=None).status == 404
    assert api.get("/a%1B[31mred", key=None).status == 404
    assert api.get("/" + "x" * 2000, key=None).status == 404
    lines = access_lines(api)
    err = api.daemon.stderr()
    # Requests finish on two worker threads: compare without order.
    assert sorted((m, p, st, client, key) for m, p, st, _ms, client, key
                  in lines) == sorted([
                      ("POST", SEND, "200", "127.0.0.1", "svc-a"),
                      ("POST", BROADCAST, "200", "127.0.0.1", "svc-a"),
                      ("POST", SEND, "401", "127.0.0.1", "-"),
                      ("GET", "/nowhere", "404", "127.0.0.1", "-"),
                      # Control bytes of a path are written encoded.
                      ("GET", "/a%1B[31mred", "404", "127.0.0.1", "-"),
                      # A long path is cut, visibly.
                      ("GET", "/" + "x" * 255 + "...", "404", "127.0.0.1",
                       "-")])
    assert all(float(ms) < 5000 for _m, _p, _s, ms, _c, _k in lines)
    assert "\x1b" not in err
    for secret in [KEY_A, wrong, "query-secret", "Bearer"]:
        assert secret not in err, secret


def test_log_level_warn_quiets_the_request_lines(redis, daemons, tmp_path):
    counts = {}
    for level in ["info", "warn"]:
        api = start_api(daemons, redis, tmp_path, "--log-level", level)
        assert api.send({"target_user": "a", "content": "x"}).status == 200
        assert api.get("/livez", key=None).status == 200
        counts[level] = len(access_lines(api))
        if level == "warn":
            assert " info: " not in api.daemon.stderr()
    assert counts == {"info": 2, "warn": 0}


# ---- trusted proxies -----------------------------------------------------

def xff_client(daemons, redis, tmp_path, *flags, xff=("203.0.113.7",),
               env=None):
    """The client address logged for one request with these XFF headers."""
    api = start(daemons, redis, "--insecure-no-auth", *flags, env=env)
    c = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
    c.putrequest("GET", "/livez")
    for value in xff:
        c.putheader("X-Forwarded-For", value)
    c.endheaders()
    assert c.getresponse().status == 200
    c.close()
    lines = access_lines(api)
    assert len(lines) == 1, lines
    return lines[0][4]


def test_a_trusted_proxy_names_the_client(redis, daemons, tmp_path):
    assert xff_client(daemons, redis, tmp_path,
                      "--trusted-proxy", "127.0.0.1") == "203.0.113.7"


def test_without_trusted_proxies_the_header_is_ignored(redis, daemons,
                                                       tmp_path):
    assert xff_client(daemons, redis, tmp_path) == "127.0.0.1"


def test_an_untrusted_peer_cannot_name_a_client(redis, daemons, tmp_path):
    assert xff_client(daemons, redis, tmp_path,
                      "--trusted-proxy", "10.0.0.0/8, ::1") == "127.0.0.1"


def test_the_rightmost_untrusted_address_is_the_client(redis, daemons,
                                                       tmp_path):
    # 198.51.100.1 is what the client claimed; 203.0.113.7 is what the
    # first trusted proxy (10.1.2.3) saw; 10.1.2.3 is the next hop.
    got = xff_client(daemons, redis, tmp_path,
                     env={"NOTIFYD_TRUSTED_PROXY": "127.0.0.0/8,10.0.0.0/8"},
                     xff=("198.51.100.1", "203.0.113.7, 10.1.2.3"))
    assert got == "203.0.113.7"


def test_a_forged_entry_is_never_chosen(redis, daemons, tmp_path):
    got = xff_client(daemons, redis, tmp_path, "--trusted-proxy",
                     "127.0.0.1", xff=("203.0.113.7, evil host",))
    assert got == "127.0.0.1"


def test_ipv6_peer_behind_a_trusted_v6_proxy(redis, daemons, tmp_path):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1")
    port = free_port()
    api = Api(daemons("notifyd-api", "--listen", f"[::1]:{port}",
                      "--redis", redis.url, "--insecure-no-auth",
                      "--trusted-proxy", "::1/128"), port)
    c = http.client.HTTPConnection("::1", port, timeout=5)
    c.request("GET", "/livez", headers={"X-Forwarded-For": "2001:db8::7"})
    assert c.getresponse().status == 200
    c.close()
    lines = access_lines(api)
    assert [line[4] for line in lines] == ["2001:db8::7"]
