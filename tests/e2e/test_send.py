"""notify-send end to end: what lands in Redis, what is published, exit codes.

The other side is redis-cli (keys, TTLs, SUBSCRIBE, INFO) and Python's
json; notify-tail is used only where the two tools are tested together.
"""
import json
import os
import pty
import subprocess
import time

import pytest

from conftest import bin_path, free_port, run
from cliutil import Subscriber, info_stat, man_flags, numsub, wait_until

WEEK = 7 * 24 * 3600
CONTENT = "通知 ✓ émoji 🎉"
DATA = {"build": {"id": 42, "steps": [1, "two", {"three": None}]},
        "ok": True, "ratio": 0.5, "名前": "値"}


def send(redis, *args, input=None, env=None):
    return run("notify-send", "--redis", redis.url, *args, input=input,
               env=env)


def one_line_reason(p):
    err = p.stderr.decode()
    assert err.startswith("notify-send: "), err
    assert err.count("\n") == 1, err
    return err


def hgetall(redis, key):
    out = redis.cli("HGETALL", key, raw=True).split("\n")
    return dict(zip(out[0:-1:2], out[1:-1:2]))


def log_key(user, prefix=""):
    """The user's log, as notifyd(7) names it (a Cluster hash tag)."""
    return f"{prefix}offline:{{{user}}}"


def log_entries(redis, user, prefix=""):
    """The messages of a user's log in position order, as stored."""
    h = hgetall(redis, log_key(user, prefix))
    if not h:
        return []
    return [h[f"m:{n}"] for n in range(int(h["first"]), int(h["seq"]) + 1)
            if f"m:{n}" in h]


def test_tail_sees_the_exact_message(redis, daemons):
    tail = daemons("notify-tail", "--redis", redis.url, "--json", "-n", "1")
    p = send(redis, "-u", "alice", "-t", "build", "-c", "ops/ci", "-d",
             json.dumps(DATA), "--json", CONTENT)
    assert p.returncode == 0, p.stderr
    assert tail.wait() == 0
    tail.stderr()
    seen = tail.stdout_text.splitlines()
    assert len(seen) == 1
    sent = p.stdout.decode().strip()
    assert seen[0] == sent
    msg = json.loads(seen[0])
    assert msg["content"] == CONTENT
    assert msg["data"] == DATA
    assert msg["type"] == "build"
    assert msg["channel"] == "ops/ci"
    assert msg["target_user"] == "alice"
    assert set(msg) == {"id", "type", "content", "data", "timestamp",
                        "target_user", "channel", "seq"}
    assert msg["seq"] == 1
    # Non-ASCII goes out as UTF-8, not as \u escapes.
    assert CONTENT.encode() in p.stdout


def test_targeted_message_is_stored_with_a_week_ttl(redis):
    p = send(redis, "-u", "alice", "--json", "hello", "alice")
    assert p.returncode == 0, p.stderr
    msg = json.loads(p.stdout)
    assert msg["content"] == "hello alice"
    assert msg["seq"] == 1
    # --json prints the message exactly as the log holds it.
    assert redis.cli("HGET", log_key("alice"), "m:1", raw=True).strip() == \
        p.stdout.decode().strip()
    assert redis.cli("HGET", log_key("alice"), f"i:{msg['id']}").strip() == "1"
    ttl = int(redis.cli("TTL", log_key("alice")))
    assert WEEK - 60 <= ttl <= WEEK


@pytest.mark.parametrize("how,expect", [
    (("--ttl", "1h"), 3600),
    (("--ttl", "90m"), 5400),
    (("--ttl", "45"), 45),
    (("--ttl", "366d"), 366 * 24 * 3600),
])
def test_ttl_flag_is_honoured(redis, how, expect):
    p = send(redis, "-u", "bob", *how, "x")
    assert p.returncode == 0, p.stderr
    ttl = int(redis.cli("TTL", log_key("bob")))
    assert expect - 30 <= ttl <= expect


