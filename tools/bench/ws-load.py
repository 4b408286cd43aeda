"""Load client of tools/bench-ws.sh: many idle WebSocket connections to
notifyd-ws, then delivery throughput and latency. Loopback only.

usage: ws-load.py --ws-port P --redis-port R --secret-file F --pid PID
                  [--conns N] [--targeted K] [--broadcasts B]

Prints figures; it measures, it does not pass or fail. The client is
plain asyncio on raw sockets (no per-connection library objects) so that
10,000 connections fit in one process next to the daemon on 2 cores.
"""
import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import resource
import socket
import struct
import time


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(secret, sub):
    head = b64url(b'{"alg":"HS256","typ":"JWT"}')
    body = b64url(json.dumps({"sub": sub, "exp": int(time.time()) + 3600})
                  .encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Conn:
    """One raw WebSocket client; counts messages and latency samples."""
    __slots__ = ("reader", "writer", "received", "lat")

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.received = 0
        self.lat = None


async def connect(port, tok):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /ws/notifications?token={tok} HTTP/1.1\r\n"
                  f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head[:40])
    return Conn(reader, writer)


async def read_loop(c, lat_samples, sample_every):
    """Read frames, answer pings, count text messages."""
    r = c.reader
    try:
        while True:
            h = await r.readexactly(2)
            n = h[1] & 0x7f
            if n == 126:
                n = struct.unpack("!H", await r.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await r.readexactly(8))[0]
            payload = await r.readexactly(n)
            op = h[0] & 0x0f
            if op == 9:   # ping: answer with a masked pong
                mask = os.urandom(4)
                c.writer.write(bytes([0x8a, 0x80 | n]) + mask + bytes(
                    b ^ mask[i % 4] for i, b in enumerate(payload)))
                continue
            if op == 8:
                return
            if op == 1:
                c.received += 1
                if sample_every and c.received % sample_every == 0:
                    msg = json.loads(payload)
                    sent = msg.get("data", {}).get("t")
                    if sent:
                        lat_samples.append(time.time() - sent)
    except (asyncio.IncompleteReadError, ConnectionError):
        return


