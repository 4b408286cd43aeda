"""The systemd units of contrib/systemd/, checked by systemd's own tools
and run the way systemd runs them.

systemd cannot run as PID 1 here, so the units are proven in two halves:
systemd-analyze (verify, and security for the hardening) reads the very
files in a root made of this machine's own units plus ours, and the
[Service] sections are executed as systemd would: EnvironmentFile=,
ExecStart= with its specifiers, NOTIFY_SOCKET for Type=notify (the
daemon must say READY=1), ExecReload= with $MAINPID, KillSignal= within
TimeoutStopSec=. test_deb.py does the same with the installed package,
as the notifyd user.
"""
import asyncio
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid

import jwt
import pytest
import websockets

from conftest import BIN, ROOT, Redis, assert_no_memory_report, free_port

UNITS = os.path.join(ROOT, "contrib", "systemd")
ENV_FILE = os.path.join(ROOT, "contrib", "notifyd.default")
SERVICES = ("notifyd-api.service", "notifyd-ws@1.service",
            "notifyd-ws@2.service")


# ---- what systemd does with a unit, for the parts notifyd uses ----

def parse_unit(path):
    """{section: [(key, value), ...]} of a unit file (keys may repeat)."""
    sections, cur = {}, None
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                cur = sections.setdefault(line[1:-1], [])
                continue
            key, _, value = line.partition("=")
            cur.append((key.strip(), value.strip()))
    return sections


def unit_value(unit, section, key, default=None):
    """The last value of key, as systemd takes for single-valued keys."""
    values = [v for k, v in unit.get(section, []) if k == key]
    return values[-1] if values else default


def load_unit(units_dir, name):
    """The unit name (notifyd-ws@1.service loads the template), with its
    instance for specifier expansion."""
    instance = ""
    file = name
    if "@" in name:
        prefix, rest = name.split("@", 1)
        instance, suffix = rest.rsplit(".", 1)
        file = f"{prefix}@.{suffix}"
    unit = parse_unit(os.path.join(units_dir, file))
    unit["_instance"] = instance
    return unit


def expand(unit, text, mainpid=None):
    """systemd's specifiers that the units use: %i %H %%, and $MAINPID."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "%" and i + 1 < len(text):
            spec = text[i + 1]
            out.append({"i": unit["_instance"], "H": socket.gethostname(),
                        "%": "%"}[spec])
            i += 2
            continue
        out.append(c)
        i += 1
    text = "".join(out)
    if mainpid is not None:
        text = text.replace("$MAINPID", str(mainpid))
    return text


def read_env_file(path):
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them."""
    env = {}
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            key, _, value = line.partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            env[key.strip()] = value
    return env


def parse_seconds(text):
    if text == "infinity":
        return None
    units = {"ms": 0.001, "s": 1, "min": 60, "m": 60}
    for suffix, mult in units.items():
        if text.endswith(suffix) and text[:-len(suffix)].isdigit():
            return int(text[:-len(suffix)]) * mult
    return float(text)


