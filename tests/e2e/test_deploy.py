"""The production arrangement under faults: supervisord running
contrib/supervisord.conf (two notifyd-ws sharing a port, notifyd-api),
nginx running contrib/nginx.conf in front, and Redis, all real, started
by tools/cluster.sh (make cluster) exactly as an operator would.

Clients are resuming WebSocket clients (resumeclient.py) connected
through nginx; senders go through nginx to notifyd-api. What the senders
were told is the ledger: a message answered 200 must reach every
connection of its user exactly once and in log order; one answered 503
("may or may not have been stored") may arrive, once; nothing else may.
Each connection connects before the first send, so it must also see its
user's log whole: positions 1 to the last, each once.

NOTIFYD_SOAK_SECONDS sets the length of the churn soak (default 12).
"""
import asyncio
import collections
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import jwt
import pytest
import websockets

from conftest import BIN, ROOT, Redis, assert_no_memory_report, free_port
from resumeclient import ClientLoop, ResumeClient

CLUSTER_SH = os.path.join(ROOT, "tools", "cluster.sh")
SUPERVISORD_CONF = os.path.join(ROOT, "contrib", "supervisord.conf")
PERSIST = ("--appendonly", "yes", "--appendfsync", "always")
# The presence lease of notifyd(7): a killed instance's users leave the
# online count within it.
PRESENCE_LEASE = 30


# ---- the cluster ----

