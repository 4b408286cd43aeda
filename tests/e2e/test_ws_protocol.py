"""notifyd-ws protocol, end to end: the HTTP upgrade handshake, the JSON
client messages, and the RFC 6455 close codes for misbehaving clients.

Well-formed clients are python3-websockets; the malformed ones are raw
sockets (wsproto.RawWS), which send exactly the bytes a test wants. In
every abuse test a second, healthy client is connected first and must
still be served afterwards: one bad client never hurts the others.
"""
import asyncio
import datetime
import json
import socket
import time

import pytest
import websockets

from wsproto import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT,
                     Closed, RawWS, accept_for, arun, frame,
                     http_exchange, mint, read_http_response, start_ws,
                     upgrade_request,
                     wait_closed_by_peer, ws_key, ws_url)


@pytest.fixture
def server(redis, daemons, keys):
    """server(*flags) -> port of a notifyd-ws with those extra flags."""
    def start(*extra):
        return start_ws(daemons, redis, keys, *extra)[1]
    return start


def healthy(port, user="bystander"):
    ws = RawWS(port, token=mint(sub=user))
    assert ws.status == 101, ws.status
    ws.ping_ok()
    return ws


def json_error_body(body):
    doc = json.loads(body.decode())
    assert doc["status"] == "error" and isinstance(doc["error"], str), doc
    return doc


# --- JSON client messages (python3-websockets) -------------------------------

async def _session(port, script, user="alice", **kw):
    async with websockets.connect(ws_url(port, mint(sub=user)),
                                  open_timeout=5, close_timeout=2, **kw) as ws:
        return await script(ws)


async def _ask(ws, obj_or_text):
    await ws.send(obj_or_text if isinstance(obj_or_text, str)
                  else json.dumps(obj_or_text))
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


def test_ping_gets_pong_with_current_iso_timestamp(server):
    """{"type":"ping"} -> {"type":"pong","timestamp": ISO 8601 UTC, now}."""
    port = server()
    reply = arun(_session(port, lambda ws: _ask(ws, {"type": "ping"})))
    assert reply["type"] == "pong", reply
    ts = datetime.datetime.fromisoformat(reply["timestamp"].replace("Z", "+00:00"))
    assert ts.tzinfo is not None and ts.utcoffset() == datetime.timedelta(0)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - ts).total_seconds()) < 5, (now, ts)


def test_subscribe_and_unsubscribe_are_acknowledged(server):
    """subscribe -> subscribed, unsubscribe -> unsubscribed, same channel,
    in order, and the connection stays usable."""
    port = server()

    async def script(ws):
        return [await _ask(ws, {"type": "subscribe", "channel": "news"}),
                await _ask(ws, {"type": "subscribe", "channel": "team/a.b:c@d-e_f"}),
                await _ask(ws, {"type": "unsubscribe", "channel": "news"}),
                await _ask(ws, {"type": "ping"})]

    r = arun(_session(port, script))
    assert r[0] == {"type": "subscribed", "channel": "news"}
    assert r[1] == {"type": "subscribed", "channel": "team/a.b:c@d-e_f"}
    assert r[2] == {"type": "unsubscribed", "channel": "news"}
    assert r[3]["type"] == "pong"


BAD_CLIENT_MESSAGES = {
    "not_json": "{this is not json",
    "json_array": "[1, 2, 3]",
    "json_string": '"ping"',
    "missing_type": '{"channel": "news"}',
    "type_not_string": '{"type": 7}',
    "unknown_type": '{"type": "launch-missiles"}',
    "subscribe_without_channel": '{"type": "subscribe"}',
    "subscribe_channel_not_string": '{"type": "subscribe", "channel": 5}',
    "subscribe_bad_channel_chars": '{"type": "subscribe", "channel": "no spaces!"}',
    "subscribe_empty_channel": '{"type": "subscribe", "channel": ""}',
    "subscribe_overlong_channel": json.dumps({"type": "subscribe", "channel": "c" * 129}),
    "unsubscribe_bad_channel": '{"type": "unsubscribe", "channel": "a b"}',
}


