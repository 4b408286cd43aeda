"""Token lifetime and key strength, end to end: notifyd-ws and notifyd-api
refuse a token without exp unless --require-exp no, --max-token-age
bounds both a token's age and the lifetime it was minted with, and a key
too weak for its algorithm stops the daemon at startup with exit 78."""
import subprocess
import time

import jwt  # python3-jwt

from apiutil import Api
from conftest import free_port, run
from wsproto import (SECRET, arun, mint, offline_message, start_ws,
                     store_offline, ws_url)
from test_ws_auth import assert_refused, first_event

API_SECRET = "api-lifetime-e2e-secret-not-for-production"
SCOPE = "notifications:send"


def assert_accepted(port, token, redis, user="alice"):
    """The positive control of assert_refused: the waiting message comes."""
    store_offline(redis, offline_message(user, content="for a good token"))
    ev = arun(first_event(ws_url(port, token)))
    assert ev[0] == "message", ev


def test_ws_refuses_a_token_without_exp_by_default(redis, daemons, keys):
    _, port = start_ws(daemons, redis, keys)
    assert_refused(port, mint(sub="alice", ttl=None), redis)
    redis.cli("DEL", "offline:{alice}")
    assert_accepted(port, mint(sub="alice"), redis)


def test_ws_accepts_a_token_without_exp_with_require_exp_no(redis, daemons,
                                                            keys):
    _, port = start_ws(daemons, redis, keys, "--require-exp", "no")
    assert_accepted(port, mint(sub="alice", ttl=None), redis)


def test_ws_max_token_age_refuses_old_and_long_lived_tokens(redis, daemons,
                                                            keys):
    """--max-token-age 1h: a token issued 2 h ago (still unexpired) and one
    minted to live 2 h are refused; one minted for 1 h is accepted."""
    _, port = start_ws(daemons, redis, keys, "--max-token-age", "1h")
    now = int(time.time())
    assert_refused(port, mint(sub="alice", iat=now - 7200, exp=now + 600),
                   redis)
    redis.cli("DEL", "offline:{alice}")
    assert_refused(port, mint(sub="alice", ttl=7200), redis)
    redis.cli("DEL", "offline:{alice}")
    no_iat = jwt.encode({"sub": "alice", "exp": now + 600}, SECRET,
                        algorithm="HS256")
    assert_refused(port, no_iat, redis)
    redis.cli("DEL", "offline:{alice}")
    assert_accepted(port, mint(sub="alice", ttl=3600), redis)


def test_ws_max_token_age_from_the_environment(redis, daemons, keys):
    _, port = start_ws(daemons, redis, keys,
                       env={"NOTIFYD_JWT_MAX_TOKEN_AGE": "1h"})
    assert_refused(port, mint(sub="alice", ttl=7200), redis)


def _start_api(daemons, redis, tmp_path, *extra):
    secret = tmp_path / "jwt.secret"
    secret.write_text(API_SECRET + "\n")
    port = free_port()
    d = daemons("notifyd-api", "--listen", f"127.0.0.1:{port}", "--redis",
                redis.url, "--jwt-secret-file", str(secret), *extra)
    return Api(d, port)


def _api_send(api, claims):
    token = jwt.encode({"sub": "billing", "scope": SCOPE, **claims},
                       API_SECRET, algorithm="HS256")
    return api.send({"target_user": "alice", "content": "x"}, key=token)


def test_api_refuses_a_jwt_without_exp_with_401(redis, daemons, tmp_path):
    api = _start_api(daemons, redis, tmp_path)
    now = int(time.time())
    r = _api_send(api, {"iat": now})
    assert r.status == 401, r.body
    assert redis.cli("KEYS", "*").strip() == ""
    assert _api_send(api, {"iat": now, "exp": now + 300}).status == 200


def test_api_require_exp_no_and_max_token_age(redis, daemons, tmp_path):
    api = _start_api(daemons, redis, tmp_path, "--require-exp", "no",
                     "--max-token-age", "1h")
    now = int(time.time())
    assert _api_send(api, {"iat": now}).status == 200
    assert _api_send(api, {"iat": now - 7200}).status == 401
    assert _api_send(api, {"iat": now, "exp": now + 7200}).status == 401
    assert _api_send(api, {}).status == 401     # no iat


def _one_line_78(prog, *args):
    p = run(prog, "--listen", f"127.0.0.1:{free_port()}",
            "--redis", "redis://127.0.0.1:1", *args, timeout=10)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 78, (p.returncode, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    return lines[0]


def test_short_secret_stops_both_daemons(tmp_path):
    short = tmp_path / "short.secret"
    short.write_text("short\n")
    for prog in ("notifyd-ws", "notifyd-api"):
        line = _one_line_78(prog, "--jwt-secret-file", str(short))
        assert str(short) in line, line
        assert "5 bytes" in line and "32" in line, line
    # The hint of the reason makes a secret that is accepted.
    good = tmp_path / "good.secret"
    subprocess.run(f"head -c 32 /dev/urandom | base64 -w0 > {good}",
                   shell=True, check=True, timeout=10)
    p = run("notifyd-ws", "--jwt-secret-file", str(good), "--issue-token",
            "alice")
    assert p.returncode == 0, p.stderr


def test_es256_daemon_refuses_a_p384_key(tmp_path):
    priv, pub = tmp_path / "p384.pem", tmp_path / "p384.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-384", "-out", str(priv)],
                   check=True, capture_output=True, timeout=30)
    subprocess.run(["openssl", "pkey", "-in", str(priv), "-pubout", "-out",
                    str(pub)], check=True, capture_output=True, timeout=30)
    for prog in ("notifyd-ws", "notifyd-api"):
        line = _one_line_78(prog, "--jwt-alg", "ES256", "--jwt-public-key",
                            str(pub))
        assert str(pub) in line and "P-256" in line, line
    # A private key is named as such.
    line = _one_line_78("notifyd-ws", "--jwt-alg", "ES384",
                        "--jwt-public-key", str(priv))
    assert "private key" in line, line
