"""notify-tail end to end: what it prints, filters, --offline, restarts,
signals and closed pipes.

Messages are published with redis-cli (PUBLISH, HSET) where the test is
about notify-tail alone, and with notify-send where it is about the two
together; expected values are built with Python's json.
"""
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import bin_path, free_port, run
from cliutil import man_flags, numsub, read_line, wait_until

READABLE = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+) -> (\S+) (.*)$")
# A message from a user's log shows its position: TARGET #SEQ CONTENT.
READABLE_SEQ = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+) -> (\S+) #(\d+) (.*)$")


def message(id_, content="hello", type_="info", user=None, channel=None,
            data=None, ts="2026-11-26T22:43:46.123Z"):
    """A message as notifyd(7) describes it, encoded by Python's json."""
    return json.dumps({"id": id_, "type": type_, "content": content,
                       "data": data or {}, "timestamp": ts,
                       "target_user": user, "channel": channel},
                      ensure_ascii=False, separators=(",", ":"))


def uuid7(n):
    """Ids that sort as n does (not random: the order is what matters)."""
    return f"01a21a0b-{n:04x}-7000-8000-000000000000"


def publish(redis, payload, channel="notifications"):
    return int(redis.cli("PUBLISH", channel, payload))


def send(redis, *args):
    p = run("notify-send", "--redis", redis.url, *args)
    assert p.returncode == 0, p.stderr
    return p


def finish(tail, timeout=10):
    """Wait for a tail started with -n; returns its stdout lines."""
    assert tail.wait(timeout) == 0, tail.stderr()
    tail.stderr()
    return tail.stdout_text.splitlines()


def test_json_prints_exactly_what_was_published(redis, daemons):
    tail = daemons("notify-tail", "--redis", redis.url, "--json", "-n", "2")
    m1 = message(uuid7(1), "通知 ✓ émoji 🎉", user="alice",
                 data={"a": {"b": [1, {"c": None}]}})
    m2 = message(uuid7(2), "second", channel="ops")
    assert publish(redis, m1) == 1
    assert publish(redis, m2) == 1
    assert finish(tail) == [m1, m2]


def test_readable_line_shows_time_type_target_content(redis, daemons):
    tail = daemons("notify-tail", "--redis", redis.url, "-n", "4")
    publish(redis, message(uuid7(1), "for alice", "build", user="alice"))
    publish(redis, message(uuid7(2), "to ops", "alert", channel="ops"))
    publish(redis, message(uuid7(3), "to all\nnext\tline \\ é"))
    publish(redis, message(uuid7(4), "both", user="bob", channel="c1"))
    lines = finish(tail)
    parsed = [READABLE.match(line).groups() for line in lines]
    assert parsed == [
        ("2026-11-26T22:43:46.123Z", "build", "user:alice", "for alice"),
        ("2026-11-26T22:43:46.123Z", "alert", "channel:ops", "to ops"),
        ("2026-11-26T22:43:46.123Z", "info", "broadcast",
         "to all\\nnext\\tline \\\\ é"),
        ("2026-11-26T22:43:46.123Z", "info", "user:bob,channel:c1", "both"),
    ]


def test_send_to_tail_round_trip(redis, daemons):
    tail = daemons("notify-tail", "--redis", redis.url, "--json", "-n", "1")
    p = send(redis, "-b", "-t", "news", "-d", '{"k":[1,2,{"x":"é"}]}',
             "--json", "通知", "✓")
    [line] = finish(tail)
    assert line.encode() == p.stdout.strip()
    assert json.loads(line)["content"] == "通知 ✓"


def test_each_line_is_flushed_at_once(redis, daemons):
    tail = daemons("notify-tail", "--redis", redis.url)
    publish(redis, message(uuid7(1), "first"))
    line = read_line(tail.proc.stdout)
    assert line is not None and line.endswith(b" first\n")
    publish(redis, message(uuid7(2), "second"))
    line = read_line(tail.proc.stdout)
    assert line is not None and line.endswith(b" second\n")
    assert tail.proc.poll() is None