@pytest.mark.parametrize("case", list(BAD_CLIENT_MESSAGES))
def test_bad_client_message_gets_error_and_connection_lives(server, case):
    """Invalid JSON, unknown types, bad channels: an {"type":"error"}
    reply with a reason, and the same connection still answers a ping."""
    port = server()

    async def script(ws):
        err = await _ask(ws, BAD_CLIENT_MESSAGES[case])
        pong = await _ask(ws, {"type": "ping"})
        return err, pong

    err, pong = arun(_session(port, script))
    assert err["type"] == "error", err
    assert isinstance(err.get("error"), str) and err["error"], err
    assert pong["type"] == "pong"


def test_too_many_channels_is_an_error_and_the_limit_counts(server):
    """--max-channels 2: a third subscribe gets an error; after an
    unsubscribe there is room again; re-subscribing is not a new channel."""
    port = server("--max-channels", "2")

    async def script(ws):
        out = [await _ask(ws, {"type": "subscribe", "channel": "a"}),
               await _ask(ws, {"type": "subscribe", "channel": "b"}),
               await _ask(ws, {"type": "subscribe", "channel": "c"})]
        out.append(await _ask(ws, {"type": "ping"}))
        out.append(await _ask(ws, {"type": "unsubscribe", "channel": "a"}))
        out.append(await _ask(ws, {"type": "subscribe", "channel": "c"}))
        out.append(await _ask(ws, {"type": "subscribe", "channel": "c"}))
        return out

    r = arun(_session(port, script))
    assert r[0]["type"] == "subscribed" and r[1]["type"] == "subscribed"
    assert r[2]["type"] == "error", r[2]
    assert r[3]["type"] == "pong"
    assert r[4] == {"type": "unsubscribed", "channel": "a"}
    assert r[5] == {"type": "subscribed", "channel": "c"}
    assert r[6] == {"type": "subscribed", "channel": "c"}, \
        "subscribing twice to one channel must not count twice"


def test_fragmented_text_message_is_reassembled(server):
    """A ping split over three frames (text + continuations) is one message."""
    port = server()
    ws = RawWS(port, token=mint(sub="alice"))
    assert ws.status == 101
    ws.send(frame(OP_TEXT, '{"ty', fin=False) + frame(OP_CONT, 'pe":"pi', fin=False)
            + frame(OP_CONT, 'ng"}'))
    assert ws.recv_json()["type"] == "pong"
    ws.close_socket()


def test_websocket_ping_frame_gets_pong_with_same_payload(server):
    """RFC 6455 5.5.3: a ping frame is answered by a pong echoing it."""
    port = server()
    ws = RawWS(port, token=mint(sub="alice"))
    ws.send(frame(OP_PING, b"hello-42"))
    fin, op, payload = ws.recv_frame()
    assert (op, payload) == (OP_PONG, b"hello-42")
    ws.close_socket()


def test_client_close_is_answered_with_close(server):
    """The closing handshake: the server echoes the client's close."""
    port = server()
    ws = RawWS(port, token=mint(sub="alice"))
    ws.send(frame(OP_CLOSE, b"\x03\xe8bye"))
    code, _ = ws.expect_close()
    assert code == 1000
    assert wait_closed_by_peer(ws.sock, 5) < 5
    ws.close_socket()


# --- close codes for misbehaving clients (raw sockets) -----------------------

def _abuse(port, payload_bytes, want_code, user="mallory"):
    bystander = healthy(port)
    bad = RawWS(port, token=mint(sub=user))
    assert bad.status == 101
    bad.ping_ok()
    bad.send(payload_bytes)
    code, _ = bad.expect_close()
    bad.close_socket()
    assert code == want_code
    bystander.ping_ok()
    bystander.close_socket()


def test_binary_frame_closes_1003(server):
    """The protocol is JSON text: a binary frame is refused with 1003."""
    _abuse(server(), frame(OP_BINARY, b"\x00\x01\x02"), 1003)


