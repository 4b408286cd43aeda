"""The delivery promise under faults, end to end.

A targeted notification accepted for a user (its sender exited 0, or got
HTTP 200 with its id) reaches every connection of that user, in the order
of its position in the user's log (notifyd(7), "seq"), exactly once per
connection: across subscriber connections that Redis kills or drops,
notifyd-ws instances killed and restarted, clients that drop and resume
with since=ID, Redis restarted with persistence, and concurrent senders.

Every connection here is a ResumeClient (resumeclient.py) that connects
before the first send, so it must see its user's whole log: position 1
(a primer each test sends once every client is connected) to the last.
Its sessions, stitched, are checked against three independent records:
the senders' answers (the accepted ids), the log in Redis (HGETALL
offline:{user}: m:N, seq, first), and the other connections of the user.

test_randomized_faults runs ~20 s by default; with NOTIFYD_SOAK_SECONDS=N
it runs N seconds (make soak). NOTIFYD_FAULT_SEED=S replays a seed; the
seed is printed and is in every assertion message.
"""
import collections
import json
import os
import random
import subprocess
import threading
import time

import pytest

from apiutil import start_api
from conftest import Redis, free_port, run
from resumeclient import ClientLoop, ResumeClient
from wsproto import mint
from wsutil import Resp, http_get

PERSIST = ("--appendonly", "yes", "--appendfsync", "always")


# ---- Redis, instances, senders ----

def rcmd(port, *args, timeout=10):
    """One command on a fresh connection (survives Redis restarts)."""
    c = Resp(port)
    try:
        c.sock.settimeout(timeout)
        return c.command(*args)
    finally:
        c.close()


@pytest.fixture
def own_redis(tmp_path):
    """own_redis(*flags): a private Redis with extra flags (persistence, a
    log file), restartable on its port and dir; stopped at the end."""
    made = []

    def start(*extra):
        d = tmp_path / f"redis{len(made)}"
        d.mkdir()
        rd = Redis(d)
        rd.extra = extra
        made.append(rd)
        return rd.start(*extra)
    yield start
    for rd in made:
        rd.stop()


def ws_instance(daemons, redis_url, keys, port, instance, *extra,
                level="warn"):
    # Log level warn: the daemon's stderr is a pipe read only at its exit,
    # and a line per connection would fill it in a long run.
    return daemons("notifyd-ws", "--listen", f"127.0.0.1:{port}", "--redis",
                   redis_url, "--jwt-secret-file", keys.secret_file,
                   "--instance-id", instance, "--redis-timeout", "1s",
                   "--log-level", level, *extra)


def sub_ids(port):
    """{instance: [client ids]} of the notifyd-ws subscriber connections."""
    text = rcmd(port, "CLIENT", "LIST", "TYPE", "pubsub") or ""
    out = collections.defaultdict(list)
    for line in text.splitlines():
        f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        name = f.get("name", "")
        if name.startswith("notifyd-ws:sub:"):
            out[name[len("notifyd-ws:sub:"):]].append(int(f["id"]))
    return out