@pytest.mark.parametrize("flag,value,keep", [
    ("--user", "alice", {2, 5}),
    ("-u", "alice", {2, 5}),
    ("--channel", "ops", {3, 5}),
    ("-c", "ops", {3, 5}),
    ("--type", "alert", {4, 5}),
    ("-t", "alert", {4, 5}),
])
def test_filters(redis, daemons, flag, value, keep):
    tail = daemons("notify-tail", "--redis", redis.url, "--json", flag, value,
                   "-n", "2")
    msgs = {
        1: message(uuid7(1), "1", user="bob"),
        2: message(uuid7(2), "2", user="alice"),
        3: message(uuid7(3), "3", channel="ops"),
        4: message(uuid7(4), "4", type_="alert"),
        5: message(uuid7(5), "5", "alert", user="alice", channel="ops"),
    }
    for k in sorted(msgs):
        publish(redis, msgs[k])
    assert finish(tail) == [msgs[k] for k in sorted(keep)]


def test_filters_combine(redis, daemons):
    tail = daemons("notify-tail", "--redis", redis.url, "--json", "-u",
                   "alice", "-t", "alert", "-n", "1")
    publish(redis, message(uuid7(1), user="alice"))
    publish(redis, message(uuid7(2), type_="alert"))
    want = message(uuid7(3), type_="alert", user="alice")
    publish(redis, want)
    assert finish(tail) == [want]


def test_count_exits_after_n(redis, daemons):
    tail = daemons("notify-tail", "--redis", redis.url, "--json", "-n", "3")
    sent = [message(uuid7(i), str(i)) for i in range(3)]
    for m in sent:
        publish(redis, m)
    assert finish(tail) == sent
    # It has left the channel.
    assert numsub(redis, "notifications") == 0


def test_non_notifications_are_skipped(redis, daemons):
    tail = daemons("notify-tail", "--redis", redis.url, "--json", "-n", "1")
    publish(redis, "not json at all")
    publish(redis, '{"no":"id"}')
    good = message(uuid7(1))
    publish(redis, good)
    assert finish(tail) == [good]
    assert "not a notification" in tail.stderr()


def test_offline_lists_in_position_order_without_changing_the_log(redis):
    for n in range(1, 5):
        send(redis, "-u", "alice", f"m{n}")
    key = "offline:{alice}"
    before = redis.cli("HGETALL", key, raw=True)
    p = run("notify-tail", "--redis", redis.url, "--offline", "alice", "--json")
    assert p.returncode == 0, p.stderr
    got = [json.loads(x) for x in p.stdout.decode().splitlines()]
    assert [(m["seq"], m["content"]) for m in got] == \
        [(1, "m1"), (2, "m2"), (3, "m3"), (4, "m4")]
    # Printed exactly as stored.
    assert p.stdout.decode().splitlines() == \
        [redis.cli("HGET", key, f"m:{n}", raw=True).strip()
         for n in range(1, 5)]
    assert redis.cli("HGETALL", key, raw=True) == before
    p = run("notify-tail", "--redis", redis.url, "--offline", "alice", "-n", "2")
    lines = p.stdout.decode().splitlines()
    assert p.returncode == 0
    assert [READABLE_SEQ.match(x).group(3, 4, 5) for x in lines] == \
        [("user:alice", "1", "m1"), ("user:alice", "2", "m2")]


def test_offline_reads_a_long_log_in_pages(redis):
    # 250 entries are three pages of at most 100: every entry comes once,
    # in order, across the page boundaries.
    lines = "\n".join(json.dumps({"target_user": "carol", "content": f"c{i}"})
                      for i in range(250))
    p = run("notify-send", "--redis", redis.url, "--batch", input=lines)
    assert p.returncode == 0, p.stderr
    p = run("notify-tail", "--redis", redis.url, "--offline", "carol", "--json")
    assert p.returncode == 0, p.stderr
    got = [json.loads(x) for x in p.stdout.decode().splitlines()]
    assert [m["seq"] for m in got] == list(range(1, 251))
    assert [m["content"] for m in got] == [f"c{i}" for i in range(250)]
    p = run("notify-tail", "--redis", redis.url, "--offline", "carol", "-n",
            "150", "--json")
    assert [json.loads(x)["seq"] for x in p.stdout.decode().splitlines()] == \
        list(range(1, 151))