class NotifySocket:
    """The socket systemd listens on for sd_notify (an abstract one)."""

    def __init__(self):
        self.name = f"@notifyd-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])

    def wait_for(self, state, timeout):
        """The datagrams up to and including one holding state (e.g.
        READY=1), or AssertionError."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.sock], [], [],
                                    max(0, deadline - time.monotonic()))
            if not r:
                break
            msg = self.sock.recv(4096).decode()
            seen.append(msg)
            if state in msg.split("\n"):
                return seen
        raise AssertionError(f"no {state} on NOTIFY_SOCKET within {timeout}s"
                             f" (got {seen!r})")

    def close(self):
        self.sock.close()


class Service:
    """One [Service] run as systemd would: its ExecStart with the
    EnvironmentFile's variables and NOTIFY_SOCKET, optionally as another
    user (setpriv), paths under /usr/bin mapped to bin_dir."""

    def __init__(self, units_dir, name, env_file, bin_dir=None, user=None,
                 log=None, wrap=()):
        self.name = name
        self.unit = load_unit(units_dir, name)
        self.svc = self.unit["Service"]
        self.bin_dir = bin_dir
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("NOTIFYD_") and k != "NOTIFY_SOCKET"}
        unit_env = unit_value(self.unit, "Service", "EnvironmentFile")
        assert unit_env is not None, f"{name}: no EnvironmentFile="
        env.update(read_env_file(env_file))
        self.notify = NotifySocket()
        env["NOTIFY_SOCKET"] = self.notify.name
        argv = shlex.split(expand(self.unit,
                                  unit_value(self.unit, "Service", "ExecStart")))
        argv[0] = self._map(argv[0])
        if user is not None:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}",
                    "--init-groups", "--"] + argv
        if wrap:
            # LeakSanitizer cannot run under ptrace (strace) and makes a
            # sanitizer build exit 1; every other test checks for leaks.
            env["ASAN_OPTIONS"] = ":".join(
                filter(None, [env.get("ASAN_OPTIONS"), "detect_leaks=0"]))
        argv = list(wrap) + argv
        self.wrapped = bool(wrap)
        self.argv = argv
        self.log = log if log is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def _map(self, path):
        if self.bin_dir and path.startswith("/usr/bin/"):
            return os.path.join(self.bin_dir, os.path.basename(path))
        return path

    def value(self, key, default=None):
        return unit_value(self.unit, "Service", key, default)

    def wait_ready(self, timeout=10.0):
        assert self.value("Type") == "notify"
        return self.notify.wait_for("READY=1", timeout)

    def main_pid(self):
        """The daemon's pid (behind the wrapper, if any)."""
        if not self.wrapped:
            return self.proc.pid
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            return int(f.read().split()[0])

    def reload(self):
        """Run ExecReload= with $MAINPID, as systemctl reload does."""
        cmd = shlex.split(expand(self.unit, self.value("ExecReload"),
                                 mainpid=self.main_pid()))
        subprocess.run(cmd, check=True, timeout=10)

    def stop(self):
        """KillSignal=, then wait TimeoutStopSec=; returns the exit code
        (SIGKILL and -9 when it did not stop in time, as systemd would)."""
        sig = getattr(signal, self.value("KillSignal", "SIGTERM"))
        limit = parse_seconds(self.value("TimeoutStopSec", "90s"))
        if self.proc.poll() is None:
            os.kill(self.main_pid(), sig)
            try:
                self.proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.notify.close()
        return self.proc.returncode


def operator_env_file(tmp_path, base, settings):
    """base as the operator edits it: the settings appended."""
    path = tmp_path / "notifyd.env"
    with open(base) as f:
        text = f.read()
    text += "\n# set for this host\n" + "".join(
        f"{k}={v}\n" for k, v in settings.items())
    path.write_text(text)
    return str(path)


# ---- systemd-analyze ----

def analyze_root(tmp_path):
    """A root for systemd-analyze --root: this machine's units and ours,
    the executables the units name, and the environment file."""
    root = tmp_path / "root"
    unit_dir = root / "lib" / "systemd" / "system"
    shutil.copytree("/lib/systemd/system", unit_dir, symlinks=True)
    for f in os.listdir(UNITS):
        shutil.copy(os.path.join(UNITS, f), unit_dir / f)
    (root / "usr" / "bin").mkdir(parents=True)
    for prog in ("notifyd-ws", "notifyd-api"):
        shutil.copy(os.path.join(BIN, prog), root / "usr" / "bin" / prog)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy("/bin/kill", root / "bin" / "kill")
    (root / "etc" / "notifyd").mkdir(parents=True)
    shutil.copy(ENV_FILE, root / "etc" / "notifyd" / "notifyd.env")
    return str(root)


def man_path(tmp_path):
    """A MANPATH holding the repo's pages, for Documentation=man:..."""
    top = tmp_path / "man"
    for page in os.listdir(os.path.join(ROOT, "man")):
        sect = page.rsplit(".", 1)[-1]
        d = top / f"man{sect}"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(ROOT, "man", page), d / page)
    return str(top)