def wait_sub(port, instance, not_id=None, timeout=10.0):
    """The id of instance's subscriber connection once there (and not
    not_id, the one just killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = [i for i in sub_ids(port).get(instance, []) if i != not_id]
        if ids:
            return ids[0]
        time.sleep(0.02)
    raise AssertionError(f"{instance} did not subscribe again")


def readyz(port):
    try:
        return http_get(port, "/readyz", timeout=2)[0]
    except OSError:
        return None


class Ledger:
    """What the senders were told: per user, the accepted ids in the order
    the answers came, the positions the senders reported, and every
    attempt (user, k), so that a message a sender was not sure of may
    appear but is still recognised."""

    def __init__(self):
        self.lock = threading.Lock()
        self.accepted = collections.defaultdict(list)   # user -> [id]
        self.sender_seq = {}                            # id -> seq
        self.attempts = collections.defaultdict(set)    # user -> {k}
        self.failed = 0
        self.k = 0

    def next_k(self):
        with self.lock:
            self.k += 1
            return self.k

    def tried(self, user, k):
        with self.lock:
            self.attempts[user].add(k)

    def accept(self, user, msg_id, seq=None):
        with self.lock:
            self.accepted[user].append(msg_id)
            if isinstance(seq, int):
                self.sender_seq[msg_id] = seq

    def fail(self):
        with self.lock:
            self.failed += 1

    def n_accepted(self):
        return sum(len(v) for v in self.accepted.values())


def request(user, k, content=None):
    return {"target_user": user, "notification_type": "fault.test",
            "content": content if content is not None else f"k{k}",
            "data": {"k": k}}


def send_batch(redis_url, ledger, reqs, *flags, timeout=30):
    """notify-send --batch --json: all accepted when it exits 0."""
    for q in reqs:
        ledger.tried(q["target_user"], q["data"]["k"])
    text = "".join(json.dumps(q) + "\n" for q in reqs)
    try:
        p = run("notify-send", "--batch", "--json", "--redis", redis_url,
                *flags, input=text, timeout=timeout)
    except subprocess.TimeoutExpired:
        ledger.fail()
        return False
    if p.returncode != 0:
        ledger.fail()
        return False
    out = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert len(out) == len(reqs), (p.returncode, p.stderr)
    for m in out:
        ledger.accept(m["target_user"], m["id"], m.get("seq"))
    return True


def send_one(redis_url, ledger, user, timeout=30):
    """notify-send -u USER --json, one message."""
    k = ledger.next_k()
    ledger.tried(user, k)
    try:
        p = run("notify-send", "-u", user, "-t", "fault.test", "--json",
                "-d", json.dumps({"k": k}), "--redis", redis_url, f"k{k}",
                timeout=timeout)
    except subprocess.TimeoutExpired:
        ledger.fail()
        return False
    if p.returncode != 0:
        ledger.fail()
        return False
    m = json.loads(p.stdout.decode())
    ledger.accept(user, m["id"], m.get("seq"))
    return True


def send_api(api, ledger, users, content=None, k=None, timeout=10):
    """POST /api/notifications/send to one user or target_users."""
    k = k or ledger.next_k()
    for u in users:
        ledger.tried(u, k)
    body = request(users[0], k, content)
    if len(users) > 1:
        del body["target_user"]
        body["target_users"] = list(users)
    try:
        resp = api.send(body, timeout=timeout)
    except OSError:
        ledger.fail()
        return False
    if resp.status != 200:
        ledger.fail()
        return False
    ans = resp.json
    if len(users) == 1:
        ledger.accept(users[0], ans["id"], ans.get("seq"))
        return True
    # ids in the order of target_users; results (with seq) when given.
    res = {x.get("id"): x.get("seq") for x in ans.get("results") or []}
    assert len(ans["ids"]) == len(users), ans
    for u, i in zip(users, ans["ids"]):
        ledger.accept(u, i, res.get(i))
    return True


# ---- the user's log, and the check of every connection ----

class Log:
    def __init__(self, fields):
        self.last = int(fields.get("seq", 0))
        self.msgs = {}                          # position -> message
        for f, v in fields.items():
            if f.startswith("m:"):
                self.msgs[int(f[2:])] = json.loads(v)
        self.first = int(fields.get("first") or
                         (min(self.msgs) if self.msgs else 1))
        self.ids = {m["id"]: n for n, m in self.msgs.items()}


def read_log(port, user):
    """The log offline:{user} as notifyd(7) defines it, or None."""
    flat = rcmd(port, "HGETALL", f"offline:{{{user}}}") or []
    if not flat:
        return None
    return Log(dict(zip(flat[::2], flat[1::2])))


def log_last(port, user):
    v = rcmd(port, "HGET", f"offline:{{{user}}}", "seq")
    return int(v) if v else None


def settled(clients, ledger, port):
    """Every connection holds every accepted id of its user and reaches
    the end of its user's log."""
    lasts = {}
    for c in clients:
        rec = c.snapshot()
        ids = {i for i, _, _ in rec}
        if not set(ledger.accepted[c.user]) <= ids:
            return False
        if c.user not in lasts:
            lasts[c.user] = log_last(port, c.user)
        last = lasts[c.user]
        seqs = [s for _, s, _ in rec if s is not None]
        if last and (not seqs or max(seqs) < last or len(rec) < last):
            return False
    return True


