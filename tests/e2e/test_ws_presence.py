"""notifyd-ws presence and close-code metrics that clients and Redis
cannot fool.

- A presence write Redis refuses (maxmemory with noeviction, memory
  filled by a big key) is counted in /metrics, logged once (not once per
  connection), and the whole set is written again once Redis accepts
  writes: a user who connected meanwhile comes back online within one
  renewal period, with nobody reconnecting.
- Close codes chosen by clients cannot crowd the documented ones out of
  notifyd_ws_closes_total: they count as code="other".

Real daemon, private redis-server, python3-websockets clients.
"""
import asyncio
import re

from wsproto import arun, mint, start_ws
from wsutil import (Resp, http_get, metric, online_users, wait_for,
                    ws_connect)

# NT_PRESENCE_RENEW_S of lib/nt_redis.h: the lease renewal period.
RENEW_S = 10


def fill_memory(redis, r):
    """A big key, then noeviction and a maxmemory below what Redis now
    uses: every write that needs memory is refused (OOM) until the key is
    deleted."""
    r.command("SET", "filler", "x" * (4 * 1024 * 1024))
    used = int(re.search(r"used_memory:(\d+)",
                         redis.cli("INFO", "memory")).group(1))
    r.command("CONFIG", "SET", "maxmemory-policy", "noeviction")
    r.command("CONFIG", "SET", "maxmemory", used - 1024 * 1024)
    try:
        r.command("SADD", "probe", "x")
    except RuntimeError as e:
        assert "OOM" in str(e), e
    else:
        raise AssertionError("Redis still accepts writes")


def test_refused_presence_write_is_counted_logged_once_and_rewritten(
        redis, daemons, keys):
    d, port = start_ws(daemons, redis, keys, "--instance-id", "pres-oom")
    r = Resp(redis.port)
    late = ["bob", "carol", "dave", "erin"]

    async def go():
        alice = await ws_connect(port, mint(sub="alice"))
        wait_for(lambda: online_users(r) == {"alice"}, 5, "alice online")
        fill_memory(redis, r)
        clients = [await ws_connect(port, mint(sub=u)) for u in late]
        # Each connect's SADD is refused: counted, and the set is stale.
        wait_for(lambda: metric(port, "notifyd_ws_presence_errors_total")
                 >= len(late), 5, "the refused writes counted")
        assert metric(port, "notifyd_ws_presence_stale") == 1
        assert online_users(r) == {"alice"}
        # Memory freed: nobody reconnects, yet the set is written whole.
        r.command("DEL", "filler")
        wait_for(lambda: online_users(r) == {"alice", *late}, RENEW_S,
                 "the users who connected under OOM online again")
        assert 0 < r.command("TTL", "presence:pres-oom") <= 30
        assert metric(port, "notifyd_ws_presence_stale") == 0
        for c in [alice] + clients:
            await c.close()
        wait_for(lambda: online_users(r) == set(), 5, "presence cleared")
    try:
        arun(go(), timeout=30)
    finally:
        r.close()
    assert d.stop() == 0
    err = d.stderr()
    refused = [ln for ln in err.splitlines()
               if "presence write refused" in ln]
    # Four connections, one line: the log is rate-limited.
    assert len(refused) == 1, err
    assert " warn: " in refused[0] and "OOM" in refused[0], refused
    assert len(re.findall(r"presence set written again", err)) == 1, err


def test_client_chosen_close_codes_count_as_other(redis, daemons, keys):
    _, port = start_ws(daemons, redis, keys)
    codes = list(range(4100, 4121)) + [1003]

    async def go():
        for code in codes:
            c = await ws_connect(port, mint(sub="closer"))
            await c.close(code=code)
    arun(go(), timeout=30)
    wait_for(lambda: metric(port, 'notifyd_ws_closes_total{code="1003"}')
             == 1, 5, "the 1003 close counted")
    assert metric(port, 'notifyd_ws_closes_total{code="other"}') == 21
    for code in range(4100, 4121):
        assert metric(port, f'notifyd_ws_closes_total{{code="{code}"}}') == 0
    # The documented codes keep their series, counted or not.
    _, body = http_get(port, "/metrics")
    for known in ("1000", "1001", "1006", "1008", "1011", "1013", "4001",
                  "4002"):
        assert f'notifyd_ws_closes_total{{code="{known}"}} ' in body, known
