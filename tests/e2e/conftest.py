"""Shared fixtures of the end-to-end tests.

Every test gets real processes: a private redis-server on a free loopback
port in a temporary directory, and the real programs from bin/. All of
them are stopped when the test ends, whether it passed or not.
"""
import os
import re
import select
import signal
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("NOTIFYD_BIN", os.path.join(ROOT, "bin"))


# A report of AddressSanitizer/UBSan, or of valgrind (make valgrind runs
# the programs under memcheck with -q, so any "==PID==" line is a report).
_MEMORY_REPORT = re.compile(r"Sanitizer|runtime error|^==\d+== ", re.M)


def assert_no_memory_report(stderr_text):
    assert not _MEMORY_REPORT.search(stderr_text), stderr_text


def bin_path(name):
    return os.path.join(BIN, name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port}")


class Redis:
    """A private redis-server; restartable on the same port and data dir."""

    def __init__(self, tmpdir, port=None):
        self.dir = str(tmpdir)
        self.port = port or free_port()
        self.proc = None
        self.url = f"redis://127.0.0.1:{self.port}"

    def start(self, *extra):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.dir, "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--loglevel", "warning", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.cli("PING").strip() == "PONG":
                    return self
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.02)
        raise TimeoutError("redis-server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def cli(self, *args, raw=False):
        """Run redis-cli against this server; returns its stdout text."""
        cmd = ["redis-cli", "-p", str(self.port)]
        if raw:
            cmd.append("--raw")
        out = subprocess.run(cmd + [str(a) for a in args], check=True,
                             capture_output=True, timeout=10)
        return out.stdout.decode()


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path).start()
    yield r
    r.stop()


class Daemon:
    """A daemon from bin/ started with --ready-fd; stopped at test end."""

    def __init__(self, name, args, env=None, ready=True, timeout=10.0):
        self.name = name
        rfd, wfd = os.pipe()
        full_env = dict(os.environ)
        for k in list(full_env):
            if k.startswith("NOTIFYD_") and k != "NOTIFYD_BIN":
                del full_env[k]
        full_env.update(env or {})
        cmd = [bin_path(name)] + list(args)
        if ready:
            cmd += ["--ready-fd", str(wfd)]
        self.proc = subprocess.Popen(cmd, env=full_env, pass_fds=(wfd,),
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        os.close(wfd)
        self.stdout_text = None
        self.stderr_text = None
        if ready:
            r, _, _ = select.select([rfd], [], [], timeout)
            data = os.read(rfd, 64) if r else b""
            os.close(rfd)
            if not data:
                self.kill()
                raise RuntimeError(f"{name} did not become ready: {self.stderr()}")
        else:
            os.close(rfd)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=10.0):
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout=10.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stderr(self):
        """All of stderr; only once the process has exited."""
        if self.stderr_text is None and self.proc.poll() is not None:
            self.stdout_text = self.proc.stdout.read().decode(errors="replace")
            self.stderr_text = self.proc.stderr.read().decode(errors="replace")
        return self.stderr_text or ""


@pytest.fixture
def daemons():
    """Start daemons with daemons(name, args...); all stopped at the end."""
    started = []

    def start(name, *args, env=None, ready=True):
        d = Daemon(name, args, env=env, ready=ready)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop(timeout=5)
        # A sanitizer or valgrind report is printed here.
        assert_no_memory_report(d.stderr())


def run(name, *args, input=None, env=None, timeout=30):
    """Run a CLI from bin/ to completion; returns CompletedProcess (bytes)."""
    full_env = dict(os.environ)
    for k in list(full_env):
        if k.startswith("NOTIFYD_") and k != "NOTIFYD_BIN":
            del full_env[k]
    full_env.update(env or {})
    if isinstance(input, str):
        input = input.encode()
    p = subprocess.run([bin_path(name)] + [str(a) for a in args],
                       input=input, env=full_env, capture_output=True,
                       timeout=timeout)
    assert_no_memory_report(p.stderr.decode(errors="replace"))
    return p


@pytest.fixture
def keys(tmp_path):
    """JWT keys of the WebSocket tests (tests/e2e/wsproto.py)."""
    from wsproto import Keys
    return Keys(tmp_path)


@pytest.fixture
def r(redis):
    """A raw RESP connection to the test's Redis (tests/e2e/wsutil.py)."""
    from wsutil import Resp
    c = Resp(redis.port)
    yield c
    c.close()