def analyze(*args, env=None):
    return subprocess.run(["systemd-analyze", *args], capture_output=True,
                          text=True, timeout=60, env=env)


@pytest.fixture
def need_analyze():
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package "
                    "systemd, in make deps)")


def test_units_verify_clean(tmp_path, need_analyze):
    """systemd-analyze verify finds nothing to say about any unit: keys,
    values, executables, the man pages of Documentation=."""
    root = analyze_root(tmp_path)
    env = dict(os.environ, MANPATH=man_path(tmp_path))
    names = list(SERVICES) + ["notifyd.target"]
    r = analyze("verify", "--man=yes", f"--root={root}", *names, env=env)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", \
        r.stdout + r.stderr


def test_units_hardened(tmp_path, need_analyze):
    """systemd-analyze security rates each service's exposure at most 2.0
    of 10 ("OK"): no capabilities, read-only system, no home, own /tmp,
    filtered system calls and address families."""
    root = analyze_root(tmp_path)
    for name in SERVICES:
        r = analyze("security", "--offline=yes", "--threshold=20",
                    f"--root={root}", name)
        assert r.returncode == 0, r.stdout + r.stderr
        line = [ln for ln in r.stdout.splitlines() if "Overall exposure" in ln]
        assert line, r.stdout
        score = float(line[0].split(":")[1].split()[0])
        assert score <= 2.0, r.stdout


def test_units_run_as_systemd_would(tmp_path):
    """Started from their unit files (EnvironmentFile=, ExecStart=), both
    notifyd-ws@N share the port, and with notifyd-api each says READY=1
    on NOTIFY_SOCKET once it serves; ExecReload= keeps them running;
    KillSignal= stops them with exit 0 within TimeoutStopSec=."""
    redis = Redis(tmp_path).start()
    secret = tmp_path / "jwt-secret"
    secret.write_text(os.urandom(16).hex() + "\n")
    keys = tmp_path / "api-keys"
    keys.write_text("ops " + os.urandom(16).hex() + "\n")
    ws_port, api_port = free_port(), free_port()
    env_file = operator_env_file(tmp_path, ENV_FILE, {
        "NOTIFYD_REDIS_URL": redis.url,
        "NOTIFYD_WS_LISTEN": f"127.0.0.1:{ws_port}",
        "NOTIFYD_API_LISTEN": f"127.0.0.1:{api_port}",
        "NOTIFYD_JWT_SECRET_FILE": str(secret),
        "NOTIFYD_API_KEYS_FILE": str(keys),
    })
    log = open(tmp_path / "daemons.log", "w+")
    started = []
    try:
        for name in SERVICES:
            s = Service(UNITS, name, env_file, bin_dir=BIN, log=log)
            started.append(s)
            s.wait_ready()
        # The second notifyd-ws could only get ready on the first one's
        # port thanks to --reuseport; each has an id of its own.
        host = socket.gethostname()
        for s in started[1:]:
            assert f"{host}-ws-{s.unit['_instance']}" in s.argv, s.argv
        for s in started:
            s.reload()
        time.sleep(0.5)
        for s in started:
            assert s.proc.poll() is None, f"{s.name} exited on ExecReload"
        for s in started:
            assert s.stop() == 0, f"{s.name} did not stop cleanly"
        started = []
        log.seek(0)
        text = log.read()
        assert_no_memory_report(text)
        assert text.count("JWT key reloaded") == 2, text
        assert "reloaded the credentials" in text, text
    finally:
        for s in started:
            s.proc.kill()
            s.proc.wait()
        log.close()
        redis.stop()


def syscall_groups():
    """{@group: members} from systemd-analyze syscall-filter."""
    out = analyze("syscall-filter").stdout
    groups, cur = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            cur = groups.setdefault(line.split()[0], [])
        elif cur is not None and line.startswith("    ") and \
                not line.strip().startswith("#"):
            cur.append(line.split()[0])
    return groups