def test_ttl_from_environment_and_flag_wins(redis):
    p = send(redis, "-u", "bob", "x", env={"NOTIFYD_OFFLINE_TTL": "2h"})
    assert p.returncode == 0, p.stderr
    assert 7200 - 30 <= int(redis.cli("TTL", log_key("bob"))) <= 7200
    p = send(redis, "-u", "carol", "--ttl", "10m", "x",
             env={"NOTIFYD_OFFLINE_TTL": "2h"})
    assert p.returncode == 0, p.stderr
    assert 600 - 30 <= int(redis.cli("TTL", log_key("carol"))) <= 600


def test_broadcast_is_published_not_stored(redis):
    sub = Subscriber(redis, "notifications")
    try:
        p = send(redis, "-b", "-c", "ops", "--json", "all", "hands")
        assert p.returncode == 0, p.stderr
        payload = sub.message()
    finally:
        sub.close()
    assert payload == p.stdout.strip()
    msg = json.loads(payload)
    assert msg["target_user"] is None
    assert msg["channel"] == "ops"
    assert msg["content"] == "all hands"
    assert msg["data"] == {}
    assert msg["type"] == "info"
    assert redis.cli("DBSIZE").strip() == "0"


def test_content_from_standard_input(redis):
    p = send(redis, "-u", "alice", "--json", input="line one\nline two\n\n")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["content"] == "line one\nline two"


def test_no_message_and_a_terminal_is_a_usage_error(redis):
    master, slave = pty.openpty()
    try:
        p = subprocess.run([bin_path("notify-send"), "--redis", redis.url,
                            "-u", "alice"], stdin=slave, capture_output=True,
                           timeout=10)
    finally:
        os.close(slave)
        os.close(master)
    assert p.returncode == 64
    assert "terminal" in one_line_reason(p)
    assert redis.cli("DBSIZE").strip() == "0"


def start_ws(daemons, redis, tmp_path, instance):
    secret = tmp_path / "jwt.secret"
    secret.write_text("send-e2e-secret-not-for-production\n")
    daemons("notifyd-ws", "--listen", f"127.0.0.1:{free_port()}", "--redis",
            redis.url, "--jwt-secret-file", str(secret), "--instance-id",
            instance)


def test_verbose_counts_subscribed_instances_not_users(redis, daemons,
                                                       tmp_path):
    # PUBLISH answers how many subscribers the channel has: each
    # notifyd-ws instance is one, however many users it holds.
    start_ws(daemons, redis, tmp_path, "ws-1")
    start_ws(daemons, redis, tmp_path, "ws-2")
    wait_until(lambda: numsub(redis, "notifications") == 2, 10,
               "both instances to subscribe")
    p = send(redis, "-v", "-u", "alice", "--json", "hi")
    assert p.returncode == 0, p.stderr
    msg = json.loads(p.stdout)
    assert p.stderr.decode() == (f"notify-send: sent {msg['id']} to alice "
                                 "(seq 1; live on 2 subscribed instances)\n")


def test_verbose_broadcast_and_singular(redis, daemons):
    p = send(redis, "-v", "-b", "--json", "nobody listens")
    assert p.returncode == 0, p.stderr
    msg = json.loads(p.stdout)
    assert p.stderr.decode() == (
        f"notify-send: sent {msg['id']} to everyone (broadcast, not stored; "
        "live on 0 subscribed instances)\n")
    daemons("notify-tail", "--redis", redis.url)
    p = send(redis, "-v", "-b", "-c", "ops", "--json", "one listens")
    assert p.returncode == 0, p.stderr
    msg = json.loads(p.stdout)
    assert p.stderr.decode() == (
        f"notify-send: sent {msg['id']} to channel ops (broadcast, not "
        "stored; live on 1 subscribed instance)\n")


def test_batch_of_10000_uses_one_connection(redis):
    lines = []
    for i in range(10000):
        lines.append(json.dumps({"target_user": f"u{i % 10}",
                                 "notification_type": "bulk",
                                 "content": f"message {i} ✓",
                                 "data": {"n": i}}, ensure_ascii=False))
    before = info_stat(redis, "total_connections_received")
    t0 = time.monotonic()
    p = send(redis, "--batch", "-v", input="\n".join(lines) + "\n")
    elapsed = time.monotonic() - t0
    after = info_stat(redis, "total_connections_received")
    assert p.returncode == 0, p.stderr
    # +1 for notify-send, +1 for the redis-cli that asked the second time.
    assert after - before == 2
    assert "10000 sent, 0 bad lines" in p.stderr.decode()
    for u in range(10):
        assert redis.cli("HMGET", log_key(f"u{u}"), "first", "seq",
                         raw=True).split() == ["1", "1000"]
    # In the order of the lines: positions follow the pipeline.
    contents = [json.loads(v)["content"] for v in log_entries(redis, "u3")]
    assert contents == [f"message {i} ✓" for i in range(3, 10000, 10)]
    print(f"batch of 10000: {elapsed:.2f}s")