class Redis:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.buf = b""

    @staticmethod
    def enc(*args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def pipeline(self, cmds):
        self.s.sendall(b"".join(self.enc(*c) for c in cmds))
        # Replies are simple (integers, bulk): count CRLF-terminated lines.
        need = len(cmds)
        got = 0
        while got < need:
            chunk = self.s.recv(1 << 20)
            self.buf += chunk
            lines = self.buf.split(b"\r\n")
            self.buf = lines.pop()
            got += sum(1 for x in lines if x[:1] in (b":", b"+", b"-"))


def iso_ms(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + \
        ".%03dZ" % (int(t * 1000) % 1000)


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_latency(port):
    """p50/p99 upper bounds (s) from notifyd-ws's own histogram
    (message timestamp -> socket write), as /metrics reports it."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    buckets = []
    for line in data.decode().splitlines():
        if line.startswith("notifyd_ws_delivery_latency_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le),
                            float(line.split()[-1])))
    total = buckets[-1][1] if buckets else 0
    out = []
    for q in (0.5, 0.99):
        out.append(next((le for le, n in buckets if n >= q * total),
                        float("nan")))
    return out, total


def msg(user, i):
    now = time.time()
    ms = int(now * 1000)
    mid = "%08x-%04x-7%03x-8%03x-%012x" % (ms >> 16, ms & 0xffff, i >> 12 & 0xfff,
                                        i & 0xfff, int.from_bytes(os.urandom(6), "big"))
    return mid, json.dumps({"id": mid, "type": "bench", "content": "x" * 64,
                            "data": {"t": now},
                            "timestamp": iso_ms(now),
                            "target_user": user, "channel": None},
                           separators=(",", ":"))


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ws-port", type=int, required=True)
    ap.add_argument("--redis-port", type=int, required=True)
    ap.add_argument("--secret-file", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--targeted", type=int, default=50000)
    ap.add_argument("--broadcasts", type=int, default=20)
    ap.add_argument("--replay-users", type=int, default=20)
    ap.add_argument("--replay-messages", type=int, default=1000)
    ap.add_argument("--notify-send", required=True)
    ap.add_argument("--lua-file", required=True,
                    help="the send script (tools/bench/print-lua prints it)")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with open(a.secret_file, "rb") as f:
        secret = f.read().rstrip(b"\n")

    await asyncio.sleep(0.5)
    rss0 = rss_kib(a.pid)
    conns = []
    lat = []
    tasks = []
    sem = asyncio.Semaphore(200)
    t0 = time.monotonic()

    async def one(i):
        async with sem:
            c = await connect(a.ws_port, token(secret, f"user{i}"))
            conns.append(c)
            tasks.append(asyncio.ensure_future(read_loop(c, lat, 1)))
    await asyncio.gather(*(one(i) for i in range(a.conns)))
    t_conn = time.monotonic() - t0
    await asyncio.sleep(2.0)   # replays done, buffers settled
    rss1 = rss_kib(a.pid)
    per = (rss1 - rss0) * 1024 / max(1, len(conns))
    print(f"connections:            {len(conns)} opened in {t_conn:.2f}s "
          f"({len(conns) / t_conn:.0f}/s, handshake + JWT + replay)")
    print(f"daemon RSS:             {rss0} KiB idle -> {rss1} KiB with "
          f"{len(conns)} idle authenticated connections")
    print(f"RSS per idle connection: {per:.0f} bytes")

    r = Redis(a.redis_port)
    redis_url = f"redis://127.0.0.1:{a.redis_port}"

    with open(a.lua_file) as f:
        lua = f.read()
    # Loaded once and run by its SHA1, so that the load client does not
    # spend its time sending the script's text with every message.
    sha = hashlib.sha1(lua.encode()).hexdigest()
    r.s.sendall(Redis.enc("SCRIPT", "LOAD", lua))
    reply = b""
    while reply.count(b"\r\n") < 2:      # $40 CRLF sha CRLF
        reply += r.s.recv(4096)
    assert sha.encode() in reply, reply

    def send_cmd(user, i):
        """The one atomic send step of notifyd(7), as the senders run it."""
        mid, text = msg(user, i)
        return ("EVALSHA", sha, 2, f"offline:{{{user}}}", "notifications",
                604800, 1000, mid, text)

    # Latency at a steady low rate (200 msg/s) with every connection open:
    # what one user sees, without the load client's own queueing.
    lat.clear()
    n_low = 500
    before = sum(c.received for c in conns)
    for i in range(n_low):
        r.pipeline([send_cmd(f"user{(i * 7919) % len(conns)}", i)])
        await asyncio.sleep(0.005)
    deadline = time.monotonic() + 30
    while sum(c.received for c in conns) - before < n_low and \
            time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    print(f"latency at 200 msg/s:   publish->client p50 "
          f"{pct(lat, 50) * 1e3:.2f} ms, p99 {pct(lat, 99) * 1e3:.2f} ms "
          f"({len(lat)} samples, {len(conns)} connections open)")

    # Targeted throughput: K messages round-robin over all users, through
    # the real path (Lua append+publish, pub/sub, socket write, read marks).
    k = a.targeted
    before = sum(c.received for c in conns)
    cpu0 = cpu_s(a.pid)
    lat.clear()
    t0 = time.monotonic()
    batch = []
    for i in range(k):
        batch.append(send_cmd(f"user{i % len(conns)}", i))
        if len(batch) == 500:
            r.pipeline(batch)
            batch = []
            await asyncio.sleep(0)
    if batch:
        r.pipeline(batch)
    t_pub = time.monotonic() - t0
    deadline = time.monotonic() + 120
    while sum(c.received for c in conns) - before < k and \
            time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    t_all = time.monotonic() - t0
    got = sum(c.received for c in conns) - before
    print(f"targeted:               {got}/{k} delivered in {t_all:.2f}s = "
          f"{got / t_all:.0f} msg/s (publishing alone {k / t_pub:.0f} msg/s)")
    print(f"  latency publish->client: p50 {pct(lat, 50) * 1e3:.1f} ms, "
          f"p99 {pct(lat, 99) * 1e3:.1f} ms (client on the same 2 cores)")
    (p50, p99), n = server_latency(a.ws_port)
    print(f"  daemon CPU {cpu_s(a.pid) - cpu0:.2f}s for {got} deliveries; "
          f"daemon histogram (timestamp->write): p50 <= {p50 * 1e3:g} ms, "
          f"p99 <= {p99 * 1e3:g} ms")
    cpu0 = cpu_s(a.pid)

    # Broadcast fan-out: each message encoded once, written to every socket.
    before = sum(c.received for c in conns)
    lat.clear()
    t0 = time.monotonic()
    cmds = []
    for i in range(a.broadcasts):
        mid, text = msg(None, i)
        cmds.append(("PUBLISH", "notifications", text))
    r.pipeline(cmds)
    want = a.broadcasts * len(conns)
    deadline = time.monotonic() + 120
    while sum(c.received for c in conns) - before < want and \
            time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    t_all = time.monotonic() - t0
    got = sum(c.received for c in conns) - before
    print(f"broadcast:              {a.broadcasts} messages x {len(conns)} "
          f"connections = {got}/{want} deliveries in {t_all:.2f}s = "
          f"{got / t_all:.0f} deliveries/s")
    print(f"  latency publish->client: p50 {pct(lat, 50) * 1e3:.1f} ms, "
          f"p99 {pct(lat, 99) * 1e3:.1f} ms (bound by the Python reader)")
    print(f"  daemon CPU {cpu_s(a.pid) - cpu0:.2f}s for {got} deliveries "
          f"(each message encoded once, shared by every queue)")
    for c in conns:
        c.writer.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    # Replay: users come back to stored messages, all at once.
    nu, nm = a.replay_users, a.replay_messages
    lines = "".join(json.dumps({"target_user": f"back{u}",
                                "notification_type": "bench",
                                "content": "y" * 200}) + "\n"
                    for _ in range(nm) for u in range(nu))
    p = await asyncio.create_subprocess_exec(
        a.notify_send, "--redis", redis_url, "--batch", "-q",
        stdin=asyncio.subprocess.PIPE)
    await p.communicate(lines.encode())
    cpu0 = cpu_s(a.pid)
    rss0 = rss_kib(a.pid)
    back, tasks = [], []
    t0 = time.monotonic()
    for u in range(nu):
        c = await connect(a.ws_port, token(secret, f"back{u}"))
        back.append(c)
        tasks.append(asyncio.ensure_future(read_loop(c, [], 0)))
    deadline = time.monotonic() + 120
    peak = rss0
    while sum(c.received for c in back) < nu * nm and \
            time.monotonic() < deadline:
        peak = max(peak, rss_kib(a.pid))
        await asyncio.sleep(0.01)
    t_all = time.monotonic() - t0
    got = sum(c.received for c in back)
    print(f"replay:                 {nu} users x {nm} stored messages, "
          f"{got}/{nu * nm} delivered in {t_all:.2f}s = {got / t_all:.0f} "
          f"msg/s; daemon CPU {cpu_s(a.pid) - cpu0:.2f}s, RSS peak "
          f"+{peak - rss0} KiB")
    for c in back:
        c.writer.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