def allowed_syscalls(unit):
    """The system calls the unit's SystemCallFilter= lines let through."""
    groups = syscall_groups()

    def names(item):
        if not item.startswith("@"):
            return {item}
        return set().union(*(names(m) for m in groups[item]))
    allowed = set()
    for value in (v for k, v in unit["Service"] if k == "SystemCallFilter"):
        items = set().union(*(names(i) for i in value.lstrip("~").split()))
        if value.startswith("~"):
            allowed -= items        # a deny list after the allow list
        else:
            allowed |= items
    assert allowed, "no allow list in SystemCallFilter="
    return allowed


def traced_syscalls(path):
    """The names of the system calls in an strace -f log."""
    calls = set()
    with open(path) as f:
        for line in f:
            m = re.match(r"^\d+\s+([a-z0-9_]+)\(", line)
            if m:
                calls.add(m.group(1))
    return calls


def test_units_syscall_filter_allows_the_daemons(tmp_path, need_analyze):
    """Every system call the daemons make (start, serving a WebSocket and
    the API, /metrics, reload, losing Redis and getting it back, stop),
    traced with strace, passes the units' SystemCallFilter=: under
    systemd none would fail with EPERM."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (Debian package strace, in "
                    "make deps)")
    if subprocess.run(["strace", "-qq", "-o", "/dev/null", "true"],
                      capture_output=True).returncode != 0:
        pytest.skip("strace cannot trace here (ptrace not permitted)")
    redis = Redis(tmp_path).start()
    secret = tmp_path / "jwt-secret"
    secret.write_text(os.urandom(16).hex() + "\n")
    key = os.urandom(16).hex()
    (tmp_path / "api-keys").write_text(f"ops {key}\n")
    ws_port, api_port = free_port(), free_port()
    env_file = operator_env_file(tmp_path, ENV_FILE, {
        "NOTIFYD_REDIS_URL": redis.url,
        "NOTIFYD_WS_LISTEN": f"127.0.0.1:{ws_port}",
        "NOTIFYD_API_LISTEN": f"127.0.0.1:{api_port}",
        "NOTIFYD_JWT_SECRET_FILE": str(secret),
        "NOTIFYD_API_KEYS_FILE": str(tmp_path / "api-keys"),
        "NOTIFYD_REDIS_TIMEOUT": "1s",
    })
    started = []
    try:
        for name in ("notifyd-api.service", "notifyd-ws@1.service"):
            trace = tmp_path / f"{name}.strace"
            s = Service(UNITS, name, env_file, bin_dir=BIN,
                        wrap=("strace", "-f", "-qq", "-o", str(trace)))
            s.trace = trace
            started.append(s)
            s.wait_ready()
        token = jwt.encode({"sub": "alice", "iat": int(time.time()),
                            "exp": int(time.time()) + 300},
                           secret.read_text().strip(), algorithm="HS256")

        async def exchange():
            url = f"ws://127.0.0.1:{ws_port}/ws/notifications?token={token}"
            async with websockets.connect(url) as ws:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{api_port}/api/notifications/send",
                    data=b'{"target_user":"alice","content":"traced"}',
                    headers={"Authorization": f"Bearer {key}",
                             "Content-Type": "application/json"})
                await asyncio.get_running_loop().run_in_executor(
                    None, lambda: urllib.request.urlopen(req, timeout=5))
                return json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert asyncio.run(exchange())["content"] == "traced"
        for port in (ws_port, api_port):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                   timeout=5).read()
        for s in started:
            s.reload()
        redis.stop()
        time.sleep(1.5)
        redis.start()
        time.sleep(2.5)
        for s in started:
            assert s.stop() == 0, f"{s.name} did not stop cleanly"
        for s in started:
            denied = traced_syscalls(s.trace) - allowed_syscalls(s.unit)
            assert not denied, f"{s.name}: filtered out: {sorted(denied)}"
        started = []
    finally:
        for s in started:
            s.proc.kill()
            s.proc.wait()
        redis.stop()
