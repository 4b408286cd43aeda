"""Each user's ordered log (notifyd(7), "Each user's log"), end to end
through the programs that write and read it: notify-send, notifyd-api and
notify-tail.

The other side is redis-cli (HGET of m:N, i:ID, first, seq; SUBSCRIBE;
CLIENT PAUSE), a raw-socket RESP subscriber, and Python's json; the log
is read field by field as the contract names them, never through the
project's own code.
"""
import json
import os
import signal
import subprocess
import threading
import time
import uuid

import pytest

from apiutil import Subscriber as RespSubscriber
from apiutil import log_entries, log_key, start_api
from cliutil import Subscriber, numsub, read_line, wait_until
from conftest import bin_path, run

SEND = "/api/notifications/send"


def send(redis, user, content, *args, env=None):
    """notify-send -u user --json content: the message as stored."""
    p = run("notify-send", "--redis", redis.url, "-u", user, "--json",
            *args, content, env=env)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def field(redis, user, name):
    return redis.cli("HGET", log_key(user), name, raw=True).strip()


def stored_text(redis, user, seq):
    """The message at position seq exactly as the log holds it."""
    return redis.cli("HGET", log_key(user), f"m:{seq}", raw=True).strip()


def uuid7_now(n=0):
    """A UUIDv7 of this millisecond (entries are aged by their id)."""
    ms = int(time.time() * 1000)
    h = f"{ms:012x}7{n:03x}8{uuid.uuid4().hex[:15]}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def process_id(redis):
    for line in redis.cli("INFO", "server").splitlines():
        if line.startswith("process_id:"):
            return int(line.split(":")[1])
    raise KeyError("process_id")


# ---- positions ------------------------------------------------------------

def test_positions_are_1_2_3_in_send_order_and_per_user(redis, daemons,
                                                        tmp_path):
    api = start_api(daemons, redis, tmp_path)
    got = [
        ("alice", send(redis, "alice", "a1")["seq"]),
        ("bob", send(redis, "bob", "b1")["seq"]),
        ("alice", api.send({"target_user": "alice", "content": "a2"})
         .json["seq"]),
        ("alice", send(redis, "alice", "a3")["seq"]),
        ("bob", api.send({"target_user": "bob", "content": "b2"})
         .json["seq"]),
    ]
    assert got == [("alice", 1), ("bob", 1), ("alice", 2), ("alice", 3),
                   ("bob", 2)]
    assert [m["content"] for m in log_entries(redis, "alice")] == \
        ["a1", "a2", "a3"]
    assert [m["seq"] for m in log_entries(redis, "alice")] == [1, 2, 3]
    assert [m["content"] for m in log_entries(redis, "bob")] == ["b1", "b2"]
    # Every id points at its position.
    for m in log_entries(redis, "alice"):
        assert field(redis, "alice", f"i:{m['id']}") == str(m["seq"])
    assert field(redis, "alice", "first") == "1"
    assert field(redis, "alice", "seq") == "3"


# ---- trimming -------------------------------------------------------------

def test_offline_max_trims_the_oldest_and_moves_first(redis, daemons,
                                                      tmp_path):
    sent = [send(redis, "alice", f"m{i}", "--offline-max", "3")
            for i in range(1, 6)]
    assert [m["seq"] for m in sent] == [1, 2, 3, 4, 5]
    assert field(redis, "alice", "first") == "3"
    assert [m["content"] for m in log_entries(redis, "alice")] == \
        ["m3", "m4", "m5"]
    # A trimmed entry leaves nothing behind: neither its message nor its id.
    assert redis.cli("HEXISTS", log_key("alice"), "m:2").strip() == "0"
    assert redis.cli("HEXISTS", log_key("alice"),
                     f"i:{sent[1]['id']}").strip() == "0"
    p = run("notify-tail", "--redis", redis.url, "--offline", "alice", "--json")
    assert [json.loads(x)["seq"] for x in p.stdout.decode().splitlines()] == \
        [3, 4, 5]
    # The same bound from the environment, and from notifyd-api.
    send(redis, "alice", "m6", env={"NOTIFYD_OFFLINE_MAX": "2"})
    assert field(redis, "alice", "first") == "5"
    api = start_api(daemons, redis, tmp_path, "--offline-max", "1")
    assert api.send({"target_user": "alice", "content": "m7"}).json["seq"] == 7
    assert field(redis, "alice", "first") == "7"
    assert [m["content"] for m in log_entries(redis, "alice")] == ["m7"]