def test_binary_frame_from_websockets_client_closes_1003(server):
    """The same with an independent client library."""
    port = server()

    async def script(ws):
        await ws.send(b"\x00binary")
        try:
            await asyncio.wait_for(ws.recv(), 5)
        except websockets.ConnectionClosed:
            pass
        return ws.close_code

    assert arun(_session(port, script)) == 1003


def test_invalid_utf8_text_closes_1007(server):
    """RFC 6455 8.1: a text message that is not UTF-8 fails with 1007."""
    _abuse(server(), frame(OP_TEXT, b'{"type":"\xff\xfe"}'), 1007)


def test_invalid_utf8_across_fragments_closes_1007(server):
    """An overlong encoding split over two fragments is still caught."""
    _abuse(server(), frame(OP_TEXT, b'{"type":"\xc0', fin=False)
           + frame(OP_CONT, b'\xaf"}'), 1007)


def test_unmasked_client_frame_closes_1002(server):
    """RFC 6455 5.1: a client frame without a mask is a protocol error."""
    _abuse(server(), frame(OP_TEXT, '{"type":"ping"}', mask=False), 1002)


def test_reserved_bits_close_1002(server):
    """RSV bits without a negotiated extension: protocol error."""
    _abuse(server(), frame(OP_TEXT, '{"type":"ping"}', rsv=4), 1002)


PROTOCOL_ERRORS = {
    "control_frame_over_125_bytes": frame(OP_PING, b"x" * 126),
    "fragmented_control_frame": frame(OP_PING, b"x", fin=False),
    "reserved_opcode_3": frame(3, b"x"),
    "reserved_control_opcode_11": frame(11, b""),
    "continuation_without_start": frame(OP_CONT, b"x"),
    "new_message_inside_fragmented_one": frame(OP_TEXT, '{"type"', fin=False)
    + frame(OP_TEXT, '{"type":"ping"}'),
    "close_with_one_byte_payload": frame(OP_CLOSE, b"\x03"),
    "close_with_reserved_code_1005": frame(OP_CLOSE, b"\x03\xed"),
}


@pytest.mark.parametrize("case", list(PROTOCOL_ERRORS))
def test_protocol_error_closes_1002(server, case):
    """RFC 6455 5.2/5.4/5.5/7.4: framing violations fail the connection
    with 1002, and the server goes on serving others."""
    _abuse(server(), PROTOCOL_ERRORS[case], 1002)


def test_default_max_message_is_64k(server):
    """Without --max-message: 60 KB is handled, 70 KB (64-bit length
    form) gets 1009."""
    port = server()
    ws = RawWS(port, token=mint(sub="alice"))
    ws.send_text(json.dumps({"type": "ping", "pad": "x" * 60000}))
    assert ws.recv_json()["type"] == "pong"
    ws.close_socket()
    _abuse(port, frame(OP_TEXT, json.dumps({"type": "ping", "pad": "x" * 70000})),
           1009)


def test_message_over_max_message_closes_1009(server):
    """--max-message 1k: a 2000-byte text message gets 1009."""
    port = server("--max-message", "1k")
    _abuse(port, frame(OP_TEXT, json.dumps({"type": "ping", "pad": "x" * 2000})),
           1009)


def test_fragmented_message_over_max_message_closes_1009(server):
    """The limit is on the message, not on each frame."""
    port = server("--max-message", "1k")
    chunk = "x" * 600
    _abuse(port, frame(OP_TEXT, '{"type":"ping","pad":"' + chunk, fin=False)
           + frame(OP_CONT, chunk, fin=False) + frame(OP_CONT, '"}'), 1009)


def test_message_under_max_message_is_handled(server):
    """Just under --max-message 1k is fine: the limit is not off by far."""
    port = server("--max-message", "1k")
    ws = RawWS(port, token=mint(sub="alice"))
    msg = json.dumps({"type": "ping", "pad": "x" * 900})
    assert len(msg) < 1024
    ws.send_text(msg)
    assert ws.recv_json()["type"] == "pong"
    ws.close_socket()