def test_offline_of_messages_from_notify_send(redis):
    lines = "\n".join(json.dumps({"target_user": "bob", "content": f"n{i}"})
                      for i in range(50))
    p = run("notify-send", "--redis", redis.url, "--batch", input=lines)
    assert p.returncode == 0, p.stderr
    p = run("notify-tail", "--redis", redis.url, "--offline", "bob", "--json")
    assert p.returncode == 0, p.stderr
    got = [json.loads(x)["content"] for x in p.stdout.decode().splitlines()]
    assert got == [f"n{i}" for i in range(50)]


def test_offline_of_nobody_and_of_a_bad_user(redis):
    p = run("notify-tail", "--redis", redis.url, "--offline", "nobody")
    assert p.returncode == 0 and p.stdout == b""
    p = run("notify-tail", "--redis", redis.url, "--offline", "bad user")
    assert p.returncode == 65
    assert p.stderr.decode().count("\n") == 1


def test_prefix_is_honoured(redis, daemons):
    tail = daemons("notify-tail", "--redis", redis.url, "--redis-prefix",
                   "app1:", "--json", "-n", "1")
    publish(redis, message(uuid7(1), "unprefixed"))
    want = message(uuid7(2), "prefixed")
    publish(redis, want, channel="app1:notifications")
    assert finish(tail) == [want]
    sent = run("notify-send", "--redis", redis.url, "-u", "zoe", "--json",
               "z", env={"NOTIFYD_REDIS_PREFIX": "app2:"})
    assert sent.returncode == 0, sent.stderr
    p = run("notify-tail", "--redis", redis.url, "--offline", "zoe", "--json",
            env={"NOTIFYD_REDIS_PREFIX": "app2:"})
    assert p.stdout.decode().splitlines() == [sent.stdout.decode().strip()]
    p = run("notify-tail", "--redis", redis.url, "--offline", "zoe", "--json")
    assert p.returncode == 0 and p.stdout == b""


def publish_until_exit(redis, tail, payload, timeout=15.0):
    """Publish every 100 ms until the tail (a Daemon or Popen) exits."""
    proc = getattr(tail, "proc", tail)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        publish(redis, payload)
        try:
            proc.wait(0.1)
        except subprocess.TimeoutExpired:
            pass


def test_recovers_after_a_redis_restart(redis, daemons):
    tail = daemons("notify-tail", "--redis", redis.url, "--json", "-n", "1")
    redis.stop()
    time.sleep(0.3)  # let it notice and fail a reconnect or two
    redis.start()
    wait_until(lambda: numsub(redis, "notifications") == 1, 15,
               "notify-tail to subscribe again")
    want = message(uuid7(1), "after restart")
    publish_until_exit(redis, tail, want)
    assert finish(tail)[0] == want
    err = tail.stderr()
    assert "lost the redis connection" in err
    assert "reconnected" in err


def test_ping_detects_a_silent_redis(redis, daemons):
    tail = daemons("notify-tail", "--redis", redis.url, "--json", "-n", "1",
                   "--ping-interval", "200ms")
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(1.0)
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
    wait_until(lambda: numsub(redis, "notifications") >= 1, 15,
               "notify-tail to subscribe again")
    want = message(uuid7(1), "after silence")
    publish_until_exit(redis, tail, want)
    assert finish(tail)[0] == want
    err = tail.stderr()
    assert "no reply from redis within 200 ms" in err
    assert "reconnected" in err


def ping_calls(redis):
    m = re.search(r"cmdstat_ping:calls=(\d+)", redis.cli("INFO", "commandstats"))
    return int(m.group(1)) if m else 0


def test_ping_keeps_a_healthy_idle_connection(redis, daemons):
    tail = daemons("notify-tail", "--redis", redis.url, "--json", "-n", "1",
                   "--ping-interval", "100ms")
    before = ping_calls(redis)
    time.sleep(1.0)  # ten intervals of silence, answered by PONGs
    assert ping_calls(redis) - before >= 5
    want = message(uuid7(1))
    publish(redis, want)
    assert finish(tail) == [want]
    assert "lost" not in tail.stderr()