def settle(clients, ledger, port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if settled(clients, ledger, port):
                break
        except (OSError, ConnectionError):
            pass
        time.sleep(0.1)
    # Room for a late duplicate to show.
    time.sleep(0.5)


def check(clients, ledger, port, start_pos=1, one_sender=False):
    """(ok, report lines) for every connection, against the senders, the
    log and each other. Each connection must hold positions start_pos
    .. last of its user's log, each once, in order, with the log's id at
    each, and every accepted id. Without positions (messages without
    seq) only one_sender gives an order to check: that of its answers."""
    lines, bad = [], False
    by_user = collections.defaultdict(list)
    for c in clients:
        by_user[c.user].append(c)
    for user, conns in sorted(by_user.items()):
        accepted = ledger.accepted[user]
        log = read_log(port, user)
        canon, ulines = {}, []
        if log is None:
            ulines.append(f"{user}: no log offline:{{{user}}} in Redis")
        else:
            lines.append(f"    {user}: log holds {log.first}..{log.last}, "
                         f"{len(accepted)} accepted")
            for n, m in log.msgs.items():
                canon[n] = m["id"]
                if m.get("seq") != n:
                    ulines.append(f"{user}: m:{n} holds seq {m.get('seq')}")
            gone = [i for i in accepted if i not in log.ids and
                    ledger.sender_seq.get(i, log.first) >= log.first]
            if gone:
                ulines.append(f"{user}: {len(gone)} accepted ids not in the"
                              f" log, e.g. {gone[:3]}")
            wrong = [i for i in accepted if i in log.ids and
                     ledger.sender_seq.get(i, log.ids[i]) != log.ids[i]]
            if wrong:
                ulines.append(f"{user}: {len(wrong)} ids at another "
                              f"position than their sender was told")
            if log.last != (max(log.msgs) if log.msgs else log.last):
                ulines.append(f"{user}: seq {log.last}, last entry "
                              f"{max(log.msgs)}")
        # Positions trimmed from the log: what the connections agree on.
        for c in conns:
            for i, s, _ in c.snapshot():
                if s is not None and s not in canon and log and \
                        s < log.first:
                    canon[s] = i
        known = ledger.attempts[user]
        for c in conns:
            rec = c.snapshot()
            ids = [i for i, _, _ in rec]
            count = collections.Counter(ids)
            dups = sum(n - 1 for n in count.values() if n > 1)
            missing = [i for i in accepted if i not in count]
            noseq = sum(1 for _, s, _ in rec if s is None)
            seqs = [s for _, s, _ in rec if s is not None]
            disorder = sum(1 for a, b in zip(seqs, seqs[1:]) if b <= a)
            if noseq and one_sender:
                # No positions to order by: the order the answers came
                # (one sequential sender: the send order).
                rank = {i: n for n, i in enumerate(accepted)}
                rk = [rank[i] for i in ids if i in rank]
                disorder += sum(1 for a, b in zip(rk, rk[1:]) if b <= a)
            gaps, misplaced = [], []
            if log is not None:
                have = set(seqs)
                gaps = [n for n in range(start_pos, log.last + 1)
                        if n not in have]
                misplaced = [(s, i) for i, s, _ in rec if s is not None and
                             canon.get(s, i) != i]
                gaps += [s for s in have if s > log.last or s < start_pos]
            unknown = [i for i, _, k in rec if k not in known]
            sess = c.sessions
            resumed = [s for s in sess if s.since is not None]
            problems = c.problems
            fine = not (dups or missing or noseq or disorder or gaps or
                        misplaced or unknown or problems or ulines)
            bad = bad or not fine
            lines.append(
                f"{'ok ' if fine else 'BAD'} {c.name}: {len(rec)} received "
                f"in {len(sess)} sessions ({len(resumed)} resumed); "
                f"{len(missing)} of {len(accepted)} accepted missing; "
                f"{dups} duplicates; {disorder} out of order; "
                f"{len(gaps)} positions missing of {start_pos}.."
                f"{log.last if log else '?'}; {noseq} without seq; "
                f"{len(misplaced)} at a position the log disagrees with; "
                f"{len(unknown)} unknown; {len(problems)} protocol "
                f"problems")
            for what, xs in (("missing", missing), ("positions", gaps),
                             ("misplaced", misplaced), ("protocol", problems)):
                if xs:
                    lines.append(f"      {what}: {xs[:4]}")
        lines.extend("    " + u for u in ulines)
    return not bad, lines


def primer(redis_url, ledger, clients, users, timeout=10.0):
    """Position 1 of each user's log, once every client is connected: from
    here on every client has an id to resume after."""
    assert send_batch(redis_url, ledger,
                      [request(u, ledger.next_k()) for u in users])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(c.count() >= 1 for c in clients):
            return
        time.sleep(0.02)
    raise AssertionError("primer not delivered to "
                         f"{[c.name for c in clients if not c.count()]}")


def report(title, ok, lines, extra=()):
    text = "\n".join([title, *lines, *extra])
    print(text)
    return text


# ---- the tests ----

def test_two_instances_subscriber_killed_repeatedly(redis, daemons, keys):
    """2,000 sends to one user with two connections on each of two
    instances, while the first instance's subscriber connection is killed
    five times: every connection holds the whole log, once, in order."""
    pa, pb = free_port(), free_port()
    ws_instance(daemons, redis.url, keys, pa, "ws-a")
    ws_instance(daemons, redis.url, keys, pb, "ws-b")
    ledger = Ledger()
    tok = mint(sub="alice", ttl=600)
    with ClientLoop() as cl:
        clients = [cl.add(ResumeClient(p, tok, "alice", f"alice@{n}"))
                   for p, n in ((pa, "a1"), (pa, "a2"), (pb, "b1"),
                                (pb, "b2"))]
        cl.wait_connected()
        primer(redis.url, ledger, clients, ["alice"])

        batches, per = 40, 50
        points = (4, 11, 18, 25, 32)
        progress = [0]
        kills, errors = [], []
        abort = threading.Event()

        def sender():
            try:
                for b in range(batches):
                    # Never more than a few batches past a kill not yet
                    # made: every kill lands while sends go on.
                    deadline = time.monotonic() + 10
                    while sum(1 for p in points if p + 4 <= b) > \
                            len(kills) and time.monotonic() < deadline:
                        if abort.wait(0.005):
                            return
                    reqs = [request("alice", ledger.next_k())
                            for _ in range(per)]
                    assert send_batch(redis.url, ledger, reqs)
                    progress[0] = b + 1
                    time.sleep(0.03)
            except BaseException as e:  # reported by the main thread
                errors.append(e)
        t = threading.Thread(target=sender, daemon=True)
        t.start()
        sid = None
        try:
            for point in points:
                deadline = time.monotonic() + 30
                while progress[0] < point and t.is_alive() and \
                        time.monotonic() < deadline:
                    time.sleep(0.005)
                sid = wait_sub(redis.port, "ws-a", not_id=sid)
                if rcmd(redis.port, "CLIENT", "KILL", "ID", sid) == 1 and \
                        t.is_alive():
                    kills.append((progress[0], sid))
        finally:
            if len(kills) < len(points):
                abort.set()
            t.join(60)
        assert not t.is_alive() and not errors, errors
        # Five kills of a live subscription, each while sends went on.
        assert len(kills) == 5, kills
        assert ledger.n_accepted() == 1 + batches * per
        settle(clients, ledger, redis.port, 10)
        ok, lines = check(clients, ledger, redis.port, one_sender=True)
    text = report(f"kills at batches {[k for k, _ in kills]}", ok, lines)
    assert ok, text


def test_pubsub_output_buffer_drop(own_redis, daemons, keys, tmp_path):
    """Redis drops the subscribers at client-output-buffer-limit pubsub in
    the middle of a burst of large messages to several users: the
    connections of the dropped instances still get everything."""
    logfile = str(tmp_path / "redis.log")
    rd = own_redis("--logfile", logfile)
    rcmd(rd.port, "CONFIG", "SET", "client-output-buffer-limit",
         "pubsub 64kb 32kb 1")
    pa, pb = free_port(), free_port()
    # Big sends queue: the subject is the pubsub drop, not slow consumers.
    for p, name in ((pa, "ws-a"), (pb, "ws-b")):
        ws_instance(daemons, rd.url, keys, p, name, "--send-queue-max", "16M")
    api = start_api(daemons, rd, tmp_path, "--log-level", "warn")
    users = ["u1", "u2", "u3"]
    ledger = Ledger()
    with ClientLoop() as cl:
        clients = [cl.add(ResumeClient(p, mint(sub=u, ttl=600), u,
                                       f"{u}@{n}"))
                   for u in users for p, n in ((pa, "a"), (pb, "b"))]
        cl.wait_connected()
        primer(rd.url, ledger, clients, users)
        before = sub_ids(rd.port)
        assert set(before) == {"ws-a", "ws-b"}, before
        # One pipelined burst: small messages and, every other round, a
        # 100 KB one per user (over the 64 KB hard limit by itself).
        reqs = []
        for i in range(12):
            for u in users:
                k = ledger.next_k()
                big = "x" * (100 * 1024) if i % 2 else None
                reqs.append(request(u, k, big))
        assert send_batch(rd.url, ledger, reqs, "--max-content", "120k")
        # The same through notifyd-api, one request to every user.
        for _ in range(3):
            assert send_api(api, ledger, users, content="y" * (60 * 1024))
        assert send_batch(rd.url, ledger,
                          [request(u, ledger.next_k()) for u in users * 5])
        settle(clients, ledger, rd.port, 10)
        ok, lines = check(clients, ledger, rd.port)
        after = sub_ids(rd.port)
    with open(logfile) as f:
        dropped = [ln for ln in f if "overcoming of output buffer limits"
                   in ln]
    text = report(f"drops: {len(dropped)}; subscribers before {dict(before)}"
                  f" after {dict(after)}", ok, lines)
    # The drop really happened, to both instances.
    for name in ("ws-a", "ws-b"):
        assert any(f"name=notifyd-ws:sub:{name} " in ln for ln in dropped), \
            text
        assert after.get(name) and after[name] != before[name], text
    assert ok, text


def test_concurrent_sends_live_order_equals_log_order(redis, daemons, keys,
                                                      tmp_path):
    """Several senders at once to one user: the connections on two
    instances get the messages live in the order of their positions, the
    log holds that order, and a device that resumes after position 1
    replays exactly the same order."""
    pa, pb = free_port(), free_port()
    ws_instance(daemons, redis.url, keys, pa, "ws-a")
    ws_instance(daemons, redis.url, keys, pb, "ws-b")
    api = start_api(daemons, redis, tmp_path, "--log-level", "warn",
                    "--threads", "4")
    ledger = Ledger()
    tok = mint(sub="alice", ttl=600)
    who = {}   # k -> which sender

    with ClientLoop() as cl:
        clients = [cl.add(ResumeClient(pa, tok, "alice", "alice@a")),
                   cl.add(ResumeClient(pb, tok, "alice", "alice@b"))]
        cl.wait_connected()
        primer(redis.url, ledger, clients, ["alice"])

        go = threading.Event()
        results = []

        def batch_sender(n):
            reqs = []
            for _ in range(200):
                k = ledger.next_k()
                who[k] = f"batch{n}"
                reqs.append(request("alice", k))
            go.wait(10)
            results.append(send_batch(redis.url, ledger, reqs))

        def api_sender(n):
            go.wait(10)
            for _ in range(100):
                k = ledger.next_k()
                who[k] = f"api{n}"
                results.append(send_api(api, ledger, ["alice"], k=k))

        threads = [threading.Thread(target=batch_sender, args=(n,))
                   for n in range(3)]
        threads += [threading.Thread(target=api_sender, args=(n,))
                    for n in range(2)]
        for t in threads:
            t.start()
        go.set()
        for t in threads:
            t.join(60)
        assert all(results) and len(results) == 203, \
            "every send must be accepted"
        settle(clients, ledger, redis.port, 10)
        ok, lines = check(clients, ledger, redis.port)
        live = [[i for i, _, _ in c.snapshot()] for c in clients]

        # A second device resuming after position 1 replays the rest.
        log = read_log(redis.port, "alice")
        replay = None
        if log is not None and log.msgs:
            dev = ResumeClient(pa, tok, "alice", "alice@replay")
            dev.last_id = log.msgs[1]["id"]
            cl.add(dev)
            deadline = time.monotonic() + 5
            while dev.count() < len(log.msgs) - 1 and \
                    time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)     # room for one too many
            replay = dev
    in_log = [log.msgs[n]["id"] for n in sorted(log.msgs)] if log else None
    # notify-tail --offline lists the log in position order (and changes
    # nothing), a replay independent of notifyd-ws.
    p = run("notify-tail", "--offline", "alice", "--json", "--redis",
            redis.url, timeout=10)
    listed = [json.loads(x)["id"] for x in p.stdout.decode().splitlines()]
    # The senders did run at the same time: their messages interleave.
    ks = [m["data"]["k"] for _, m in sorted(log.msgs.items())] if log else []
    runs = sum(1 for a, b in zip(ks, ks[1:]) if who.get(a) != who.get(b))
    extra = [f"live orders equal: {live[0] == live[1]}; sender switches "
             f"along the log: {runs}; notify-tail --offline: exit "
             f"{p.returncode}, {len(listed)} listed"]
    if replay is not None:
        extra.append(f"replay: {len(replay.snapshot())} messages, sessions "
                     f"{replay.sessions}, problems {replay.problems[:3]}")
    text = report("concurrent senders", ok, lines, extra)
    assert ok, text
    assert all(len(c.sessions) == 1 for c in clients), \
        "the live connections must not have reconnected: " + text
    assert live[0] == live[1] == in_log == listed, text
    assert runs >= 10, "the senders did not overlap: " + text
    assert replay is not None and not replay.problems, text
    assert [i for i, _, _ in replay.snapshot()] == in_log[1:], text
    assert replay.sessions[0].resume is not None, text