class Cluster:
    """tools/cluster.sh with its own ports and directory; stopped (as by
    Ctrl-C) at the end."""

    def __init__(self, tmp_path, redis=None, env=None, procs=2):
        self.dir = tmp_path / "cluster"
        self.nginx_port = free_port()
        self.ws_port = free_port()
        self.api_port = free_port()
        e = {k: v for k, v in os.environ.items()
             if not k.startswith("NOTIFYD_")}
        e.update(NGINX_PORT=str(self.nginx_port), WS_PORT=str(self.ws_port),
                 API_PORT=str(self.api_port), CLUSTER_DIR=str(self.dir),
                 NOTIFYD_BIN=BIN, NOTIFYD_WS_PROCS=str(procs),
                 NOTIFYD_REDIS_TIMEOUT="1s", NOTIFYD_LOG_LEVEL="info")
        if redis is not None:
            e["NOTIFYD_REDIS_URL"] = redis.url
        e.update(env or {})
        self.env = e
        # What supervisorctl needs to read contrib/supervisord.conf.
        self.ctl_env = dict(e, NOTIFYD_RUN_DIR=str(self.dir),
                            NOTIFYD_MINFDS="1024")
        self.procs = procs
        self.out_path = tmp_path / "cluster.out"
        self.out = open(self.out_path, "w")
        self.proc = subprocess.Popen(["sh", CLUSTER_SH], env=e,
                                     stdout=self.out,
                                     stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pids = set()
        self._wait_ready()
        self.secret = (self.dir / "jwt-secret").read_text().strip()
        self.key = (self.dir / "api-keys").read_text().split()[1]
        self.host = socket.gethostname()
        self.pids |= set(self.daemon_pids().values())

    def output(self):
        return self.out_path.read_text()

    def log(self):
        p = self.dir / "supervisord.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def _wait_ready(self, timeout=40):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "cluster: ready" in self.output():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"cluster not ready:\n{self.output()}\n"
                             f"{self.log()[-3000:]}")

    # -- processes --

    def ctl(self, *args, check=True):
        r = subprocess.run(["supervisorctl", "-c", SUPERVISORD_CONF, *args],
                           env=self.ctl_env, capture_output=True, text=True,
                           timeout=60)
        if check:
            assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    def ws_names(self):
        return [f"notifyd-ws-{i}" for i in range(self.procs)]

    def daemon_pids(self):
        """{program: pid} of the RUNNING programs."""
        out = self.ctl("status", check=False)
        pids = {}
        for line in out.splitlines():
            m = re.match(r"notifyd:(\S+)\s+RUNNING\s+pid (\d+)", line)
            if m:
                pids[m.group(1)] = int(m.group(2))
        return pids

    def wait_running(self, name, old_pid=None, timeout=15):
        """The pid of name once RUNNING (and not old_pid)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.daemon_pids().get(name)
            if pid is not None and pid != old_pid:
                self.pids.add(pid)
                return pid
            time.sleep(0.1)
        raise AssertionError(f"{name} not RUNNING again:\n"
                             f"{self.ctl('status', check=False)}")

    def instance_id(self, name):
        return f"{self.host}-ws-{name.rsplit('-', 1)[1]}"

    def stop(self):
        """Ctrl-C: SIGINT to the whole process group, as a terminal does."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.out.close()
        # Daemons left behind are a failure of the test, never of the
        # next one: kill them all, also those supervisord started after
        # self.pids was read (a restart racing its shutdown). Each one
        # carries this cluster's CLUSTER_DIR in its environment.
        for pid in self.pids | self.processes_of_this_cluster():
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)

    def processes_of_this_cluster(self):
        mark = f"CLUSTER_DIR={self.dir}".encode()
        found = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if mark in f.read().split(b"\0"):
                        found.add(int(entry))
            except OSError:
                pass     # gone, or not ours to read
        return found

    # -- HTTP through nginx, and to the daemons directly --

    def request(self, method, path, body=None, port=None, key=True,
                source=None, timeout=5):
        """(status, parsed JSON or text); status None when the connection
        failed."""
        hdrs = {}
        if key:
            hdrs["Authorization"] = f"Bearer {self.key}"
        if body is not None:
            body = json.dumps(body)
            hdrs["Content-Type"] = "application/json"
        c = http.client.HTTPConnection(
            "127.0.0.1", port or self.nginx_port, timeout=timeout,
            source_address=(source, 0) if source else None)
        try:
            c.request(method, path, body=body, headers=hdrs)
            r = c.getresponse()
            data = r.read().decode(errors="replace")
        except OSError:
            return None, None
        finally:
            c.close()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, data

    def online_count(self):
        status, body = self.request("GET",
                                    "/api/notifications/online-count")
        assert status == 200, body
        return body["online_count"]

    def token(self, user):
        now = int(time.time())
        return jwt.encode({"sub": user, "iat": now, "exp": now + 3600},
                          self.secret, algorithm="HS256")

    def ws_url(self, user, port=None):
        return (f"ws://127.0.0.1:{port or self.nginx_port}"
                f"/ws/notifications?token={self.token(user)}")


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:       # a zombie of ours is gone for this purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def proc_stat(pid):
    """(ppid, pgid) of a process, from /proc (no procps needed)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[2])


def processes(pred):
    """Pids of the processes whose (ppid, pgid) satisfy pred."""
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if pred(*proc_stat(int(d))):
                    out.add(int(d))
            except OSError:
                pass
    return out


def proc_usage(pid):
    """(open fds, RSS bytes) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(ln.split()[1]) * 1024 for ln in f
                   if ln.startswith("VmRSS:"))
    return fds, rss


@pytest.fixture
def cluster(tmp_path):
    """cluster(redis=None, env=None): a started Cluster, stopped at the
    end; any sanitizer or valgrind report in its log fails the test."""
    made = []

    def start(redis=None, env=None):
        c = Cluster(tmp_path, redis=redis, env=env)
        made.append(c)
        return c
    yield start
    for c in made:
        c.stop()
        assert_no_memory_report(c.log())


@pytest.fixture
def redis_server(tmp_path):
    """redis_server(*flags): a private Redis, restartable on its port and
    directory, stopped at the end."""
    made = []

    def start(*extra):
        d = tmp_path / f"redis{len(made)}"
        d.mkdir()
        r = Redis(d)
        r.extra = extra
        made.append(r)
        return r.start(*extra)
    yield start
    for r in made:
        r.stop()


@pytest.fixture
def clients():
    loop = ClientLoop()
    yield loop
    loop.close()


# ---- senders and what they were told ----

class Ledger:
    """Per user: k of the sends answered 200, in order; k of those
    answered 503 (may or may not be stored); the other answers."""

    def __init__(self):
        self.lock = threading.Lock()
        self.accepted = collections.defaultdict(list)
        self.maybe = collections.defaultdict(set)
        self.statuses = collections.Counter()
        self.errors = []
        self.k = 0

    def next_k(self):
        with self.lock:
            self.k += 1
            return self.k


