"""Token expiry in notifyd-ws (notifyd-ws(8), close code 4002): an open
connection does not outlive its token. It is closed with 4002 "token
expired" a little before exp (a tenth of the token's lifetime ahead, at
most 30 s, on a whole second), so that its client fetches a new token
and resumes with since= while nothing is lost.

Clients are raw sockets (wsproto.RawWS); targeted messages go straight
to Redis with the append script of notifyd(7) (wsutil.send_targeted).
"""
import threading
import time

import jwt
import pytest

from wsproto import RawWS, mint, start_ws
from wsutil import Resp, send_targeted


@pytest.fixture
def server(redis, daemons, keys):
    """server(*flags) -> port of a notifyd-ws with those extra flags."""
    def start(*extra):
        return start_ws(daemons, redis, keys, *extra)[1]
    return start


def exp_of(token):
    return jwt.decode(token, options={"verify_signature": False})["exp"]


def connect(port, token, since=None):
    ws = RawWS(port, token=token if since is None else f"{token}&since={since}")
    assert ws.status == 101, ws.status
    return ws


def test_closed_with_4002_before_exp(server):
    port = server()
    token = mint(ttl=3)
    exp = exp_of(token)
    ws = connect(port, token)
    ws.ping_ok()
    code, reason = ws.expect_close(timeout=8)
    closed_at = time.time()
    assert (code, reason) == (4002, "token expired")
    assert closed_at < exp, f"closed {closed_at - exp:.2f}s after exp"


def test_tokens_without_exp_or_with_a_long_one_stay_open(server):
    """With --require-exp no, a token without exp never expires this
    way; one with an hour left is not closed either. The short token
    beside them, closed with 4002, shows the sweep ran past them."""
    port = server("--require-exp", "no")
    forever = connect(port, mint(sub="bob", ttl=None))
    hour = connect(port, mint(sub="carol", ttl=3600))
    short = connect(port, mint(sub="dave", ttl=2))
    for ws in (forever, hour, short):
        ws.ping_ok()
    # Had the sweep that closed it closed them too, their close frames
    # would come before the pongs.
    assert short.expect_close(timeout=8) == (4002, "token expired")
    forever.ping_ok()
    hour.ping_ok()


def test_a_connection_back_with_the_same_token_lasts_until_the_token_ends(
        server):
    """A client that reconnects with its token after the 4002 (no new
    token at hand) is not closed again at once: it may stay until the
    token stops being accepted (exp + --jwt-leeway), then 4002 again,
    and after that the token gets 4001. No reconnect loop."""
    port = server("--jwt-leeway", "1s")
    token = mint(ttl=3)
    exp = exp_of(token)
    first = connect(port, token)
    assert first.expect_close(timeout=8)[0] == 4002
    again = connect(port, token)
    again.ping_ok()
    assert again.expect_close(timeout=8) == (4002, "token expired")
    assert time.time() >= exp, "closed before exp: it could have stayed"
    late = connect(port, token)
    assert late.expect_close() == (4001, "authentication failed")


def test_messages_across_the_close_all_arrive_after_resuming(server, redis):
    """A sender sends numbered messages every 50 ms while the token
    expires; the client, closed with 4002, reconnects at once with a new
    token and since= the last id it got, and ends with every message
    exactly once, in order."""
    port = server()
    count = 60
    sent = []
    stop = threading.Event()

    def sender():
        r = Resp(redis.port)
        try:
            for i in range(count):
                if stop.is_set():
                    return
                sent.append(send_targeted(r, "alice", f"n{i}")["id"])
                time.sleep(0.05)
        finally:
            r.close()

    ws = connect(port, mint(ttl=2))
    ws.ping_ok()
    t = threading.Thread(target=sender, daemon=True)
    t.start()
    got, closes = [], []
    deadline = time.monotonic() + 20
    try:
        while len(got) < count:
            assert time.monotonic() < deadline, f"got {len(got)} of {count}"
            try:
                msg = ws.recv_json(timeout=max(0.1, deadline - time.monotonic()))
            except Exception as e:  # the close frame: reconnect
                code = getattr(e, "code", None)
                assert code == 4002, f"unexpected end: {e!r}"
                closes.append(code)
                ws.close_socket()
                ws = connect(port, mint(ttl=600),
                             since=got[-1] if got else None)
                continue
            if msg.get("type") in ("pong", "resume"):
                assert msg.get("recovered", True) is True, msg
                continue
            got.append(msg["id"])
    finally:
        stop.set()
        t.join(timeout=10)
    assert closes == [4002]
    assert got == sent, "lost, repeated or reordered messages"


def test_max_token_age_ends_a_token_without_exp(server):
    """Under --require-exp no, a token without exp is still refused once
    it is older than --max-token-age: its connection is closed with 4002
    a little before iat + that age, as one with exp is before exp."""
    port = server("--require-exp", "no", "--max-token-age", "6s")
    now = int(time.time())
    ws = connect(port, mint(iat=now, ttl=None))
    ws.ping_ok()
    code, reason = ws.expect_close(timeout=10)
    assert (code, reason) == (4002, "token expired")
    assert time.time() < now + 6 + 1, "closed after iat + max age"
