"""notifyd-api end to end: routes, what lands in Redis, every error status.

Each test starts its own redis-server and notifyd-api and drives them with
http.client (an HTTP client independent of the daemon) and redis-cli or a
raw-socket RESP subscriber.
"""
import json
import re
import time
import uuid

import pytest

from apiutil import (KEY_A, KEY_B, Subscriber, log_entries, log_key,
                     metric_value, start_api)

SEND = "/api/notifications/send"
BROADCAST = "/api/notifications/broadcast"
COUNT = "/api/notifications/online-count"


def is_uuid7(s):
    return uuid.UUID(s).version == 7 and str(uuid.UUID(s)) == s


def stored(redis, user, msg_id, prefix=""):
    """The message with this id in the user's log, found by its i:ID
    field, or None."""
    key = log_key(user, prefix)
    seq = redis.cli("HGET", key, f"i:{msg_id}", raw=True).strip()
    if not seq:
        return None
    return json.loads(redis.cli("HGET", key, f"m:{seq}", raw=True).strip())


# ---- send ---------------------------------------------------------------

def test_send_stores_offline_with_ttl_and_publishes(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path, "--offline-ttl", "1h")
    sub = Subscriber(redis.port, "notifications")
    r = api.send({"target_user": "alice", "notification_type": "order",
                  "content": "shipped \u00e9", "channel": "orders",
                  "data": {"n": 1}})
    assert r.status == 200, r.body
    assert r.header("Content-Type") == "application/json"
    body = r.json
    assert body["status"] == "ok" and body["message"]
    assert is_uuid7(body["id"])
    assert body["seq"] == 1

    msg = stored(redis, "alice", body["id"])
    assert msg["id"] == body["id"] and msg["seq"] == 1
    assert msg["type"] == "order" and msg["content"] == "shipped \u00e9"
    assert msg["target_user"] == "alice" and msg["channel"] == "orders"
    assert msg["data"] == {"n": 1}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z",
                        msg["timestamp"])
    ttl = int(redis.cli("TTL", log_key("alice")))
    assert 3500 < ttl <= 3600
    assert sub.messages(1) == [msg]


def test_send_default_ttl_is_seven_days(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path)
    assert api.send({"target_user": "bob", "content": "x"}).status == 200
    ttl = int(redis.cli("TTL", log_key("bob")))
    assert 7 * 86400 - 60 < ttl <= 7 * 86400


def test_send_target_users_one_message_each_with_own_id(redis, daemons,
                                                        tmp_path):
    api = start_api(daemons, redis, tmp_path)
    sub = Subscriber(redis.port, "notifications")
    users = ["u1", "u2", "u3"]
    r = api.send({"target_users": users, "notification_type": "info",
                  "content": "hello all"})
    assert r.status == 200, r.body
    ids = r.json["ids"]
    assert len(ids) == 3 and len(set(ids)) == 3
    assert all(is_uuid7(i) for i in ids)
    assert r.json["results"] == [{"target_user": u, "id": i, "seq": 1}
                                 for u, i in zip(users, ids)]
    for user, msg_id in zip(users, ids):
        msg = stored(redis, user, msg_id)
        assert msg["target_user"] == user and msg["content"] == "hello all"
        assert len(log_entries(redis, user)) == 1
    published = sub.messages(3)
    assert sorted((m["target_user"], m["id"]) for m in published) == \
        sorted(zip(users, ids))


def test_send_uses_redis_prefix(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path, "--redis-prefix", "nt:")
    sub = Subscriber(redis.port, "nt:notifications")
    r = api.send({"target_user": "carol", "content": "p"})
    assert r.status == 200
    assert stored(redis, "carol", r.json["id"], prefix="nt:")["content"] == "p"
    assert redis.cli("EXISTS", log_key("carol")).strip() == "0"
    assert sub.messages(1)[0]["id"] == r.json["id"]


def test_send_accepts_charset_parameter(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path)
    r = api.send({"target_user": "dave", "content": "x"},
                 ctype="application/json; charset=utf-8")
    assert r.status == 200, r.body


# ---- broadcast ----------------------------------------------------------

def test_broadcast_via_query_parameters(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path)
    sub = Subscriber(redis.port, "notifications")
    r = api.post(BROADCAST + "?notification_type=alert&content=maint%20at%205"
                 "&channel=ops")
    assert r.status == 200, r.body
    assert r.json["status"] == "ok" and is_uuid7(r.json["id"])
    msg = sub.messages(1)[0]
    assert msg["id"] == r.json["id"] and msg["target_user"] is None
    assert msg["type"] == "alert" and msg["content"] == "maint at 5"
    assert msg["channel"] == "ops"
    assert redis.cli("KEYS", "offline:*").strip() == ""


