"""Private channels of notifyd-ws (notifyd-ws(8), "Private channels"):
a channel whose name starts with --private-prefix (default "private-")
can be subscribed to only with a token whose "channels" claim lists it,
by exact name or by a prefix ending in "*". Others get an error reply
naming the channel and never see its broadcasts; a malformed claim
fails the handshake with 4001 like any bad token.

Clients are raw sockets (wsproto.RawWS); broadcasts go straight to
Redis with PUBLISH (wsutil.send_broadcast), as notify-send -b -c does.
A channel broadcast a client must not see is followed by a broadcast to
everyone: one subscription keeps the order, so when that marker is the
next message, the channel broadcast never came.
"""
import pytest

from wsproto import RawWS, mint, start_ws
from wsutil import send_broadcast


@pytest.fixture
def server(redis, daemons, keys):
    """server(*flags) -> port of a notifyd-ws with those extra flags."""
    def start(*extra):
        return start_ws(daemons, redis, keys, *extra)[1]
    return start


def connect(port, user="alice", **claims):
    ws = RawWS(port, token=mint(sub=user, **claims))
    assert ws.status == 101, ws.status
    ws.ping_ok()
    return ws


def subscribe(ws, channel):
    ws.send_json({"type": "subscribe", "channel": channel})
    return ws.recv_json()


def refused(channel):
    return {"type": "error", "error": "channel not allowed",
            "channel": channel}


def subscribed(channel):
    return {"type": "subscribed", "channel": channel}


def assert_gets(ws, r, channel):
    """A broadcast on channel reaches ws."""
    sent = send_broadcast(r, f"on {channel}", channel=channel)
    got = ws.recv_json()
    assert got["id"] == sent["id"] and got["channel"] == channel, got


def assert_never_gets(ws, r, channel):
    """A broadcast on channel does not reach ws: the broadcast to all
    sent after it is the next message."""
    send_broadcast(r, f"secret on {channel}", channel=channel)
    marker = send_broadcast(r, "marker for all")
    got = ws.recv_json()
    assert got["id"] == marker["id"], f"got {got}, want the marker"


def test_refused_without_the_claim_and_never_delivered(server, r):
    port = server()
    ws = connect(port)
    assert subscribe(ws, "private-x") == refused("private-x")
    assert_never_gets(ws, r, "private-x")
    # Refused, not half-subscribed: the connection goes on as before.
    ws.ping_ok()


def test_an_exact_name_in_the_claim_opens_that_channel_only(server, r):
    port = server()
    ws = connect(port, channels=["private-x"])
    assert subscribe(ws, "private-x") == subscribed("private-x")
    assert_gets(ws, r, "private-x")
    assert subscribe(ws, "private-xy") == refused("private-xy")
    assert subscribe(ws, "private-y") == refused("private-y")
    assert_never_gets(ws, r, "private-y")


def test_a_prefix_star_in_the_claim_opens_every_channel_under_it(server, r):
    port = server()
    ws = connect(port, channels=["private-team-42-*", "private-solo"])
    for channel in ("private-team-42-a", "private-team-42-ops/alerts",
                    "private-solo"):
        assert subscribe(ws, channel) == subscribed(channel)
        assert_gets(ws, r, channel)
    for channel in ("private-team-43-a", "private-team-4", "private-team-42"):
        assert subscribe(ws, channel) == refused(channel)


def test_other_users_without_the_claim_stay_out(server, r):
    """Two users on one channel name: only the token that lists it gets
    its broadcasts."""
    port = server()
    member = connect(port, user="alice", channels=["private-board"])
    outsider = connect(port, user="mallory")
    assert subscribe(member, "private-board") == subscribed("private-board")
    assert subscribe(outsider, "private-board") == refused("private-board")
    send_broadcast(r, "board only", channel="private-board")
    marker = send_broadcast(r, "marker for all")
    assert member.recv_json()["content"] == "board only"
    assert member.recv_json()["id"] == marker["id"]
    assert outsider.recv_json()["id"] == marker["id"]


def test_public_channels_stay_open_to_everyone(server, r):
    port = server()
    for ws in (connect(port, user="bob"),
               connect(port, user="carol", channels=["private-x"])):
        assert subscribe(ws, "news") == subscribed("news")
        assert_gets(ws, r, "news")


def test_private_prefix_flag_changes_the_prefix(server, r):
    port = server("--private-prefix", "staff:")
    ws = connect(port)
    assert subscribe(ws, "staff:pay") == refused("staff:pay")
    assert_never_gets(ws, r, "staff:pay")
    # No longer private under this prefix.
    assert subscribe(ws, "private-x") == subscribed("private-x")
    member = connect(port, channels=["staff:*"])
    assert subscribe(member, "staff:pay") == subscribed("staff:pay")
    assert_gets(member, r, "staff:pay")


def test_private_prefix_from_the_environment(redis, daemons, keys):
    _, port = start_ws(daemons, redis, keys,
                       env={"NOTIFYD_WS_PRIVATE_PREFIX": "vip."})
    ws = connect(port)
    assert subscribe(ws, "vip.lounge") == refused("vip.lounge")
    assert subscribe(ws, "private-x") == subscribed("private-x")


def test_empty_prefix_makes_every_channel_private(server, r):
    port = server("--private-prefix", "")
    ws = connect(port)
    assert subscribe(ws, "news") == refused("news")
    assert_never_gets(ws, r, "news")
    member = connect(port, channels=["news", "*"])
    assert subscribe(member, "news") == subscribed("news")
    assert subscribe(member, "anything") == subscribed("anything")


def test_bad_private_prefix_is_a_config_error(redis, keys):
    from conftest import run
    p = run("notifyd-ws", "--private-prefix", "no spaces",
            "--jwt-secret-file", keys.secret_file, "--redis", redis.url)
    assert p.returncode == 78, p.stderr
    assert b"--private-prefix" in p.stderr


@pytest.mark.parametrize("claim", [
    "private-x",                 # not an array
    None,                        # null
    {"private-x": True},         # an object
    [1],                         # not strings
    ["private-x", ["nested"]],
    [""],                        # empty pattern
    ["bad channel"],             # not a channel name
    ["private-*-x"],             # '*' only at the end
    ["**"],
    ["x" * 130],                 # too long
], ids=["string", "null", "object", "number", "nested", "empty", "space",
        "inner-star", "double-star", "long"])
def test_malformed_channels_claim_fails_with_4001(server, claim):
    port = server()
    ws = RawWS(port, token=mint(channels=claim))
    assert ws.status == 101, ws.status
    assert ws.expect_close() == (4001, "authentication failed")


def test_unsubscribe_and_invalid_names_answer_as_before(server):
    """The refusal is only for private names: an invalid name is still
    "invalid channel", and unsubscribing what was refused is harmless."""
    port = server()
    ws = connect(port)
    assert subscribe(ws, "private x") == {"type": "error",
                                          "error": "invalid channel"}
    ws.send_json({"type": "unsubscribe", "channel": "private-x"})
    assert ws.recv_json() == {"type": "unsubscribed", "channel": "private-x"}