def send(cluster, ledger, user, timeout=5):
    """One targeted send through nginx; recorded in ledger. Returns the
    status (None: no answer)."""
    k = ledger.next_k()
    status, body = cluster.request(
        "POST", "/api/notifications/send",
        {"target_user": user, "notification_type": "test",
         "content": f"message {k}", "data": {"k": k}}, timeout=timeout)
    with ledger.lock:
        ledger.statuses[status] += 1
        if status == 200:
            ledger.accepted[user].append(k)
        else:
            # No answer, or 503: the message may or may not be stored.
            ledger.maybe[user].add(k)
            if status not in (None, 503, 507) or (
                    status is not None and not (
                        isinstance(body, dict)
                        and body.get("status") == "error")):
                ledger.errors.append((k, status, body))
    return status


class Sender(threading.Thread):
    """Sends to users round-robin every interval until stopped."""

    def __init__(self, cluster, ledger, users, interval=0.02):
        super().__init__(daemon=True)
        self.cluster, self.ledger, self.users = cluster, ledger, users
        self.interval = interval
        self.halt = threading.Event()

    def run(self):
        i = 0
        while not self.halt.is_set():
            send(self.cluster, self.ledger, self.users[i % len(self.users)])
            i += 1
            self.halt.wait(self.interval)

    def stop(self):
        self.halt.set()
        self.join(30)


def log_seq(redis, user):
    out = redis.cli("HGET", f"offline:{{{user}}}", "seq").strip()
    return int(out) if out else 0


def wait_delivered(clients, ledger, timeout=20):
    """Until every client has every accepted message of its user."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        missing = [c.name for c in clients
                   if not set(ledger.accepted[c.user])
                   <= {k for _, _, k in c.snapshot()}]
        if not missing:
            return
        time.sleep(0.05)
    raise AssertionError(f"not delivered within {timeout}s to {missing}")


def check_delivery(clients, ledger, redis):
    """Each client: its user's log whole, in order, each position once;
    every accepted message once and in sending order; nothing that was
    not sent."""
    assert not ledger.errors, ledger.errors
    for c in clients:
        got = c.snapshot()
        ids = [i for i, _, _ in got]
        seqs = [s for _, s, _ in got]
        ks = [k for _, _, k in got]
        assert not c.problems, (c.name, c.problems)
        assert len(set(ids)) == len(ids), (c.name, "duplicates", got)
        assert seqs == list(range(1, log_seq(redis, c.user) + 1)), \
            (c.name, "positions", seqs)
        acc = ledger.accepted[c.user]
        assert [k for k in ks if k in set(acc)] == acc, (c.name, ks, acc)
        extra = {k for k in ks if k not in set(acc)}
        assert extra <= ledger.maybe[c.user], (c.name, "unsent", extra)


def start_clients(loop, cluster, users, devices=1, prefix="c"):
    made = []
    for u in users:
        for d in range(devices):
            made.append(loop.add(ResumeClient(
                cluster.nginx_port, cluster.token(u), u, f"{prefix}-{u}-{d}")))
    loop.wait_connected(15)
    return made


def presence(redis, cluster, name):
    text = redis.cli("SMEMBERS", f"presence:{cluster.instance_id(name)}",
                     raw=True)
    return set(text.split())


def wait_presence(redis, cluster, users, timeout=10):
    """Until every user shows in some instance's presence set."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = set()
        for name in cluster.ws_names():
            seen |= presence(redis, cluster, name)
        if set(users) <= seen:
            return
        time.sleep(0.05)
    raise AssertionError(f"not all present: {set(users) - seen}")