def test_batch_reports_bad_lines_and_sends_the_good_ones(redis):
    sub = Subscriber(redis, "notifications")
    lines = [
        '{"target_user":"alice","content":"good 1"}',            # 1
        'not json',                                              # 2
        '',                                                      # 3 blank
        '{"broadcast":true,"content":"good broadcast","type":"news"}',  # 4
        '{"target_user":"bad user","content":"x"}',              # 5
        '{"target_user":"bob","data":[1,2]}',                    # 6
        '[1,2,3]',                                               # 7
        '{"target_user":"bob","content":"good 2","channel":"c"}',  # 8
        '{"target_user":"bob","notification_type":"bad type!"}',  # 9
    ]
    try:
        p = send(redis, "--batch", "--json", input="\n".join(lines) + "\n")
        got = [sub.message() for _ in range(3)]
        extra = sub.message(timeout=0.3)
    finally:
        sub.close()
    assert p.returncode == 65
    err = p.stderr.decode().splitlines()
    assert [e.split(":")[1].strip() for e in err] == \
        ["line 2", "line 5", "line 6", "line 7", "line 9"]
    assert all(e.startswith("notify-send: line ") for e in err)
    assert extra is None
    contents = [json.loads(m)["content"] for m in got]
    assert contents == ["good 1", "good broadcast", "good 2"]
    printed = [json.loads(x) for x in p.stdout.decode().splitlines()]
    assert [m["content"] for m in printed] == contents
    assert printed[1]["target_user"] is None and printed[1]["type"] == "news"
    assert log_entries(redis, "alice") == \
        [json.dumps(printed[0], ensure_ascii=False, separators=(",", ":"))]
    # Targeted messages print as stored, with their position; the
    # broadcast has none.
    assert [m.get("seq") for m in printed] == [1, None, 1]
    assert len(log_entries(redis, "bob")) == 1
    assert redis.cli("DBSIZE").strip() == "2"


def test_batch_quiet_gives_only_a_count(redis):
    p = send(redis, "--batch", "-q",
             input='x\n{"broadcast":true,"content":"ok"}\ny\n')
    assert p.returncode == 65
    assert p.stderr.decode() == "notify-send: 1 sent, 2 bad lines\n"


def test_redis_down_is_exit_69_with_one_line(tmp_path):
    url = f"redis://127.0.0.1:{free_port()}"
    p = run("notify-send", "--redis", url, "-u", "alice", "hi")
    assert p.returncode == 69
    err = one_line_reason(p)
    assert "Connection refused" in err and url[len("redis://"):] in err
    p = run("notify-send", "--redis", url, "--batch",
            input='{"broadcast":true,"content":"x"}\n')
    assert p.returncode == 69
    assert "Connection refused" in one_line_reason(p)


def test_redis_url_from_environment(redis):
    p = run("notify-send", "-u", "alice", "x",
            env={"NOTIFYD_REDIS_URL": redis.url})
    assert p.returncode == 0, p.stderr
    assert len(log_entries(redis, "alice")) == 1