def test_entries_past_their_ttl_are_not_read_and_the_next_send_trims_them(
        redis):
    old = send(redis, "alice", "old", "--ttl", "2s")
    time.sleep(1.5)
    young = send(redis, "alice", "young", "--ttl", "2s")
    time.sleep(0.8)
    # old is 2.3 s old, past its 2 s; the log itself lives 2 s after the
    # last send, so it is still there with both entries.
    assert redis.cli("HEXISTS", log_key("alice"), "m:1").strip() == "1"
    p = run("notify-tail", "--redis", redis.url, "--offline", "alice", "--json")
    assert p.returncode == 0, p.stderr
    assert [json.loads(x)["id"] for x in p.stdout.decode().splitlines()] == \
        [young["id"]]
    send(redis, "alice", "next", "--ttl", "2s")
    assert redis.cli("HEXISTS", log_key("alice"), "m:1").strip() == "0"
    assert redis.cli("HEXISTS", log_key("alice"), f"i:{old['id']}").strip() \
        == "0"
    assert field(redis, "alice", "first") == "2"
    # Once every entry is past its age and no send came, nothing is read.
    time.sleep(2.3)
    p = run("notify-tail", "--redis", redis.url, "--offline", "alice")
    assert p.returncode == 0 and p.stdout == b""


# ---- target_users: all or nothing -----------------------------------------

def test_target_users_are_stored_for_all_or_for_none(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path)
    sub = RespSubscriber(redis.port, "notifications")
    redis.cli("SET", log_key("bob"), "not a log")
    r = api.send({"target_users": ["alice", "bob", "carol"],
                  "content": "all or none"})
    assert r.status == 500, r.body
    assert "WRONGTYPE" in r.json["error"]
    # alice comes before bob and carol after: neither got anything.
    assert redis.cli("EXISTS", log_key("alice"), log_key("carol")).strip() \
        == "0"
    sub.nothing_within(0.3)

    redis.cli("DEL", log_key("bob"))
    r = api.send({"target_users": ["alice", "bob", "carol"],
                  "content": "all or none"})
    assert r.status == 200, r.body
    results = r.json["results"]
    assert [(x["target_user"], x["seq"]) for x in results] == \
        [("alice", 1), ("bob", 1), ("carol", 1)]
    assert [x["id"] for x in results] == r.json["ids"]
    published = sub.messages(3)
    assert [(m["target_user"], m["id"], m["seq"]) for m in published] == \
        [(x["target_user"], x["id"], x["seq"]) for x in results]
    sub.close()