def readyz(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.settimeout(3)
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n"
                      b"Connection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return int(data.split()[1])
    except (OSError, IndexError, ValueError):
        return None


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s")


def metric(cluster, port, name):
    """The sum of the samples of name (a prefix) in a daemon's /metrics."""
    status, text = cluster.request("GET", "/metrics", port=port, key=False)
    assert status == 200, text
    total = 0.0
    for line in str(text).splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---- the tests ----

def test_cluster_starts_and_ctrl_c_stops_everything(cluster):
    """make cluster (tools/cluster.sh, its own private Redis): the printed
    demo page and client module come through nginx, the printed token
    opens a WebSocket through nginx that gets a message sent through
    nginx; Ctrl-C then stops supervisord, both notifyd-ws, notifyd-api,
    nginx and Redis."""
    c = cluster()
    out = c.output()
    token = re.search(r"#token=(\S+)", out).group(1)
    status, page = c.request("GET", "/", key=False)
    assert status == 200 and "<html" in page.lower()
    status, js = c.request("GET", "/notify-client.js", key=False)
    assert status == 200 and "NotificationClient" in js

    async def exchange():
        url = (f"ws://127.0.0.1:{c.nginx_port}/ws/notifications?"
               f"token={token}")
        async with websockets.connect(url) as ws:
            status, body = await asyncio.get_running_loop().run_in_executor(
                None, lambda: c.request("POST", "/api/notifications/send",
                                        {"target_user": "demo",
                                         "content": "through nginx"}))
            assert status == 200, body
            return json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert asyncio.run(exchange())["content"] == "through nginx"

    pids = set(c.daemon_pids().values())
    assert len(pids) == 3
    for name in ("supervisord.pid", "nginx/nginx.pid"):
        pids.add(int((c.dir / name).read_text()))
    # nginx workers, redis, the script itself: its process group.
    pids |= processes(lambda ppid, pgid: pgid == c.proc.pid)
    c.stop()
    assert c.proc.returncode == 0, c.output()
    wait_for(lambda: not any(pid_alive(p) for p in pids), 10,
             "every process gone")


def test_exactly_once_through_nginx(cluster, redis_server, clients):
    """Two devices of each of 8 users, spread by the kernel over both
    notifyd-ws behind nginx: every API send reaches each device once, in
    order, and a broadcast reaches each device once."""
    redis = redis_server()
    c = cluster(redis=redis)
    users = [f"u{i}" for i in range(8)]
    devices = start_clients(clients, c, users, devices=2)
    wait_presence(redis, c, users)
    on = {n: presence(redis, c, n) for n in c.ws_names()}
    assert all(on.values()), f"an instance has no user: {on}"
    ledger = Ledger()
    for _ in range(10):
        for u in users:
            assert send(c, ledger, u) == 200
    status, body = c.request("POST", "/api/notifications/broadcast",
                             {"content": "to everyone"})
    assert status == 200, body
    wait_delivered(devices, ledger)
    wait_for(lambda: all(len(d.broadcasts) >= 1 for d in devices), 5,
             "broadcast delivered")
    time.sleep(0.3)     # room for a duplicate to show up
    check_delivery(devices, ledger, redis)
    assert all(len(d.broadcasts) == 1 for d in devices), \
        [(d.name, d.broadcasts) for d in devices]


def test_nginx_passes_client_address_and_logs_no_token(cluster,
                                                       redis_server):
    """Through nginx, the daemons log the client's own address (taken
    from X-Forwarded-For, --trusted-proxy 127.0.0.1); nginx's logs never
    hold a token, neither for a WebSocket that worked nor for one that
    got 502 because every notifyd-ws was down (that 502 is in the access
    log, with its upstream status)."""
    redis = redis_server()
    c = cluster(redis=redis)
    token = c.token("carol")

    async def connect_from(source):
        url = f"ws://127.0.0.1:{c.nginx_port}/ws/notifications?token={token}"
        async with websockets.connect(url, local_addr=(source, 0)) as ws:
            await ws.send(json.dumps({"type": "ping"}))
            return json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert asyncio.run(connect_from("127.0.0.2"))["type"] == "pong"
    status, _ = c.request("GET", "/api/notifications/online-count",
                          source="127.0.0.3")
    assert status == 200
    wait_for(lambda: "(127.0.0.2): user carol connected" in c.log()
             and "client=127.0.0.3" in c.log(), 5, "client addresses logged")

    for name in c.ws_names():
        c.ctl("stop", f"notifyd:{name}")
    status, _ = c.request(
        "GET", f"/ws/notifications?token={token}", key=False)
    assert status == 502
    logs = c.dir / "logs"
    # nginx writes the line once the response has gone: wait for it.
    line = re.compile(r'"GET /ws/notifications HTTP/1.1" 502 .* '
                      r'upstream_status=502')
    wait_for(lambda: line.search(
        (logs / "notifyd-access.log").read_text()), 5, "the 502 logged")
    for f in os.listdir(logs):
        text = (logs / f).read_text(errors="replace")
        assert token not in text and "token=" not in text, (f, text[-2000:])


def test_kill9_one_instance(cluster, redis_server, clients):
    """kill -9 of a notifyd-ws: supervisord restarts it; its clients
    reconnect through nginx with since=<last id> and get every message
    sent meanwhile, once, in order; the online count drops the users who
    were only on it within the presence lease."""
    redis = redis_server()
    c = cluster(redis=redis)
    users = [f"r{i}" for i in range(8)]
    devices = start_clients(clients, c, users)
    ghosts = [f"g{i}" for i in range(6)]

    async def connect(url):
        return await websockets.connect(url, ping_interval=None)
    # Users who do not come back: their connections are not resumed.
    ghost_ws = [asyncio.run_coroutine_threadsafe(
        connect(c.ws_url(g)), clients.loop).result(10) for g in ghosts]
    wait_presence(redis, c, users + ghosts)
    on = {n: presence(redis, c, n) for n in c.ws_names()}
    victim = max(c.ws_names(), key=lambda n: len(on[n] & set(ghosts)))
    # The kernel picks the instance: add resuming users until the victim
    # has one (each lands there with probability 1/2).
    while not on[victim] & set(users) and len(users) < 16:
        users.append(f"r{len(users)}")
        devices += start_clients(clients, c, users[-1:])
        wait_presence(redis, c, users + ghosts)
        on = {n: presence(redis, c, n) for n in c.ws_names()}
    assert on[victim] & set(users) and on[victim] & set(ghosts), on
    gone = on[victim] & set(ghosts)

    ledger = Ledger()
    for u in users:                      # position 1 of every log
        assert send(c, ledger, u) == 200
    wait_delivered(devices, ledger)
    sender = Sender(c, ledger, users)
    sender.start()
    time.sleep(0.3)
    old = c.daemon_pids()[victim]
    os.kill(old, signal.SIGKILL)
    killed_at = time.monotonic()
    new = c.wait_running(victim, old_pid=old)
    time.sleep(1.0)
    sender.stop()
    wait_delivered(devices, ledger)
    time.sleep(0.3)
    check_delivery(devices, ledger, redis)
    assert set(ledger.statuses) == {200}, ledger.statuses
    moved = [d for d in devices if d.user in on[victim]]
    assert all(d.resumed_sessions() for d in moved), \
        [(d.name, d.sessions) for d in moved]
    assert new != old

    expected = len(users) + len(ghosts) - len(gone)
    t = wait_for(lambda: c.online_count() == expected,
                 PRESENCE_LEASE + 10, f"online count {expected}")
    print(f"online count converged {t - killed_at:.1f}s after the kill")
    for ws in ghost_ws:
        asyncio.run_coroutine_threadsafe(ws.close(), clients.loop).result(5)


def test_rolling_restart(cluster, redis_server, clients):
    """supervisorctl restart of each notifyd-ws in turn while messages
    flow: clients see 1001, reconnect through nginx, lose nothing; the
    API never fails."""
    redis = redis_server()
    c = cluster(redis=redis)
    users = [f"u{i}" for i in range(8)]
    devices = start_clients(clients, c, users)
    ledger = Ledger()
    for u in users:
        assert send(c, ledger, u) == 200
    wait_delivered(devices, ledger)
    sender = Sender(c, ledger, users)
    sender.start()
    for name in c.ws_names():
        old = c.daemon_pids()[name]
        c.ctl("restart", f"notifyd:{name}")
        c.wait_running(name, old_pid=old)
    time.sleep(0.5)
    sender.stop()
    wait_delivered(devices, ledger)
    time.sleep(0.3)
    check_delivery(devices, ledger, redis)
    assert set(ledger.statuses) == {200}, ledger.statuses
    for d in devices:
        assert 1001 in [s.close_code for s in d.sessions], (d.name,
                                                            d.sessions)
    assert "exit status 0" in c.log()


def test_redis_restarted_and_crashed(cluster, redis_server, clients):
    """Redis with AOF (appendfsync always), stopped with SHUTDOWN NOSAVE
    and later killed with -9: the daemons stay up (same pids), report
    503 on /readyz and for sends while it is away (never 200), and
    recover by themselves; every message accepted before each stop,
    including those for a user who was offline, is delivered."""
    redis = redis_server(*PERSIST)
    c = cluster(redis=redis)
    pids = c.daemon_pids()
    users = [f"u{i}" for i in range(4)]
    devices = start_clients(clients, c, users)
    ledger = Ledger()

    def outage(stop):
        for u in users + ["offline"]:
            assert send(c, ledger, u) == 200
        stop()
        wait_for(lambda: readyz(c.ws_port) == 503
                 and readyz(c.api_port) == 503, 10, "/readyz 503")
        for u in users + ["offline"]:
            assert send(c, ledger, u) == 503
        redis.start(*PERSIST)
        wait_for(lambda: readyz(c.ws_port) == 200
                 and readyz(c.api_port) == 200, 20, "/readyz 200 again")
        for u in users + ["offline"]:
            assert send(c, ledger, u) == 200

    def shutdown_nosave():
        subprocess.run(["redis-cli", "-p", str(redis.port), "SHUTDOWN",
                        "NOSAVE"], capture_output=True, timeout=10)
        redis.proc.wait(10)

    outage(shutdown_nosave)
    outage(redis.stop)          # SIGKILL
    wait_delivered(devices, ledger)
    time.sleep(0.3)
    check_delivery(devices, ledger, redis)
    assert c.daemon_pids() == pids, "a daemon was restarted"

    late = clients.add(ResumeClient(c.nginx_port, c.token("offline"),
                                    "offline", "late"))
    wait_delivered([late], ledger)
    check_delivery([late], ledger, redis)


def test_redis_paused_then_full(cluster, redis_server, clients):
    """Redis paused past the PING deadline (CLIENT PAUSE): /readyz 503,
    notifyd_ws_redis_up 0 and a log line, sends 503; then everything
    recovers. Redis at maxmemory with noeviction: sends refused with a
    JSON 503/507 and a log line, counted in /metrics; recovered once
    memory is raised. Nothing answered 200 is lost."""
    redis = redis_server()
    c = cluster(redis=redis)
    pids = c.daemon_pids()
    users = [f"u{i}" for i in range(4)]
    devices = start_clients(clients, c, users)
    ledger = Ledger()
    for u in users:
        assert send(c, ledger, u) == 200

    redis.cli("CLIENT", "PAUSE", "4000", "ALL")
    paused_at = time.monotonic()
    # Both instances answer on the shared port, whichever the kernel
    # picks: wait until the one asked says Redis is down both ways.
    wait_for(lambda: readyz(c.ws_port) == 503
             and metric(c, c.ws_port, "notifyd_ws_redis_up") == 0, 3.5,
             "notifyd-ws /readyz 503 and notifyd_ws_redis_up 0")
    assert send(c, ledger, users[0], timeout=10) == 503
    assert time.monotonic() - paused_at < 4, "detection took the whole pause"
    wait_for(lambda: readyz(c.ws_port) == 200 and readyz(c.api_port) == 200,
             15, "/readyz 200 after the pause")
    for u in users:
        assert send(c, ledger, u) == 200

    used = int(re.search(r"used_memory:(\d+)",
                         redis.cli("INFO", "memory")).group(1))
    redis.cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
    redis.cli("CONFIG", "SET", "maxmemory", str(used + 256 * 1024))
    big = "x" * 60000
    refused = None
    for i in range(40):
        k = ledger.next_k()
        status, body = c.request(
            "POST", "/api/notifications/send",
            {"target_user": users[i % 4], "content": big, "data": {"k": k}})
        if status == 200:
            ledger.accepted[users[i % 4]].append(k)
        else:
            refused = (k, status, body)
            break
    assert refused, "maxmemory never refused a send"
    k, status, body = refused
    assert status in (503, 507) and body["status"] == "error", refused
    wait_for(lambda: metric(c, c.api_port, 'notifyd_api_requests_total{'
                            'route="send",status="' + str(status)) >= 1,
             5, "the refusal counted in /metrics")
    redis.cli("CONFIG", "SET", "maxmemory", "0")
    for u in users:
        assert send(c, ledger, u) == 200
    wait_delivered(devices, ledger)
    time.sleep(0.3)
    check_delivery(devices, ledger, redis)
    for d in devices:
        assert k not in {kk for _, _, kk in d.snapshot()}, "refused, yet sent"
    log = c.log()
    assert re.search(r"notifyd-ws\[\d+\] (warn|error): .*redis", log, re.I), \
        log[-3000:]
    assert re.search(r"notifyd-api\[\d+\] (warn|error): .*(OOM|memory)", log,
                     re.I), log[-3000:]
    assert c.daemon_pids() == pids, "a daemon was restarted"


def test_soak_churn(cluster, redis_server):
    """Connect, ping, receive, disconnect (cleanly or not) through nginx
    while the API sends, for NOTIFYD_SOAK_SECONDS (12): the open fds of
    every daemon and nginx worker come back to where they were after a
    warm-up, and their RSS stays flat."""
    seconds = float(os.environ.get("NOTIFYD_SOAK_SECONDS", "12"))
    redis = redis_server()
    c = cluster(redis=redis, env={"NOTIFYD_LOG_LEVEL": "warn"})
    users = [f"s{i}" for i in range(20)]
    stats = collections.Counter()

    async def one(i):
        user = users[i % len(users)]
        try:
            ws = await websockets.connect(c.ws_url(user), open_timeout=5,
                                          ping_interval=None)
        except Exception as e:
            stats[f"connect failed: {type(e).__name__}"] += 1
            return
        try:
            await ws.send(json.dumps({"type": "ping"}))
            async for raw in ws:
                if json.loads(raw).get("type") == "pong":
                    break
            stats["pong"] += 1
        except Exception as e:
            stats[f"failed: {type(e).__name__}"] += 1
        finally:
            if i % 3 == 0:
                ws.transport.abort()
            else:
                await ws.close()

    async def churn(duration):
        end = time.monotonic() + duration
        i = 0
        while time.monotonic() < end:
            await asyncio.gather(*(one(i + j) for j in range(8)))
            i += 8
        return i

    def usage():
        nginx = int((c.dir / "nginx" / "nginx.pid").read_text())
        procs = dict(c.daemon_pids())
        for w in processes(lambda ppid, pgid: ppid == nginx):
            procs[f"nginx-{w}"] = w
        return {name: proc_usage(pid) for name, pid in procs.items()}

    pids = c.daemon_pids()
    ledger = Ledger()
    sender = Sender(c, ledger, users, interval=0.01)
    sender.start()
    try:
        asyncio.run(churn(min(3.0, seconds / 3)))      # warm-up
        time.sleep(1.0)
        before = usage()
        n = asyncio.run(churn(seconds))
        time.sleep(1.5)
        after = usage()
    finally:
        sender.stop()
    print(f"soak: {n} connections in {seconds:.0f}s, {stats}, "
          f"{sum(ledger.statuses.values())} sends; fds/RSS before "
          f"{before} after {after}")
    exits = [ln for ln in c.log().splitlines() if " exited: " in ln]
    assert c.daemon_pids() == pids and not exits, exits
    assert stats["pong"] >= n * 0.99, stats
    assert set(ledger.statuses) == {200}, ledger.statuses
    # AddressSanitizer keeps freed memory in quarantine (make check): RSS
    # says nothing there, descriptors still do.
    with open(os.path.join(BIN, "notifyd-ws"), "rb") as f:
        sanitized = b"__asan_init" in f.read()
    for name, (fds, rss) in before.items():
        fds2, rss2 = after[name]
        assert fds2 <= fds + 1, f"{name}: fds {fds} -> {fds2}"
        if not sanitized or name.startswith("nginx"):
            assert rss2 <= rss * 1.10 + 2 * 1024 * 1024, \
                f"{name}: RSS {rss} -> {rss2}"