def test_broadcast_query_form_with_json_type_and_empty_body(redis, daemons,
                                                            tmp_path):
    # What an HTTP library sends for the seed's call when it sets a JSON
    # Content-Type by default.
    api = start_api(daemons, redis, tmp_path)
    sub = Subscriber(redis.port, "notifications")
    r = api.post(BROADCAST + "?notification_type=info&content=q", "",
                 ctype="application/json")
    assert r.status == 200, r.body
    assert sub.messages(1)[0]["content"] == "q"


def test_broadcast_via_json_body(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path)
    sub = Subscriber(redis.port, "notifications")
    r = api.post(BROADCAST, {"notification_type": "news", "content": "c",
                             "data": {"k": [1, 2]}})
    assert r.status == 200, r.body
    msg = sub.messages(1)[0]
    assert msg["id"] == r.json["id"] and msg["data"] == {"k": [1, 2]}
    assert msg["channel"] is None and msg["target_user"] is None


@pytest.mark.parametrize("path,body,ctype", [
    (BROADCAST + "?content=only", None, None),
    (BROADCAST, {"target_user": "alice", "content": "x"}, "application/json"),
    (BROADCAST, {"target_users": ["a"], "content": "x"}, "application/json"),
    (BROADCAST + "?notification_type=a&content=b&channel=bad%20name", None,
     None),
])
def test_broadcast_bad_requests_are_400(redis, daemons, tmp_path, path, body,
                                        ctype):
    api = start_api(daemons, redis, tmp_path)
    sub = Subscriber(redis.port, "notifications")
    r = api.post(path, body, ctype=ctype)
    assert r.status == 400, r.body
    assert r.json["status"] == "error" and r.json["error"]
    sub.nothing_within(0.2)


# ---- presence -----------------------------------------------------------

def populate_presence(redis, prefix=""):
    redis.cli("SADD", f"{prefix}presence:instances", "i1", "i2", "gone")
    redis.cli("SADD", f"{prefix}presence:i1", "alice", "bob")
    redis.cli("SADD", f"{prefix}presence:i2", "bob", "carol")
    redis.cli("EXPIRE", f"{prefix}presence:i1", 30)
    redis.cli("EXPIRE", f"{prefix}presence:i2", 30)


def test_online_count_reads_presence_keys(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path, "--redis-prefix", "p:")
    r = api.get(COUNT)
    assert r.status == 200 and r.json == {"online_count": 0}
    populate_presence(redis, "p:")
    r = api.get(COUNT)
    assert r.status == 200 and r.json == {"online_count": 3}, r.body


def test_user_online(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path)
    populate_presence(redis)
    r = api.get("/api/users/carol/online")
    assert r.status == 200 and r.json == {"user": "carol", "online": True}
    r = api.get("/api/users/zed/online")
    assert r.status == 200 and r.json == {"user": "zed", "online": False}
    r = api.get("/api/users/" + "x" * 200 + "/online")
    assert r.status == 400 and r.json["status"] == "error"
    r = api.get("/api/users/a%20b/online")
    assert r.status == 400


# ---- health and metrics -------------------------------------------------

def test_healthz_and_metrics(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path)
    r = api.get("/healthz", key=None)
    assert r.status == 200 and r.json["status"] == "ok"
    api.send({"target_user": "m", "content": "x"})
    api.send({"target_user": "bad user"})
    api.get("/nowhere")
    # A request is counted when it completes, which may be just after its
    # client has read the answer: wait for the last one to show.
    deadline = time.monotonic() + 5
    while True:
        text = api.metrics()
        seen = [metric_value(text, "notifyd_api_requests_total", route=r,
                             status=st) for r, st in
                [("send", "200"), ("send", "400"), ("unknown", "404")]]
        if seen == [1, 1, 1] or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert metric_value(text, "notifyd_api_requests_total",
                        route="send", status="200") == 1
    assert metric_value(text, "notifyd_api_requests_total",
                        route="send", status="400") == 1
    assert metric_value(text, "notifyd_api_requests_total",
                        route="unknown", status="404") == 1
    assert metric_value(text, "notifyd_api_request_duration_seconds_count",
                        route="send") == 2
    assert metric_value(text, "notifyd_api_request_duration_seconds_bucket",
                        route="send", le="+Inf") == 2
    assert "# TYPE notifyd_api_request_duration_seconds histogram" in text
    assert metric_value(text, "notifyd_api_redis_errors_total") == 0


# ---- errors -------------------------------------------------------------

def test_unknown_route_is_404(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path)
    for path in ["/", "/api/notifications", "/api/notifications/sendx",
                 "/api/users/alice", "/api/users/a/b/online"]:
        r = api.get(path)
        assert r.status == 404, path
        assert r.json == {"status": "error", "error": r.json["error"]}