def test_concurrent_senders_positions_are_the_publish_order(redis, daemons,
                                                            tmp_path):
    """Four API threads and two notify-send --batch processes write to
    one user's log at once: the subscriber sees positions 1..N in order,
    and each published message is the one stored at its position."""
    api = start_api(daemons, redis, tmp_path, "--threads", "4")
    sub = RespSubscriber(redis.port, "notifications")
    answers = []
    lock = threading.Lock()

    def api_sender(k):
        for i in range(40):
            r = api.send({"target_user": "alice", "content": f"api{k}-{i}"})
            assert r.status == 200, r.body
            with lock:
                answers.append((r.json["id"], r.json["seq"]))

    def batch_sender(k):
        lines = "\n".join(json.dumps({"target_user": "alice",
                                      "content": f"cli{k}-{i}"})
                          for i in range(100))
        p = run("notify-send", "--redis", redis.url, "--batch", "--json",
                input=lines)
        assert p.returncode == 0, p.stderr
        with lock:
            answers.extend((m["id"], m["seq"]) for m in
                           map(json.loads, p.stdout.decode().splitlines()))

    threads = [threading.Thread(target=api_sender, args=(k,))
               for k in range(4)]
    threads += [threading.Thread(target=batch_sender, args=(k,))
                for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    total = 4 * 40 + 2 * 100
    published = sub.messages(total, timeout=20)
    sub.close()
    assert [m["seq"] for m in published] == list(range(1, total + 1))
    # What each sender was told is what the log and the channel say.
    assert sorted(answers, key=lambda a: a[1]) == \
        [(m["id"], m["seq"]) for m in published]
    for m in published[::37]:
        assert json.loads(stored_text(redis, "alice", m["seq"])) == m


# ---- a lost answer is not a lost message -----------------------------------

def test_api_answer_lost_after_the_send_resends_the_same_id(redis, daemons,
                                                           tmp_path):
    """Redis stops (SIGSTOP) after the send was written: the answer does
    not come within --redis-timeout, though Redis runs the send when it
    resumes. The daemon sends the same id again on a new connection; the
    log refuses the duplicate and answers with its position: 200, one
    entry, one publish. Without the retry the answer would be a 503 for a
    message that is stored and was published."""
    api = start_api(daemons, redis, tmp_path, "--redis-timeout", "1s",
                    "--threads", "1")
    assert api.send({"target_user": "alice", "content": "warm"}).status == 200
    sub = RespSubscriber(redis.port, "notifications")
    pid = process_id(redis)
    out = {}
    os.kill(pid, signal.SIGSTOP)
    try:
        t = threading.Thread(target=lambda: out.update(r=api.send(
            {"target_user": "alice", "content": "lost answer"}, timeout=10)))
        t.start()
        time.sleep(1.5)   # past the first timeout, within the second
    finally:
        os.kill(pid, signal.SIGCONT)
    t.join(10)
    r = out["r"]
    assert r.status == 200, r.body
    assert r.json["seq"] == 2
    assert [m["content"] for m in log_entries(redis, "alice")] == \
        ["warm", "lost answer"]
    [m] = sub.messages(1)
    assert (m["id"], m["seq"]) == (r.json["id"], 2)
    sub.nothing_within(0.3)
    api.daemon.stop()
    assert "again on a new connection" in api.daemon.stderr()


def test_api_send_dropped_by_a_pause_is_sent_again(redis, daemons, tmp_path):
    """CLIENT PAUSE WRITE holds the send past --redis-timeout; the daemon
    closes that connection (Redis then drops the held command) and sends
    again, which goes through when the pause ends: 200, not a 503."""
    api = start_api(daemons, redis, tmp_path, "--redis-timeout", "500ms",
                    "--threads", "1")
    assert api.send({"target_user": "alice", "content": "warm"}).status == 200
    redis.cli("CLIENT", "PAUSE", "800", "WRITE")
    r = api.send({"target_user": "alice", "content": "paused"})
    assert r.status == 200, r.body
    assert r.json["seq"] == 2
    assert [m["content"] for m in log_entries(redis, "alice")] == \
        ["warm", "paused"]


def test_api_503_only_when_redis_stays_away_and_then_nothing_is_stored(
        redis, daemons, tmp_path):
    """A pause longer than two --redis-timeouts: both attempts are held
    and dropped. The 503 says the outcome is unknown, and it is true to
    the log: after the pause the message is not there, and nothing was
    published."""
    api = start_api(daemons, redis, tmp_path, "--redis-timeout", "400ms",
                    "--threads", "1")
    assert api.send({"target_user": "alice", "content": "warm"}).status == 200
    sub = RespSubscriber(redis.port, "notifications")
    redis.cli("CLIENT", "PAUSE", "2000", "WRITE")
    r = api.send({"target_user": "alice", "content": "never"})
    assert r.status == 503, r.body
    assert "may or may not have been stored" in r.json["error"]
    time.sleep(1.5)   # the pause is over
    sub.nothing_within(0.5)
    assert [m["content"] for m in log_entries(redis, "alice")] == ["warm"]
    assert api.send({"target_user": "alice", "content": "back"}).json["seq"] \
        == 2


def test_notify_send_answer_lost_after_the_send_resends_the_same_id(redis):
    """notify-send connects, its send is held by CLIENT PAUSE WRITE, then
    Redis stops (SIGSTOP) past --redis-timeout, so the answer is lost; when
    Redis resumes it runs the held send, and notify-send's second attempt
    with the same id is refused as a duplicate and answered with its
    position."""
    sub = Subscriber(redis, "notifications")
    pid = process_id(redis)
    redis.cli("CLIENT", "PAUSE", "600", "WRITE")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFYD_")}
    p = subprocess.Popen([bin_path("notify-send"), "--redis", redis.url,
                          "--redis-timeout", "1s", "-v", "--json", "-u",
                          "alice", "held"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    try:
        wait_until(lambda: "cmd=eval" in redis.cli("CLIENT", "LIST"), 5,
                   "the send to be held")
        os.kill(pid, signal.SIGSTOP)
        time.sleep(1.3)
    finally:
        os.kill(pid, signal.SIGCONT)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    msg = json.loads(out)
    err = err.decode()
    assert f"no answer within 1000 ms; sending {msg['id']} again" in err
    assert err.endswith(f"sent {msg['id']} to alice (seq 1; stored and "
                        "published by the first attempt, whose answer was "
                        "lost)\n")
    assert stored_text(redis, "alice", 1) == out.decode().strip()
    assert field(redis, "alice", "seq") == "1"
    assert sub.message() == out.strip()
    assert sub.message(timeout=0.3) is None
    sub.close()


def test_notify_send_dropped_by_a_pause_is_sent_again_or_exits_69(redis):
    redis.cli("CLIENT", "PAUSE", "800", "WRITE")
    p = run("notify-send", "--redis", redis.url, "--redis-timeout", "500ms",
            "-u", "alice", "--json", "paused")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["seq"] == 1
    assert "again on a new connection" in p.stderr.decode()
    assert field(redis, "alice", "seq") == "1"

    redis.cli("CLIENT", "PAUSE", "2000", "WRITE")
    p = run("notify-send", "--redis", redis.url, "--redis-timeout", "400ms",
            "-u", "alice", "never")
    assert p.returncode == 69
    assert "may or may not be stored and published" in \
        p.stderr.decode().splitlines()[-1]
    time.sleep(1.5)
    assert field(redis, "alice", "seq") == "1"


# ---- notify-tail --since ---------------------------------------------------

def lines_of(tail, n, timeout=5.0):
    """The next n lines of a running notify-tail, as text."""
    out = []
    for _ in range(n):
        line = read_line(tail.proc.stdout, timeout)
        assert line is not None, f"got only {out}"
        out.append(line.decode().rstrip("\n"))
    return out


def put_entry(redis, user, seq, content):
    """Store a message at position seq by hand, as the append script
    does, but without publishing it: a live message that never came."""
    mid = uuid7_now(seq)
    msg = json.dumps({"id": mid, "type": "info", "content": content,
                      "data": {}, "timestamp": "2026-11-26T22:43:46.123Z",
                      "target_user": user, "channel": None, "seq": seq},
                     separators=(",", ":"))
    redis.cli("HSET", log_key(user), f"m:{seq}", msg, f"i:{mid}", seq,
              "seq", seq)
    return msg


def test_since_id_prints_the_rest_then_live_without_gap_or_repeat(redis,
                                                                  daemons):
    ids = [send(redis, "alice", f"m{i}")["id"] for i in range(1, 6)]
    send(redis, "bob", "not for alice")
    tail = daemons("notify-tail", "--redis", redis.url, "-u", "alice",
                   "--since", ids[1], "--json", "-n", "6")
    # The log after m2.
    assert lines_of(tail, 3) == [stored_text(redis, "alice", n)
                                 for n in (3, 4, 5)]
    # The next position, live.
    send(redis, "alice", "m6")
    assert lines_of(tail, 1) == [stored_text(redis, "alice", 6)]
    # A position already printed (the log's copy) is not printed again.
    redis.cli("PUBLISH", "notifications", stored_text(redis, "alice", 4))
    # A gap: 7 was stored but never published, 8 comes live. Both come,
    # in order, read from the log.
    put_entry(redis, "alice", 7, "m7 (missed live)")
    m8 = put_entry(redis, "alice", 8, "m8")
    redis.cli("PUBLISH", "notifications", m8)
    assert lines_of(tail, 2) == [stored_text(redis, "alice", 7), m8]
    assert tail.wait(5) == 0
    assert "is not in" not in tail.stderr()


def test_since_follows_a_log_started_anew(redis, daemons):
    first = send(redis, "alice", "one")
    send(redis, "alice", "two")
    tail = daemons("notify-tail", "--redis", redis.url, "-u", "alice",
                   "--since", first["id"], "--json", "-n", "3")
    assert [json.loads(x)["content"] for x in lines_of(tail, 1)] == ["two"]
    # The log expires (or Redis loses it): the next send starts at 1 again,
    # a position notify-tail has passed in the old log.
    redis.cli("DEL", log_key("alice"))
    again = send(redis, "alice", "new one")
    assert again["seq"] == 1
    send(redis, "alice", "new two")
    got = [json.loads(x) for x in lines_of(tail, 2)]
    assert [(m["seq"], m["content"]) for m in got] == \
        [(1, "new one"), (2, "new two")]
    assert tail.wait(5) == 0
    assert "alice's log was started anew" in tail.stderr()


def test_since_reads_what_was_sent_while_the_subscription_was_lost(redis,
                                                                   daemons):
    first = send(redis, "alice", "before")
    tail = daemons("notify-tail", "--redis", redis.url, "-u", "alice",
                   "--since", first["id"], "--json", "-n", "4")
    send(redis, "alice", "live")
    assert [json.loads(x)["content"] for x in lines_of(tail, 1)] == ["live"]
    redis.cli("CLIENT", "KILL", "TYPE", "pubsub")
    # Sent before notify-tail subscribes again (it waits 100 ms first).
    p = run("notify-send", "--redis", redis.url, "--batch",
            input="\n".join(json.dumps({"target_user": "alice",
                                        "content": f"gone {i}"})
                            for i in range(3)))
    assert p.returncode == 0, p.stderr
    got = [json.loads(x) for x in lines_of(tail, 3)]
    assert [(m["seq"], m["content"]) for m in got] == \
        [(3, "gone 0"), (4, "gone 1"), (5, "gone 2")]
    assert tail.wait(5) == 0
    assert "reconnected" in tail.stderr()


def test_since_switches_to_live_while_messages_keep_coming(redis, daemons):
    """A sender keeps sending while notify-tail reads the log and switches
    to the live feed: it prints every position from the one after the id,
    each once, in order, exactly as stored."""
    lines = "\n".join(json.dumps({"target_user": "alice", "content": f"b{i}"})
                      for i in range(300))
    keep = ("--offline-max", "100000")   # nothing trimmed while we look
    p = run("notify-send", "--redis", redis.url, "--batch", *keep,
            input=lines)
    assert p.returncode == 0, p.stderr
    since = json.loads(stored_text(redis, "alice", 10))["id"]
    stop = threading.Event()

    def sender():
        i = 0
        while not stop.is_set():
            batch = "\n".join(json.dumps({"target_user": "alice",
                                          "content": f"s{i}-{k}"})
                              for k in range(20))
            run("notify-send", "--redis", redis.url, "--batch", *keep,
                input=batch)
            i += 1

    t = threading.Thread(target=sender)
    t.start()
    try:
        wait_until(lambda: int(field(redis, "alice", "seq")) > 320, 10,
                   "the sender to start")
        want = 600
        tail = daemons("notify-tail", "--redis", redis.url, "-u", "alice",
                       "--since", since, "--json", "-n", str(want))
        # Read as it prints: 600 lines do not fit in a pipe.
        printed = lines_of(tail, want, timeout=15)
        assert tail.wait(10) == 0
    finally:
        stop.set()
        t.join(30)
    seqs = [json.loads(x)["seq"] for x in printed]
    assert seqs == list(range(11, 11 + want))
    for n in (11, 300, 301, 350, 10 + want):
        assert printed[n - 11] == stored_text(redis, "alice", n)


def test_since_duration_prints_the_entries_of_that_span(redis, daemons):
    send(redis, "alice", "too old")
    time.sleep(1.5)
    send(redis, "alice", "recent 1")
    send(redis, "alice", "recent 2")
    tail = daemons("notify-tail", "--redis", redis.url, "-u", "alice",
                   "--since", "1s", "-n", "3")
    got = lines_of(tail, 2)
    assert [x.split(" -> user:alice ")[1] for x in got] == \
        ["#2 recent 1", "#3 recent 2"]
    send(redis, "alice", "live")
    assert lines_of(tail, 1)[0].endswith(" -> user:alice #4 live")
    assert tail.wait(5) == 0


def test_since_an_id_not_in_the_log_starts_from_its_first_entry(redis,
                                                               daemons):
    sent = [send(redis, "alice", f"m{i}", "--offline-max", "2")
            for i in range(1, 4)]
    # m1 was trimmed; an id never sent to alice is not there either.
    for gone in (sent[0]["id"], uuid7_now()):
        tail = daemons("notify-tail", "--redis", redis.url, "-u", "alice",
                       "--since", gone, "--json", "-n", "2")
        assert [json.loads(x)["content"] for x in lines_of(tail, 2)] == \
            ["m2", "m3"]
        assert tail.wait(5) == 0
        assert tail.stderr().splitlines()[-1] == (
            f"notify-tail: {gone} is not in alice's log (trimmed, expired "
            "or unknown): starting from its first entry")


def test_since_uppercase_id_and_an_empty_log(redis, daemons):
    first = send(redis, "alice", "one")
    tail = daemons("notify-tail", "--redis", redis.url, "-u", "alice",
                   "--since", first["id"].upper(), "--json", "-n", "1")
    send(redis, "alice", "two")
    assert [json.loads(x)["content"] for x in lines_of(tail, 1)] == ["two"]
    assert tail.wait(5) == 0
    # A user without a log: nothing to print, then the first live one.
    tail = daemons("notify-tail", "--redis", redis.url, "-u", "zoe",
                   "--since", "1h", "--json", "-n", "1")
    wait_until(lambda: numsub(redis, "notifications") >= 1, 5, "subscribe")
    z = send(redis, "zoe", "hello zoe")
    assert lines_of(tail, 1) == [json.dumps(z, separators=(",", ":"),
                                            ensure_ascii=False)]
    assert tail.wait(5) == 0


# ---- memory ------------------------------------------------------------------

def test_memory_of_a_log_of_1000_messages_against_the_old_hash(redis):
    """1000 typical messages (200 bytes of content) in one user's log,
    against the seed's design (field = id, value = the message without
    seq, built here with redis-cli). The log pays one small i:ID field per
    message and its seq; it must stay within a quarter of the old cost."""
    lines = []
    for i in range(1000):
        content = (f"Your order #{i:06d} has shipped and will arrive on "
                   "Thursday. Track it from your account page at any time, "
                   "or reply STOP to opt out of these updates. Thanks for "
                   "shopping with us, and see you again soon!" + "." * 50)[:200]
        lines.append(json.dumps({"target_user": "alice",
                                 "notification_type": "order",
                                 "content": content,
                                 "data": {"order": i, "carrier": "ups"}}))
    p = run("notify-send", "--redis", redis.url, "--batch", "--json",
            input="\n".join(lines))
    assert p.returncode == 0, p.stderr
    msgs = [json.loads(x) for x in p.stdout.decode().splitlines()]
    assert len(msgs) == 1000 and len(msgs[0]["content"]) == 200
    new = int(redis.cli("MEMORY", "USAGE", log_key("alice"), "SAMPLES", "0"))
    cli = subprocess.Popen(["redis-cli", "-p", str(redis.port)],
                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                           text=True)
    for m in msgs:
        old = {k: v for k, v in m.items() if k != "seq"}
        text = json.dumps(old, separators=(",", ":"), ensure_ascii=False)
        cli.stdin.write(f"HSET offline:alice {m['id']} {json.dumps(text)}\n")
    cli.stdin.close()
    assert cli.wait(30) == 0
    assert redis.cli("HLEN", "offline:alice").strip() == "1000"
    old = int(redis.cli("MEMORY", "USAGE", "offline:alice", "SAMPLES", "0"))
    print(f"\nlog of 1000: {new} bytes ({new / 1000:.0f} per message); "
          f"old hash: {old} bytes ({old / 1000:.0f} per message); "
          f"ratio {new / old:.3f}")
    assert new < old * 1.25
