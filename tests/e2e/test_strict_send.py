"""notify-send checks every request strictly, end to end.

A --batch line is for one "target_user" or says "broadcast": true; an
unknown key, a key given twice, a value of the wrong type or empty
content makes the line bad: it is reported with its number, nothing of
it is sent, the rest of the batch still goes, and the exit status is 65.
The flags go through the same check: an empty message is 65 too.

The other side is real: a private redis-server, notifyd-ws, WebSocket
clients on raw sockets (tests/e2e/wsproto.py) and redis-cli. A message
that should never arrive is waited for with a marker sent after it: once
the marker is in, anything published before it would be in as well.
"""
import json
import time

import pytest

from conftest import run
from cliutil import Subscriber
from wsproto import RawWS, mint, start_ws
from wsutil import log_ids

RESET_LINE = '{"target_usr":"alice","content":"your reset code is 1234"}'


def send(redis, *args, input=None):
    return run("notify-send", "--redis", redis.url, *args, input=input)


def stderr_lines(p):
    return p.stderr.decode().splitlines()


@pytest.fixture
def ws_port(redis, daemons, keys):
    return start_ws(daemons, redis, keys)[1]


def client(port, user):
    """A connected user; a ping answered means the server holds it."""
    c = RawWS(port, token=mint(sub=user))
    assert c.status == 101, c.status
    c.ping_ok()
    return c