def test_idle_connection_pinged_and_dropped_without_pong(server):
    """--ping-interval/--ping-timeout: an idle connection gets a WebSocket
    ping; one that never answers is closed, one that answers is kept."""
    port = server("--ping-interval", "300ms", "--ping-timeout", "400ms")

    async def answering():
        async with websockets.connect(ws_url(port, mint(sub="carol")),
                                      ping_interval=None, open_timeout=5) as ws:
            await asyncio.sleep(1.6)   # the library answers pings itself
            return await _ask(ws, {"type": "ping"})

    mute = RawWS(port, token=mint(sub="mallory"))
    assert mute.status == 101
    start = time.monotonic()
    fin, op, _ = mute.recv_frame(timeout=3)
    assert op == OP_PING, op
    assert arun(answering())["type"] == "pong"
    # never answered: closed (with or without a close frame) in time
    try:
        while True:
            fin, op, _ = mute.recv_frame(timeout=max(0.01, start + 4 - time.monotonic()))
            if op == OP_CLOSE:
                break
    except Closed:
        pass
    assert time.monotonic() - start < 4
    mute.close_socket()


# --- the HTTP upgrade handshake (raw sockets) ------------------------------

def test_handshake_answers_101_with_correct_accept(server):
    """RFC 6455 4.2.2: 101, Upgrade: websocket, Connection: Upgrade, and
    Sec-WebSocket-Accept = base64(SHA-1(key + GUID))."""
    port = server()
    key = ws_key()
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(upgrade_request(port, token=mint(sub="alice"), key=key))
    status, headers, _ = read_http_response(s, want_body=False)
    s.close()
    assert status == 101
    assert headers["upgrade"].lower() == "websocket"
    assert "upgrade" in headers["connection"].lower()
    assert headers["sec-websocket-accept"] == accept_for(key)
    assert "sec-websocket-extensions" not in headers, \
        "no extension is implemented, none may be accepted"


def test_frames_sent_with_the_upgrade_request_are_processed(server):
    """Bytes that arrive in the same packet as the request belong to the
    WebSocket stream: a ping frame glued to the request gets its pong."""
    port = server()
    ws = RawWS(port, token=mint(sub="alice"),
               first_frames=frame(OP_TEXT, '{"type":"ping"}'))
    assert ws.status == 101
    assert ws.recv_json()["type"] == "pong"
    ws.close_socket()


BAD_HANDSHAKES = {
    "missing_upgrade": dict(omit=("upgrade",)),
    "upgrade_not_websocket": dict(omit=("upgrade",), extra=(("Upgrade", "h2c"),)),
    "connection_without_upgrade": dict(omit=("connection",),
                                       extra=(("Connection", "keep-alive"),)),
    "missing_key": dict(omit=("sec-websocket-key",)),
    "key_wrong_length": dict(key="c2hvcnRrZXk="),            # 8 bytes
    "key_not_base64": dict(key="!!!!!!!!!!!!!!!!!!!!!!=="),
}


@pytest.mark.parametrize("case", list(BAD_HANDSHAKES))
def test_bad_handshake_is_400_with_json_error(server, case):
    """RFC 6455 4.2.1: a request that is not a valid upgrade gets 400 and a
    JSON error body; a connected client is unaffected."""
    port = server()
    bystander = healthy(port)
    status, _, body = http_exchange(port, upgrade_request(
        port, token=mint(sub="alice"), **BAD_HANDSHAKES[case]))
    assert status == 400, status
    json_error_body(body)
    bystander.ping_ok()


def test_http_1_0_upgrade_is_400(server):
    """The upgrade needs HTTP/1.1 or later."""
    port = server()
    req = upgrade_request(port, token=mint(sub="alice")).replace(
        b"HTTP/1.1\r\n", b"HTTP/1.0\r\n", 1)
    status, _, _ = http_exchange(port, req)
    assert status == 400


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET no-slash HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /ws/notifications HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nNo colon here\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
], ids=["no_request_line", "path_without_slash", "bad_http_version",
        "header_without_colon", "repeated_host"])
def test_malformed_request_is_400(server, request_bytes):
    """A request the parser cannot trust gets 400; others are unaffected."""
    port = server()
    bystander = healthy(port)
    status, _, _ = http_exchange(port, request_bytes)
    assert status == 400, status
    bystander.ping_ok()


