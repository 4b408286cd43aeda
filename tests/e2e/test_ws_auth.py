"""notifyd-ws authentication, end to end.

The real daemon, a private redis-server, and independent clients:
python3-websockets for well-formed connections, tokens minted with
python3-jwt (or by hand for alg "none" and the HS/RS key confusion).

Every refused token must end the same way as in the seed: the handshake
completes, the server closes with 4001 "authentication failed", and the
user's waiting messages are neither delivered nor marked read.
"""
import asyncio
import json
import signal
import time

import pytest
import websockets

from conftest import free_port, run
from wsproto import (SECRET, Keys, RawWS, arun, mint, mint_hs_with_key_text,
                     mint_none, log_key, offline_message, read_mark,
                     start_ws, store_offline, wait_until, ws_url)


async def first_event(url, subprotocols=None, timeout=5):
    """Connect and wait for the first message or the close: returns
    ("message", text), ("closed", code, reason), or ("open",) when neither
    came within timeout."""
    async with websockets.connect(url, subprotocols=subprotocols,
                                  open_timeout=5, close_timeout=2) as ws:
        try:
            msg = await asyncio.wait_for(ws.recv(), timeout)
            return ("message", msg)
        except websockets.ConnectionClosed:
            return ("closed", ws.close_code, ws.close_reason)
        except asyncio.TimeoutError:
            return ("open",)


def assert_refused(port, token, redis, user="alice", subprotocols=None):
    """The token is refused with 4001, nothing is delivered though a
    message waits for the user, and it is not marked read."""
    msg = store_offline(redis, offline_message(user, content="must not leak"))
    url = ws_url(port, token) if subprotocols is None else ws_url(port)
    ev = arun(first_event(url, subprotocols))
    assert ev[0] == "closed", f"a refused client received {ev!r}"
    assert ev[1] == 4001, ev
    assert ev[2] == "authentication failed", ev
    assert read_mark(redis, user) < msg["seq"]


def healthy_client(port, user="bystander"):
    ws = RawWS(port, token=mint(sub=user))
    assert ws.status == 101
    ws.ping_ok()
    return ws


# --- what is accepted ------------------------------------------------------

def test_valid_hs256_token_gets_waiting_offline_message(redis, daemons, keys):
    """Positive control for every refusal below: a good token (signed with
    the secret file minus its trailing newline) receives the message that
    waits in alice's log, and it is marked read once written."""
    _, port = start_ws(daemons, redis, keys)
    msg = store_offline(redis, offline_message("alice", content="hello alice"))
    ev = arun(first_event(ws_url(port, mint(sub="alice"))))
    assert ev[0] == "message", ev
    assert json.loads(ev[1]) == msg
    wait_until(lambda: read_mark(redis, "alice") == msg["seq"],
               what="the delivered message to be marked read")


def test_token_in_subprotocol_header_is_accepted(redis, daemons, keys):
    """Sec-WebSocket-Protocol: bearer, TOKEN authenticates, and the server
    selects the "bearer" subprotocol (never echoes the token)."""
    _, port = start_ws(daemons, redis, keys)
    msg = store_offline(redis, offline_message("alice",
                                               content="via subprotocol"))

    async def go():
        async with websockets.connect(
                ws_url(port), subprotocols=["bearer", mint(sub="alice")],
                open_timeout=5) as ws:
            assert ws.subprotocol == "bearer"
            return json.loads(await asyncio.wait_for(ws.recv(), 5))

    assert arun(go()) == msg


def test_token_in_subprotocol_header_refused_when_bad(redis, daemons, keys):
    """A bad token in the subprotocol header is refused like one in the URL."""
    _, port = start_ws(daemons, redis, keys)
    assert_refused(port, None, redis,
                   subprotocols=["bearer", mint(key="wrong", sub="alice")])


def test_leeway_accepts_recently_expired_token(redis, daemons, keys):
    """--jwt-leeway (default 30s) tolerates clock skew: a token that expired
    5 s ago is still accepted..."""
    _, port = start_ws(daemons, redis, keys)
    ev = arun(first_event(ws_url(port, mint(sub="alice", ttl=-5)), timeout=0.5))
    assert ev == ("open",), ev


def test_zero_leeway_refuses_recently_expired_token(redis, daemons, keys):
    """...and with --jwt-leeway 0s the same token is refused."""
    _, port = start_ws(daemons, redis, keys, "--jwt-leeway", "0s")
    assert_refused(port, mint(sub="alice", ttl=-5), redis)