BAD_INPUTS = [
    # (args, stdin, env, exit code, a word of the reason)
    (["-u", "a", "-b", "x"], None, None, 64, "exclude"),
    (["x"], None, None, 64, "-u USER or -b"),
    (["--bogus", "-u", "a", "x"], None, None, 64, "--bogus"),
    (["-u"], None, None, 64, "-u"),
    (["--batch", "-u", "a"], "", None, 64, "--batch"),
    (["-u", "a", "--ttl", "soon", "x"], None, None, 78, "--ttl 'soon'"),
    (["-u", "a", "--ttl", "0", "x"], None, None, 78, "--ttl '0'"),
    (["-u", "a", "--ttl", "367d", "x"], None, None, 78, "--ttl '367d'"),
    (["-u", "a", "--max-content", "lots", "x"], None, None, 78,
     "--max-content 'lots'"),
    (["-q", "-v", "-u", "a", "x"], None, None, 64, "exclude"),
    (["-u", "a", "-d", "[1, 2]", "x"], None, None, 65, "object"),
    (["-u", "a", "-d", "{nope", "x"], None, None, 65, "JSON"),
    (["-u", "a", "-d", '"str"', "x"], None, None, 65, "object"),
    (["-u", "bad user", "x"], None, None, 65, "user"),
    (["-u", "", "x"], None, None, 65, "user"),
    (["-u", "a" * 129, "x"], None, None, 65, "user"),
    (["-u", "a", "-c", "bad channel!", "x"], None, None, 65, "channel"),
    (["-u", "a", "-t", "bad/type", "x"], None, None, 65, "type"),
    (["-u", "a"], b"caf\xc3\x28 bad utf-8", None, 65, "UTF-8"),
    (["-u", "a"], b"nul\x00byte", None, 65, "NUL"),
    (["-u", "a", "--max-content", "10", "0123456789a"], None, None, 65,
     "limit"),
    (["-u", "a"], b"x" * (64 * 1024 + 1), None, 65, "65536"),
    (["-u", "a", "--max-message", "100", "x"], None, None, 65, "message"),
    (["-u", "a", "--redis", "http://localhost", "x"], None, None, 78,
     "redis URL"),
    (["-u", "a", "--redis", "redis://h:99999", "x"], None, None, 78,
     "99999"),
    (["-u", "a", "--redis-prefix", "bad prefix", "x"], None, None, 78,
     "prefix"),
    (["-u", "a", "x"], None, {"NOTIFYD_REDIS_PREFIX": "no spaces"}, 78,
     "prefix"),
    (["-u", "a", "x"], None, {"NOTIFYD_OFFLINE_TTL": "forever"}, 78,
     "NOTIFYD_OFFLINE_TTL='forever'"),
    (["-u", "a", "x"], None, {"NOTIFYD_MAX_CONTENT": "-1"}, 78,
     "NOTIFYD_MAX_CONTENT='-1'"),
    (["-u", "a", "--offline-max", "0", "x"], None, None, 78,
     "--offline-max '0'"),
    (["-u", "a", "--offline-max", "1000001", "x"], None, None, 78,
     "--offline-max '1000001'"),
    (["-u", "a", "x"], None, {"NOTIFYD_OFFLINE_MAX": "many"}, 78,
     "NOTIFYD_OFFLINE_MAX='many'"),
    (["-u", "a", "--redis-timeout", "5ms", "x"], None, None, 78,
     "--redis-timeout '5ms'"),
    (["-u", "a", "x"], None, {"NOTIFYD_REDIS_TIMEOUT": "never"}, 78,
     "NOTIFYD_REDIS_TIMEOUT='never'"),
]


@pytest.mark.parametrize("args,stdin,env,code,word", BAD_INPUTS)
def test_bad_input_exit_code_and_nothing_stored(redis, args, stdin, env,
                                                code, word):
    sub = Subscriber(redis, "notifications")
    try:
        full = list(args)
        if not any(a.startswith("--redis") for a in args) and \
                not (env and "NOTIFYD_REDIS_URL" in env):
            full = ["--redis", redis.url] + full
        p = run("notify-send", *full, input=stdin, env=env)
        published = sub.message(timeout=0.2)
    finally:
        sub.close()
    assert p.returncode == code, p.stderr
    assert word in one_line_reason(p)
    assert p.stdout == b""
    assert published is None
    assert redis.cli("DBSIZE").strip() == "0"