def test_post_to_websocket_path_is_refused(server):
    """Other methods: 405 (or 400), never an upgrade."""
    port = server()
    status, _, body = http_exchange(port, upgrade_request(
        port, token=mint(sub="alice"), method="POST",
        extra=(("Content-Length", "0"),)))
    assert status in (405, 400), status
    json_error_body(body)


def test_wrong_websocket_version_is_426_with_version_13(server):
    """RFC 6455 4.2.2: unsupported version -> 426 + Sec-WebSocket-Version: 13."""
    port = server()
    status, headers, _ = http_exchange(port, upgrade_request(
        port, token=mint(sub="alice"), version="8"))
    assert status == 426, status
    assert headers.get("sec-websocket-version") == "13"


def test_disallowed_origin_is_403_allowed_origin_upgrades(server):
    """--allowed-origin: a listed Origin upgrades, any other gets 403."""
    port = server("--allowed-origin", "https://good.example,https://also.example")
    bystander = healthy(port)
    status, _, body = http_exchange(port, upgrade_request(
        port, token=mint(sub="alice"), extra=(("Origin", "https://evil.example"),)))
    assert status == 403, status
    json_error_body(body)
    for origin in ("https://good.example", "https://also.example"):
        ws = RawWS(port, token=mint(sub="alice"), extra_headers=(("Origin", origin),))
        assert ws.status == 101, origin
        ws.ping_ok()
        ws.close_socket()
    bystander.ping_ok()


def test_oversize_header_is_refused(server):
    """A 16 KiB header is over the head cap: 431 (or 400), not buffered."""
    port = server()
    bystander = healthy(port)
    status, _, _ = http_exchange(port, upgrade_request(
        port, token=mint(sub="alice"), extra=(("X-Big", "a" * 16384),)))
    assert status in (431, 400), status
    bystander.ping_ok()


def test_too_many_headers_is_refused(server):
    """Hundreds of small headers: over the count cap, 431 (or 400)."""
    port = server()
    bystander = healthy(port)
    extra = tuple((f"X-H{i}", "v") for i in range(300))
    status, _, _ = http_exchange(port, upgrade_request(
        port, token=mint(sub="alice"), extra=extra))
    assert status in (431, 400), status
    bystander.ping_ok()


def test_stalled_handshake_is_dropped_after_handshake_timeout(server):
    """--handshake-timeout 500ms: a client that sends half a request and
    stops is disconnected then (not at once, not never)."""
    port = server("--handshake-timeout", "500ms")
    bystander = healthy(port)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /ws/notifications HTTP/1.1\r\nHost: x\r\n")
    took = wait_closed_by_peer(s, 5)
    s.close()
    assert 0.3 <= took < 3, took
    bystander.ping_ok()


def test_silent_connection_is_dropped_after_handshake_timeout(server):
    """A connection that never sends a byte is dropped too."""
    port = server("--handshake-timeout", "500ms")
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    took = wait_closed_by_peer(s, 5)
    s.close()
    assert 0.3 <= took < 3, took


def test_authenticated_client_is_not_dropped_by_handshake_timeout(server):
    """The handshake deadline ends with the handshake."""
    port = server("--handshake-timeout", "300ms")
    ws = healthy(port)
    time.sleep(0.8)
    ws.ping_ok()
    ws.close_socket()


# --- other HTTP routes -------------------------------------------------------

def test_unknown_path_is_404_with_json_error(server):
    port = server()
    status, _, body = http_exchange(
        port, b"GET /no/such/path HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 404
    json_error_body(body)


def test_upgrade_on_unknown_path_is_404(server):
    """Only /ws/notifications upgrades."""
    port = server()
    status, _, _ = http_exchange(port, upgrade_request(
        port, path="/ws/other", token=mint(sub="alice")))
    assert status == 404


def test_healthz_is_200_ok_while_redis_is_up(server):
    port = server()
    status, headers, body = http_exchange(
        port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    assert json.loads(body.decode()) == {"status": "ok"}
    assert headers.get("content-type", "").startswith("application/json")