def test_issuer_and_audience_enforced_when_configured(redis, daemons, keys):
    """--jwt-issuer/--jwt-audience: matching tokens pass (aud may be a
    list), others get 4001."""
    _, port = start_ws(daemons, redis, keys, "--jwt-issuer", "https://auth.test",
                       "--jwt-audience", "notifyd")
    good = mint(sub="alice", iss="https://auth.test", aud=["x", "notifyd"])
    store_offline(redis, offline_message("alice", content="for the right aud"))
    ev = arun(first_event(ws_url(port, good)))
    assert ev[0] == "message", ev
    assert_refused(port, mint(sub="alice", iss="https://evil.test",
                              aud="notifyd"), redis)
    redis.cli("DEL", log_key("alice"))
    assert_refused(port, mint(sub="alice", iss="https://auth.test",
                              aud="other"), redis)


# --- what is refused (HS256 configured) ------------------------------------

BAD_HS_TOKENS = {
    "missing_token": lambda: None,
    "empty_token": lambda: "",
    "garbage_token": lambda: "this-is-not-a-jwt",
    "three_garbage_parts": lambda: "abc.def.ghi",
    "wrong_key": lambda: mint(key="not-the-secret-0123456789abcdef-0123456789", sub="alice"),
    # The file holds SECRET + "\n"; only the newline is stripped.
    "secret_with_newline_kept": lambda: mint(key=SECRET + "\n", sub="alice"),
    "alg_none": lambda: mint_none(sub="alice"),
    "expired": lambda: mint(sub="alice", ttl=-3600),
    "nbf_in_future": lambda: mint(sub="alice", nbf=int(time.time()) + 3600),
    "wrong_hs_alg_hs512": lambda: mint(alg="HS512", sub="alice"),
    "missing_sub": lambda: mint(sub=None),
    "non_string_sub": lambda: mint(sub=42),
    "invalid_sub_chars": lambda: mint(sub="al ice/../x"),
    "empty_sub": lambda: mint(sub=""),
    "overlong_sub": lambda: mint(sub="a" * 129),
}


@pytest.mark.parametrize("case", list(BAD_HS_TOKENS))
def test_bad_token_closed_4001_and_nothing_delivered(redis, daemons, keys, case):
    """Each refused token: close 4001, the offline message is neither sent
    nor removed, and another connected client is unaffected."""
    _, port = start_ws(daemons, redis, keys)
    bystander = healthy_client(port)
    assert_refused(port, BAD_HS_TOKENS[case](), redis)
    bystander.ping_ok()
    bystander.close_socket()


def test_auth_failure_is_logged_without_the_token(redis, daemons, keys):
    """The refusal reason is logged, but never the token (which would let
    anyone with log access replay it)."""
    d, port = start_ws(daemons, redis, keys, "--log-level", "debug")
    bad = mint(key="wrong", sub="alice")
    good = mint(sub="alice")
    assert_refused(port, bad, redis)
    arun(first_event(ws_url(port, good), timeout=0.5))
    d.stop()
    err = d.stderr()
    sig_bad, sig_good = bad.rsplit(".", 1)[1], good.rsplit(".", 1)[1]
    for secret in (bad, good, sig_bad, sig_good, bad.split(".")[1]):
        assert secret not in err, "a token leaked into the log"
    assert "auth" in err.lower(), "the refusal is not logged at all"


# --- RS256 / ES256 ---------------------------------------------------------

def test_rs256_token_accepted_end_to_end(redis, daemons, keys):
    """RS256 with a PEM public key: a token signed with the private key
    (by PyJWT) receives the waiting message."""
    priv, pub, priv_pem, _ = keys.rsa()
    _, port = start_ws(daemons, redis, keys, alg="RS256")
    msg = store_offline(redis, offline_message("alice", content="rs256"))
    ev = arun(first_event(ws_url(port, mint(key=priv_pem, alg="RS256"))))
    assert ev == ("message", ev[1]) and json.loads(ev[1]) == msg


def test_es256_token_accepted_end_to_end(redis, daemons, keys):
    """ES256 (P-256) interoperates with PyJWT's JOSE signature format."""
    priv, pub, priv_pem, _ = keys.ec()
    _, port = start_ws(daemons, redis, keys, alg="ES256")
    msg = store_offline(redis, offline_message("alice", content="es256"))
    ev = arun(first_event(ws_url(port, mint(key=priv_pem, alg="ES256"))))
    assert ev[0] == "message" and json.loads(ev[1]) == msg, ev


def test_rs256_refuses_hs256_signed_with_public_key(redis, daemons, keys):
    """Key confusion: with RS256 configured, an HS256 token whose HMAC key
    is the server's public key text (which attackers can read) is refused."""
    _, pub, _, pub_pem = keys.rsa()
    _, port = start_ws(daemons, redis, keys, alg="RS256")
    assert_refused(port, mint_hs_with_key_text(pub_pem, sub="alice"), redis)
    # The same attack with the key text minus its newline.
    redis.cli("DEL", log_key("alice"))
    assert_refused(port, mint_hs_with_key_text(pub_pem.rstrip("\n"),
                                               sub="alice"), redis)