def test_randomized_faults(own_redis, daemons, keys, tmp_path):
    """Steady sends (notify-send and notifyd-api) to 3-4 users with 2-3
    connections each over 2-3 instances, under random faults: subscriber
    kills, instance SIGKILL and restart, client drops with resume, Redis
    restarts (clean and SIGKILL) with appendfsync always. Every connection
    ends with its user's whole log, once each, in order; nothing accepted
    is lost."""
    seed = int(os.environ.get("NOTIFYD_FAULT_SEED") or
               random.SystemRandom().randrange(1 << 32))
    soak = os.environ.get("NOTIFYD_SOAK_SECONDS")
    duration = float(soak) if soak else 20.0
    level = "error" if soak else "warn"
    rng = random.Random(seed)
    tag = f"[NOTIFYD_FAULT_SEED={seed}, {duration:g} s]"
    print(f"randomized faults {tag}", flush=True)

    rd = own_redis(*PERSIST)
    n_inst = rng.choice((2, 3))
    ports = [free_port() for _ in range(n_inst)]
    names = [f"ws-{i}" for i in range(n_inst)]
    inst = [ws_instance(daemons, rd.url, keys, p, n, level=level)
            for p, n in zip(ports, names)]
    api = start_api(daemons, rd, tmp_path, "--log-level", level,
                    "--redis-timeout", "1s")
    users = [f"user{i}" for i in range(rng.choice((3, 4)))]
    ledger = Ledger()
    faults = []          # (seconds into the run, what)
    t0 = time.monotonic()

    def note(what):
        faults.append((round(time.monotonic() - t0, 2), what))
        if soak:
            print(f"{faults[-1][0]:8.2f}s {what}", flush=True)

    with ClientLoop() as cl:
        clients = []
        for ui, u in enumerate(users):
            tok = mint(sub=u, ttl=int(duration) + 3600)
            for j in range(rng.choice((2, 3))):
                i = (ui + j) % n_inst
                clients.append(cl.add(ResumeClient(
                    ports[i], tok, u, f"{u}#{j}@{names[i]}", seed=seed)))
        cl.wait_connected()
        primer(rd.url, ledger, clients, users)

        stop = threading.Event()
        errors = []

        def cli_sender(srng):
            while not stop.is_set():
                if srng.random() < 0.5:
                    send_one(rd.url, ledger, srng.choice(users))
                else:
                    reqs = [request(srng.choice(users), ledger.next_k())
                            for _ in range(srng.randint(1, 12))]
                    send_batch(rd.url, ledger, reqs)
                stop.wait(srng.uniform(0.005, 0.05))

        def api_sender(srng):
            while not stop.is_set():
                if srng.random() < 0.7:
                    send_api(api, ledger, [srng.choice(users)])
                else:
                    send_api(api, ledger, srng.sample(
                        users, srng.randint(2, len(users))))
                stop.wait(srng.uniform(0.005, 0.05))

        def guarded(fn, arg):
            def body():
                try:
                    fn(arg)
                except BaseException as e:
                    errors.append(repr(e))
            return body
        senders = [threading.Thread(target=guarded(f, random.Random(
            f"{seed}/{f.__name__}")), daemon=True)
            for f in (cli_sender, api_sender)]

        def sub_kill():
            if rng.random() < 0.5:
                n = rcmd(rd.port, "CLIENT", "KILL", "TYPE", "pubsub")
                note(f"CLIENT KILL TYPE pubsub: {n}")
            else:
                i = rng.randrange(n_inst)
                sid = wait_sub(rd.port, names[i])
                n = rcmd(rd.port, "CLIENT", "KILL", "ID", sid)
                note(f"CLIENT KILL ID {sid} ({names[i]}'s subscriber): {n}")

        def instance_kill():
            i = rng.randrange(n_inst)
            pause = rng.uniform(0, 1.0)
            inst[i].kill()
            note(f"SIGKILL {names[i]}, restart in {pause:.2f}s")
            time.sleep(pause)
            inst[i] = ws_instance(daemons, rd.url, keys, ports[i], names[i],
                                  level=level)

        def client_drop():
            c = rng.choice(clients)
            abrupt = rng.random() < 0.5
            dropped = cl.drop(c, abrupt=abrupt)
            note(f"drop {c.name} ({'abort' if abrupt else 'close 1000'}"
                 f"{'' if dropped else ', was not connected'})")

        def redis_restart():
            clean = rng.random() < 0.5
            pause = rng.uniform(0, 1.0)
            if clean:
                try:
                    rcmd(rd.port, "SHUTDOWN")
                except (OSError, ConnectionError, RuntimeError):
                    pass
                rd.proc.wait(10)
            else:
                rd.stop()
            note(f"Redis {'SHUTDOWN' if clean else 'SIGKILL'}, restart in "
                 f"{pause:.2f}s")
            time.sleep(pause)
            rd.start(*PERSIST)
            deadline = time.monotonic() + 15
            while not all(readyz(p) == 200 for p in ports):
                assert time.monotonic() < deadline, \
                    f"instances not ready after the Redis restart {tag}"
                time.sleep(0.05)

        kinds = {"sub_kill": sub_kill, "instance_kill": instance_kill,
                 "client_drop": client_drop, "redis_restart": redis_restart}
        # Each kind once at least, then a weighted mix; at random times.
        n_faults = max(len(kinds), int(duration / 2.5))
        plan = list(kinds) + rng.choices(
            list(kinds), weights=(3, 2, 3, 1), k=n_faults - len(kinds))
        rng.shuffle(plan)
        times = sorted(rng.uniform(0.1, 0.85) * duration for _ in plan)

        for t in senders:
            t.start()
        try:
            for at, kind in zip(times, plan):
                left = t0 + at - time.monotonic()
                if left > 0:
                    time.sleep(left)
                kinds[kind]()
            left = t0 + duration - time.monotonic()
            if left > 0:
                time.sleep(left)
        finally:
            stop.set()
            for t in senders:
                t.join(60)
        note("sends stopped")
        assert not errors, f"{tag} sender errors: {errors}"
        settle(clients, ledger, rd.port, 30 if soak else 15)
        ok, lines = check(clients, ledger, rd.port)
        note("checked")
    stats = (f"{ledger.n_accepted()} accepted, {ledger.failed} sends "
             f"failed; {len(clients)} connections of {len(users)} users on "
             f"{n_inst} instances; faults: {len(plan)}")
    text = report(f"randomized faults {tag}: {stats}", ok, lines,
                  [f"faults: {faults}"])
    assert ok, text
    # Not vacuous: the run did send, and the faults did hit connections.
    assert ledger.n_accepted() > 100 * duration / 20, text
    assert sum(len(c.resumed_sessions()) for c in clients) >= 1, text
