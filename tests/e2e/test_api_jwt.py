"""notifyd-api's second kind of credential: a JWT that carries the
configured scope (tokens minted with python3-jwt, keys made with openssl)."""
import base64
import hashlib
import hmac
import json
import signal
import subprocess
import time

import jwt  # python3-jwt

from apiutil import KEY_A, start_api

SECRET = "api-jwt-e2e-secret-not-for-production"
SCOPE = "notifications:send"


def mint(secret=SECRET, alg="HS256", ttl=300, **claims):
    now = int(time.time())
    body = {"sub": "billing", "iat": now, "exp": now + ttl}
    body.update(claims)
    return jwt.encode(body, secret, algorithm=alg)


def start(daemons, redis, tmp_path, *extra, keys=True):
    """notifyd-api taking JWTs signed with SECRET, and API keys too unless
    keys is False."""
    secret = tmp_path / "jwt.secret"
    secret.write_text(SECRET + "\n")
    args = ["--jwt-secret-file", str(secret), *extra]
    if keys:
        return start_api(daemons, redis, tmp_path, *args)
    return _start_jwt_only(daemons, redis, tmp_path, *args)


def _start_jwt_only(daemons, redis, tmp_path, *args):
    from apiutil import Api
    from conftest import free_port
    port = free_port()
    d = daemons("notifyd-api", "--listen", f"127.0.0.1:{port}", "--redis",
                redis.url, *args)
    return Api(d, port)


def send(api, token, user="alice"):
    return api.send({"target_user": user, "content": "x"}, key=token)


def test_jwt_with_scope_is_accepted_beside_api_keys(redis, daemons, tmp_path):
    api = start(daemons, redis, tmp_path)
    for scope in [SCOPE, f"profile {SCOPE} other", [SCOPE, "x"]]:
        r = send(api, mint(scope=scope))
        assert r.status == 200, (scope, r.body)
    assert send(api, mint(scp=[SCOPE])).status == 200
    assert send(api, KEY_A).status == 200
    assert redis.cli("HGET", "offline:{alice}", "seq").strip() == "5"


def test_jwt_only_configuration(redis, daemons, tmp_path):
    api = start(daemons, redis, tmp_path, keys=False)
    assert send(api, mint(scope=SCOPE)).status == 200
    assert send(api, KEY_A).status == 401
    r = api.get("/api/notifications/online-count", key=mint(scope=SCOPE))
    assert r.status == 200


def test_jwt_without_the_scope_is_403(redis, daemons, tmp_path):
    api = start(daemons, redis, tmp_path)
    for claims in [{}, {"scope": "notifications:read"},
                   {"scope": "notifications:send2"}, {"scope": ["other"]},
                   {"scope": 5}]:
        r = send(api, mint(**claims))
        assert r.status == 403, (claims, r.body)
        assert r.json["status"] == "error"
        assert "insufficient_scope" in r.header("WWW-Authenticate")
    assert redis.cli("KEYS", "*").strip() == ""


def b64(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()) \
        .rstrip(b"=").decode()


def test_bad_jwts_are_401(redis, daemons, tmp_path):
    api = start(daemons, redis, tmp_path)
    good = mint(scope=SCOPE)
    head, payload, sig = good.split(".")
    forged_payload = b64({"sub": "billing", "scope": SCOPE,
                          "exp": int(time.time()) + 300, "admin": True})
    for token in [
        mint(secret="another-secret-entirely-0123456789", scope=SCOPE),
        mint(ttl=-3600, scope=SCOPE),
        mint(sub="bad user", scope=SCOPE),
        b64({"alg": "none", "typ": "JWT"}) + "." + payload + ".",
        f"{head}.{forged_payload}.{sig}",
        good[:-2],
    ]:
        r = send(api, token)
        assert r.status == 401, (token, r.body)
    assert redis.cli("KEYS", "*").strip() == ""


def test_jwt_rate_limit_is_per_subject(redis, daemons, tmp_path):
    api = start(daemons, redis, tmp_path, "--rate-limit", "1/m",
                "--rate-burst", "1")
    a, b = mint(sub="svc-a", scope=SCOPE), mint(sub="svc-b", scope=SCOPE)
    assert send(api, a).status == 200
    r = send(api, a)
    assert r.status == 429 and int(r.header("Retry-After")) >= 1
    # A fresh token of the same subject shares the bucket...
    assert send(api, mint(sub="svc-a", scope=SCOPE, jti="2")).status == 429
    # ...another subject has its own.
    assert send(api, b).status == 200


def test_custom_scope_and_rs256(redis, daemons, tmp_path):
    priv, pub = tmp_path / "rsa.pem", tmp_path / "rsa.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", str(priv)], check=True,
                   capture_output=True, timeout=30)
    subprocess.run(["openssl", "pkey", "-in", str(priv), "-pubout", "-out",
                    str(pub)], check=True, capture_output=True, timeout=30)
    api = start_api(daemons, redis, tmp_path, "--jwt-public-key", str(pub),
                    "--jwt-alg", "RS256", "--jwt-scope", "notify")
    key = priv.read_text()
    assert send(api, mint(secret=key, alg="RS256", scope="notify")).status \
        == 200
    assert send(api, mint(secret=key, alg="RS256", scope=SCOPE)).status == 403
    # HS256 signed with the public key as the secret (by hand: PyJWT
    # refuses to): the algorithm is pinned, so this is refused.
    signing = b64({"alg": "HS256", "typ": "JWT"}) + "." + b64({
        "sub": "billing", "scope": "notify", "exp": int(time.time()) + 300})
    mac = hmac.new(pub.read_bytes(), signing.encode(), hashlib.sha256)
    forged = signing + "." + base64.urlsafe_b64encode(mac.digest()) \
        .rstrip(b"=").decode()
    assert send(api, forged).status == 401


def test_sighup_reloads_the_jwt_secret(redis, daemons, tmp_path):
    api = start(daemons, redis, tmp_path)
    old = mint(scope=SCOPE)
    new_secret = "rotated-secret-for-the-api-0123456789"
    (tmp_path / "jwt.secret").write_text(new_secret + "\n")
    api.daemon.signal(signal.SIGHUP)
    new = mint(secret=new_secret, scope=SCOPE)
    deadline = time.monotonic() + 5
    while send(api, new).status != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert send(api, old).status == 401
    assert send(api, KEY_A).status == 200