@pytest.mark.parametrize("method,path,allow", [
    ("GET", SEND, "POST"),
    ("PUT", BROADCAST, "POST"),
    ("POST", COUNT, "GET, HEAD"),
    ("DELETE", "/api/users/alice/online", "GET, HEAD"),
    ("POST", "/healthz", "GET, HEAD"),
])
def test_wrong_method_is_405_with_allow(redis, daemons, tmp_path, method,
                                        path, allow):
    api = start_api(daemons, redis, tmp_path)
    r = api.request(method, path)
    assert r.status == 405
    assert r.header("Allow") == allow
    assert r.json["status"] == "error"


@pytest.mark.parametrize("auth", [
    None, "Bearer", "Bearer ", "Basic c3ZjLWE6eA==", "Bearer wrong-key-0123456789",
    "Bearer " + KEY_A[:-1], "Bearer " + KEY_A + "x", KEY_A,
])
def test_bad_credentials_are_401(redis, daemons, tmp_path, auth):
    api = start_api(daemons, redis, tmp_path)
    headers = {"Authorization": auth} if auth is not None else {}
    for method, path in [("POST", SEND), ("POST", BROADCAST + "?content=x&"
                         "notification_type=t"), ("GET", COUNT),
                         ("GET", "/api/users/a/online")]:
        body = {"target_user": "a", "content": "x"} if path == SEND else None
        r = api.request(method, path, body, key=None, headers=headers)
        assert r.status == 401, (path, r.body)
        assert r.json["status"] == "error"
        assert r.header("WWW-Authenticate").startswith("Bearer")
    assert redis.cli("KEYS", "*").strip() == ""


def test_both_keys_work_and_scheme_is_case_insensitive(redis, daemons,
                                                       tmp_path):
    api = start_api(daemons, redis, tmp_path)
    assert api.send({"target_user": "a", "content": "x"}, key=KEY_B).status == 200
    r = api.send({"target_user": "a", "content": "x"}, key=None,
                 headers={"Authorization": "bearer " + KEY_A})
    assert r.status == 200


@pytest.mark.parametrize("ctype", [None, "text/plain",
                                   "application/x-www-form-urlencoded",
                                   "application/jsonx"])
def test_wrong_content_type_is_415(redis, daemons, tmp_path, ctype):
    api = start_api(daemons, redis, tmp_path)
    body = json.dumps({"target_user": "a", "content": "x"})
    r = api.send(body, ctype=ctype)
    assert r.status == 415, r.body
    assert r.json["status"] == "error"
    r = api.post(BROADCAST, json.dumps({"content": "x",
                 "notification_type": "t"}), ctype=ctype)
    assert r.status == 415
    assert redis.cli("KEYS", "*").strip() == ""


@pytest.mark.parametrize("body,needle", [
    ("{not json", "malformed JSON"),
    ("", "empty body"),
    ("[1,2]", "object"),
    ('{"target_user":"a","target_user":"b"}', "duplicate"),
    ({"content": "no target"}, "target_user"),
    ({"target_user": 5}, "target_user"),
    ({"target_user": "a", "content": 5}, "content"),
    ({"target_user": "a", "data": [1]}, "data"),
    ({"target_user": "a", "channel": 1}, "channel"),
    ({"target_user": "a b"}, ""),
    ({"target_user": "x" * 129}, ""),
    ({"target_user": "a", "channel": "bad channel"}, ""),
    ({"target_user": "a", "notification_type": "bad type!"}, ""),
    ({"target_users": "alice"}, "target_users"),
    ({"target_users": []}, "target_users"),
    ({"target_users": ["a", 1]}, "target_users"),
    ({"target_users": ["a", "b c"]}, "target_users"),
    ({"target_users": ["a", "a"], "content": "x"}, "duplicate"),
    ({"target_users": ["a"], "target_user": "b"}, ""),
])
def test_bad_bodies_are_400_and_send_nothing(redis, daemons, tmp_path, body,
                                             needle):
    api = start_api(daemons, redis, tmp_path)
    sub = Subscriber(redis.port, "notifications")
    r = api.send(body)
    assert r.status == 400, r.body
    assert r.json["status"] == "error"
    assert needle in r.json["error"]
    assert redis.cli("KEYS", "*").strip() == ""
    sub.nothing_within(0.1)


def test_content_over_max_content_is_400(redis, daemons, tmp_path):
    api = start_api(daemons, redis, tmp_path, "--max-content", "10")
    assert api.send({"target_user": "a", "content": "x" * 10}).status == 200
    r = api.send({"target_user": "a", "content": "x" * 11})
    assert r.status == 400 and r.json["status"] == "error"