def test_es256_refuses_hs256_signed_with_public_key(redis, daemons, keys):
    """The same key confusion against an ES256 configuration."""
    pub_pem = keys.ec()[3]
    _, port = start_ws(daemons, redis, keys, alg="ES256")
    assert_refused(port, mint_hs_with_key_text(pub_pem, sub="alice"), redis)


def test_rs256_refuses_other_key_and_alg_none(redis, daemons, keys):
    """RS256: a token from another private key, an ES256 token, and an
    unsigned one are all refused."""
    _, port = start_ws(daemons, redis, keys, alg="RS256")
    ec_priv_pem = keys.ec()[2]
    other = Keys(keys.dir, name="other")
    assert_refused(port, mint(key=other.rsa()[2], alg="RS256"), redis)
    redis.cli("DEL", log_key("alice"))
    assert_refused(port, mint(key=ec_priv_pem, alg="ES256"), redis)
    redis.cli("DEL", log_key("alice"))
    assert_refused(port, mint_none(), redis)


# --- startup refusals --------------------------------------------------------

def _refuses_to_start(redis, *args, env=None, codes=(78,)):
    p = run("notifyd-ws", "--listen", f"127.0.0.1:{free_port()}",
            "--redis", redis.url,
            *args, env=env, timeout=10)
    err = p.stderr.decode(errors="replace")
    assert p.returncode in codes, (p.returncode, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    return lines[0]


def test_refuses_to_start_without_a_key(redis, daemons):
    """No --jwt-secret-file and no env fallback: exit 78 with one line."""
    _refuses_to_start(redis)


def test_refuses_to_start_with_empty_secret_file(redis, tmp_path):
    """A zero-length (or newline-only) secret would make every HMAC
    forgeable: refused at startup, exit 78."""
    f = tmp_path / "empty.secret"
    f.write_text("\n")
    _refuses_to_start(redis, "--jwt-secret-file", str(f))


def test_refuses_to_start_with_missing_key_file(redis, tmp_path):
    _refuses_to_start(redis, "--jwt-secret-file", str(tmp_path / "nope"))


def test_refuses_to_start_rs256_without_public_key(redis, keys):
    """RS256 needs --jwt-public-key; a secret file does not do."""
    _refuses_to_start(redis, "--jwt-alg", "RS256")


def test_refuses_to_start_rs256_with_an_ec_key(redis, keys):
    """A public key that does not suit the algorithm is a config error."""
    _refuses_to_start(redis, "--jwt-alg", "RS256", "--jwt-public-key",
                      keys.ec()[1])


@pytest.mark.parametrize("alg", ["none", "XS256", "PS256"])
def test_refuses_unknown_jwt_alg(redis, keys, alg):
    """--jwt-alg is pinned to algorithms we verify: anything else (none
    above all) is a usage/config error, exit 64 or 78."""
    line = _refuses_to_start(redis, "--jwt-alg", alg, "--jwt-secret-file",
                             keys.secret_file, codes=(64, 78))
    # The one line must name the real problem, not a missing key file.
    assert alg in line or "unsupported" in line.lower() or \
        "unknown" in line.lower(), line


def test_secret_file_from_environment(redis, daemons, keys):
    """NOTIFYD_JWT_SECRET_FILE is the fallback of --jwt-secret-file."""
    port = free_port()
    daemons("notifyd-ws", "--listen", f"127.0.0.1:{port}", "--redis", redis.url,
            env={"NOTIFYD_JWT_SECRET_FILE": keys.secret_file})
    msg = store_offline(redis, offline_message("alice", content="env"))
    ev = arun(first_event(ws_url(port, mint(sub="alice"))))
    assert ev[0] == "message" and json.loads(ev[1]) == msg, ev


def test_sighup_reloads_the_secret_and_keeps_it_on_a_bad_file(redis, daemons,
                                                             keys):
    """SIGHUP re-reads the key file: tokens of the new secret work and the
    old ones are refused; a reload from an empty file is refused and the
    current key stays in use."""
    d, port = start_ws(daemons, redis, keys)
    with open(keys.secret_file, "w") as f:
        f.write("rotated-secret-0123456789abcdef-0123456789\n")
    d.signal(signal.SIGHUP)

    def accepted(key):
        ev = arun(first_event(ws_url(port, mint(key=key, sub="alice")),
                              timeout=0.3))
        return ev[0] in ("open", "message")

    wait_until(lambda: accepted("rotated-secret-0123456789abcdef-0123456789"), what="the new key")
    assert_refused(port, mint(sub="alice"), redis)      # the old secret
    with open(keys.secret_file, "w") as f:
        f.write("")
    d.signal(signal.SIGHUP)
    time.sleep(0.3)
    assert d.proc.poll() is None, "a bad reload must not stop the daemon"
    assert accepted("rotated-secret-0123456789abcdef-0123456789")