def test_redis_down_at_start_is_exit_69():
    url = f"redis://127.0.0.1:{free_port()}"
    for args in ([], ["--offline", "alice"]):
        p = run("notify-tail", "--redis", url, *args)
        assert p.returncode == 69
        err = p.stderr.decode()
        assert err.count("\n") == 1 and "Connection refused" in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_exits_0(redis, daemons, sig):
    tail = daemons("notify-tail", "--redis", redis.url)
    tail.signal(sig)
    assert tail.wait(5) == 0


def test_closed_pipe_exits_quietly(redis):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFYD_")}
    tail = subprocess.Popen([bin_path("notify-tail"), "--redis", redis.url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    head = subprocess.Popen(["head", "-1"], stdin=tail.stdout,
                            stdout=subprocess.PIPE)
    tail.stdout.close()
    try:
        wait_until(lambda: numsub(redis, "notifications") == 1, 10,
                   "notify-tail to subscribe")
        publish(redis, message(uuid7(1), "only one"))
        out, _ = head.communicate(timeout=10)
        # No second message: it notices the closed pipe by itself.
        rc = tail.wait(timeout=5)
    finally:
        for p in (tail, head):
            if p.poll() is None:
                p.kill()
                p.wait()
    err = tail.stderr.read().decode()
    assert out.decode().endswith(" only one\n")
    assert rc == 0
    assert err == "notify-tail: subscribed to notifications\n"


def test_write_error_epipe_exits_quietly(redis):
    # On a socket (not a pipe) the closed reader is only seen when a line
    # is written: that write fails with EPIPE, and SIGPIPE must not kill.
    ours, theirs = socket.socketpair()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFYD_")}
    tail = subprocess.Popen([bin_path("notify-tail"), "--redis", redis.url,
                             "--json"], stdout=theirs, stderr=subprocess.PIPE,
                            env=env)
    theirs.close()
    try:
        wait_until(lambda: numsub(redis, "notifications") == 1, 10,
                   "notify-tail to subscribe")
        publish(redis, message(uuid7(1), "seen"))
        assert ours.recv(65536).endswith(b'"seen","data":{},'
                                         b'"timestamp":"2026-11-26T22:43:46.123Z",'
                                         b'"target_user":null,"channel":null}\n')
        ours.close()
        assert tail.poll() is None
        publish_until_exit(redis, tail, message(uuid7(2), "lost"), timeout=5)
        rc = tail.wait(timeout=5)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert rc == 0
    assert tail.stderr.read().decode() == \
        "notify-tail: subscribed to notifications\n"


# notifyd(7): 64 when the command line cannot be read, 78 when a value
# does not parse.
@pytest.mark.parametrize("args,code", [
    (["-n", "0"], 78),
    (["-n", "many"], 78),
    (["--bogus"], 64),
    (["stray"], 64),
    (["--ping-interval", "1ms"], 78),
    (["--ready-fd", "99"], 78),
    (["--redis", "http://x"], 78),
    (["--redis-prefix", "a b"], 78),
    (["--since", "10m"], 64),
    (["--since", "10m", "--offline", "alice", "-u", "alice"], 64),
    (["--since", "yesterday", "-u", "alice"], 65),
    (["--since", "01a21a0b-0001-7000-8000-00000000000", "-u", "alice"], 65),
    (["--since", "10m", "-u", "bad user"], 65),
])
def test_bad_flags(args, code):
    p = run("notify-tail", *args)
    assert p.returncode == code
    err = p.stderr.decode()
    assert err.startswith("notify-tail: ") and err.count("\n") == 1


def test_help_mentions_every_flag_of_the_man_page():
    p = run("notify-tail", "--help")
    assert p.returncode == 0
    text = p.stdout.decode()
    assert text.startswith("usage: notify-tail")
    flags = man_flags("notify-tail.1")
    assert {"--json", "-u", "--user", "-n", "--offline", "--since",
            "--ready-fd", "--ping-interval", "--redis"} <= flags
    assert [f for f in flags if f not in text] == []
    v = run("notify-tail", "--version")
    assert v.returncode == 0 and v.stdout.decode().startswith("notify-tail ")
    lint = subprocess.run(["mandoc", "-Tlint", "-W", "warning",
                           os.path.join(os.path.dirname(__file__), "..", "..",
                                        "man", "notify-tail.1")],
                          capture_output=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