def test_redis_out_of_memory_is_exit_69_and_nothing_published(redis):
    sub = Subscriber(redis, "notifications")
    try:
        redis.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
        redis.cli("CONFIG", "SET", "maxmemory", "1")
        p = send(redis, "-u", "alice", "--json", "x")
        pb = send(redis, "--batch", input='{"target_user":"a","content":"1"}\n'
                  '{"target_user":"b","content":"2"}\n')
        lost = sub.message(timeout=0.3)
        redis.cli("CONFIG", "SET", "maxmemory", "0")
        ok = send(redis, "-u", "alice", "--json", "y")
        after = sub.message()
    finally:
        sub.close()
    assert p.returncode == 69
    assert "OOM" in one_line_reason(p)
    assert p.stdout == b""
    assert pb.returncode == 69
    assert "line 1:" in pb.stderr.decode() and "OOM" in pb.stderr.decode()
    assert lost is None
    # The watcher works: the same send goes through once memory is back.
    assert ok.returncode == 0 and after == ok.stdout.strip()
    assert len(log_entries(redis, "alice")) == 1
    assert redis.cli("EXISTS", log_key("a"), log_key("b")).strip() == "0"


def test_prefix_is_honoured(redis):
    sub = Subscriber(redis, "app1:notifications")
    plain = Subscriber(redis, "notifications")
    try:
        p = send(redis, "--redis-prefix", "app1:", "-u", "alice", "--json", "x")
        q = send(redis, "-u", "bob", "y", env={"NOTIFYD_REDIS_PREFIX": "app2:"})
        got = sub.message()
        stray = plain.message(timeout=0.2)
    finally:
        sub.close()
        plain.close()
    assert p.returncode == 0 and q.returncode == 0
    assert got == p.stdout.strip()
    assert stray is None
    keys = sorted(redis.cli("KEYS", "*", raw=True).split())
    assert keys == ["app1:offline:{alice}", "app2:offline:{bob}"]


def test_help_mentions_every_flag_of_the_man_page():
    p = run("notify-send", "--help")
    assert p.returncode == 0
    text = p.stdout.decode()
    assert text.startswith("usage: notify-send")
    flags = man_flags("notify-send.1")
    assert {"-u", "--user", "-b", "--batch", "--ttl", "--json",
            "--redis-prefix", "--max-message", "--offline-max",
            "--redis-timeout"} <= flags
    missing = [f for f in flags if f not in text]
    assert missing == []
    v = run("notify-send", "--version")
    assert v.returncode == 0 and v.stdout.decode().startswith("notify-send ")


def test_man_page_mentions_libnotify_and_side_by_side():
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "man",
                           "notify-send.1")) as f:
        page = f.read()
    assert "libnotify-bin" in page and "PREFIX=" in page
    lint = subprocess.run(["mandoc", "-Tlint", "-W", "warning",
                           os.path.join(os.path.dirname(__file__), "..", "..",
                                        "man", "notify-send.1")],
                          capture_output=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_unix_socket_password_and_db_urls(tmp_path):
    from conftest import Redis
    sock = str(tmp_path / "redis.sock")
    r = Redis(tmp_path).start("--unixsocket", sock, "--unixsocketperm", "700")
    try:
        p = run("notify-send", "--redis", f"unix://{sock}?db=3", "-u", "bob",
                "x", env={"NOTIFYD_REDIS_URL": "redis://ignored:1"})
        assert p.returncode == 0, p.stderr
        assert r.cli("-n", "3", "HGET", log_key("bob"), "seq").strip() == "1"
        r.cli("CONFIG", "SET", "requirepass", "s3cret")

        def cli(*args):
            return subprocess.run(["redis-cli", "-p", str(r.port), "-a",
                                   "s3cret", "--no-auth-warning", *args],
                                  check=True, capture_output=True,
                                  text=True).stdout.strip()
        url = f"redis://:s3cret@127.0.0.1:{r.port}/2"
        p = run("notify-send", "--redis", url, "-u", "alice", "x")
        assert p.returncode == 0, p.stderr
        assert cli("-n", "2", "HGET", log_key("alice"), "seq") == "1"
        assert cli("-n", "0", "DBSIZE") == "0"
        for bad in (f"redis://:wrong@127.0.0.1:{r.port}",
                    f"redis://127.0.0.1:{r.port}"):
            p = run("notify-send", "-u", "carol", "x",
                    env={"NOTIFYD_REDIS_URL": bad})
            assert p.returncode == 69
            err = p.stderr.decode()
            assert err.count("\n") == 1 and "wrong" not in err
        assert cli("-n", "0", "DBSIZE") == "0"
    finally:
        r.stop()