def contents_until(c, marker, timeout=10.0, most=50):
    """Contents of the messages c receives, up to and including marker."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < most:
        msg = c.recv_json(timeout=max(0.01, deadline - time.monotonic()))
        got.append(msg.get("content"))
        if got[-1] == marker:
            return got
    raise AssertionError(f"no marker in {got!r}")


def broadcast_marker(redis, text="marker"):
    p = send(redis, "-b", text)
    assert p.returncode == 0, p.stderr
    return text


def test_typo_in_the_middle_of_a_batch_is_never_sent(redis, ws_port, r):
    alice, bob, carol = (client(ws_port, u) for u in ("alice", "bob",
                                                      "carol"))
    try:
        batch = "\n".join([
            '{"target_user":"alice","content":"for alice"}',
            RESET_LINE,
            '{"target_user":"bob","content":"for bob"}',
        ]) + "\n"
        p = send(redis, "--batch", "--json", input=batch)
        assert p.returncode == 65
        assert stderr_lines(p) == [
            'notify-send: line 2: unknown key "target_usr" (did you mean '
            '"target_user"?)']
        sent = [json.loads(x) for x in p.stdout.decode().splitlines()]
        assert [m["content"] for m in sent] == ["for alice", "for bob"]
        marker = broadcast_marker(redis)
        got = {u: contents_until(c, marker)
               for u, c in (("alice", alice), ("bob", bob),
                            ("carol", carol))}
    finally:
        for c in (alice, bob, carol):
            c.close_socket()
    assert got == {"alice": ["for alice", marker],
                   "bob": ["for bob", marker],
                   "carol": [marker]}
    assert log_ids(r, "alice") == [sent[0]["id"]]
    assert log_ids(r, "bob") == [sent[1]["id"]]


def test_a_key_given_twice_is_a_bad_line(redis, r):
    batch = "\n".join([
        '{"target_user":"alice","content":"first"}',
        '{"target_user":"alice","content":"shown","content":"sent"}',
        '{"target_user":"alice","target_user":"bob","content":"x"}',
        '{"target_user":"alice","content":"last"}',
    ]) + "\n"
    p = send(redis, "--batch", "--json", input=batch)
    assert p.returncode == 65
    err = stderr_lines(p)
    assert [e.split(":")[1].strip() for e in err] == ["line 2", "line 3"]
    assert all("duplicate" in e for e in err), err
    assert '"content"' in err[0] and '"target_user"' in err[1]
    sent = [json.loads(x) for x in p.stdout.decode().splitlines()]
    assert [m["content"] for m in sent] == ["first", "last"]
    assert log_ids(r, "alice") == [m["id"] for m in sent]
    assert log_ids(r, "bob") == []


def test_broadcast_only_when_the_line_says_so(redis, ws_port, r):
    alice, bob = client(ws_port, "alice"), client(ws_port, "bob")
    try:
        p = send(redis, "--batch", input='{"content":"to nobody"}\n')
        assert p.returncode == 65
        assert stderr_lines(p) == [
            'notify-send: line 1: no "target_user": give one, or '
            '"broadcast": true to send to everyone']
        p = send(redis, "--batch",
                 input='{"broadcast":true,"content":"to everyone"}\n')
        assert p.returncode == 0, p.stderr
        # The refused line would have been published first.
        got = [contents_until(c, "to everyone") for c in (alice, bob)]
    finally:
        alice.close_socket()
        bob.close_socket()
    assert got == [["to everyone"], ["to everyone"]]
    assert r.command("KEYS", "*offline*") == []


@pytest.mark.parametrize("line,reason", [
    ('{"broadcast":false,"content":"x"}',
     '"broadcast" must be true (to send to one user, give "target_user" '
     'instead)'),
    ('{"target_user":"alice","broadcast":true,"content":"x"}',
     'give "target_user" or "broadcast": true, not both'),
    ('{"target_users":["alice"],"content":"x"}',
     '"target_users" is not accepted in a request line (give one '
     '"target_user" per line)'),
])
def test_the_target_of_a_line_is_exactly_one(redis, r, line, reason):
    p = send(redis, "--batch", input=line + "\n")
    assert p.returncode == 65
    assert stderr_lines(p) == [f"notify-send: line 1: {reason}"]
    assert r.command("DBSIZE") == 0


def test_an_empty_message_from_the_flags_is_65_and_not_stored(redis, r):
    prefix = "strict:"
    sub = Subscriber(redis, f"{prefix}notifications")
    try:
        empty = run("notify-send", "--redis", redis.url, "--redis-prefix",
                    prefix, "-u", "demo", input=b"")
        blank = run("notify-send", "--redis", redis.url, "--redis-prefix",
                    prefix, "-u", "demo", "")
        words = run("notify-send", "--redis", redis.url, "--redis-prefix",
                    prefix, "-b", "after")
        first = sub.message()
    finally:
        sub.close()
    for p in (empty, blank):
        assert p.returncode == 65
        assert stderr_lines(p) == [
            'notify-send: MESSAGE: "content" is empty: a notification '
            'needs some text']
        assert p.stdout == b""
    assert words.returncode == 0, words.stderr
    # The first thing published is the good one: the empty ones never were.
    assert json.loads(first)["content"] == "after"
    assert r.command("EXISTS", f"{prefix}offline:{{demo}}") == 0
    assert r.command("DBSIZE") == 0


def test_bad_lines_each_named_and_nothing_of_them_sent(redis, r):
    sub = Subscriber(redis, "notifications")
    batch = "\n".join([
        '{"target_user":"alice","content":"x","colour":"red"}',
        '{"target_user":"alice","content":"x","data":"{\\"k\\":1}"}',
        '{"target_user":"alice","content":""}',
        '{"target_user":"alice","content":"x","data":[1]}',
        '{"target_user":"alice","type":"a","notification_type":"b",'
        '"content":"x"}',
        '{"target_user":"alice","channel":5,"content":"x"}',
        '{"target_user":"alice","Content":"x"}',
        '{"broadcast":true,"content":"marker"}',
    ]) + "\n"
    try:
        p = send(redis, "--batch", input=batch)
        first = sub.message()
    finally:
        sub.close()
    assert p.returncode == 65
    assert stderr_lines(p) == [
        'notify-send: line 1: unknown key "colour"',
        'notify-send: line 2: "data" must be a JSON object (or null)',
        'notify-send: line 3: "content" is empty: a notification needs '
        'some text',
        'notify-send: line 4: "data" must be a JSON object (or null)',
        'notify-send: line 5: give "notification_type" or its alias '
        '"type", not both',
        'notify-send: line 6: "channel" must be a string',
        'notify-send: line 7: unknown key "Content" (did you mean '
        '"content"?)',
    ]
    assert json.loads(first)["content"] == "marker"
    assert r.command("DBSIZE") == 0


def test_a_long_key_with_control_bytes_is_shown_cut_and_escaped(redis, r):
    key = "\x1b[2J" + "k" * 100
    p = send(redis, "--batch",
             input=json.dumps({"target_user": "alice", key: 1,
                               "content": "x"}) + "\n")
    assert p.returncode == 65
    err = p.stderr.decode()
    assert "\x1b" not in err
    # 40 bytes of the key as shown: the escape's 9, then 31 of the k.
    assert err == ('notify-send: line 1: unknown key "\\u001B[2J' +
                   "k" * 31 + '..."\n')
    assert r.command("DBSIZE") == 0
