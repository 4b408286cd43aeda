"""Helpers of the notify-send / notify-tail end-to-end tests.

The other side of every conversation is redis-cli or Python's json, never
the project's own code.
"""
import os
import re
import select
import subprocess
import time

from conftest import ROOT


class Subscriber:
    """redis-cli SUBSCRIBE on a channel; messages read with a deadline."""

    def __init__(self, redis, channel):
        self.proc = subprocess.Popen(
            ["redis-cli", "-p", str(redis.port), "--raw", "SUBSCRIBE", channel],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.buf = b""
        # --raw prints the confirmation as three lines: subscribe, name, 1.
        assert self._lines(3, 10.0) == [b"subscribe", channel.encode(), b"1"]

    def _lines(self, n, timeout):
        deadline = time.monotonic() + timeout
        while self.buf.count(b"\n") < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if not r:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return None
            self.buf += chunk
        lines = self.buf.split(b"\n")
        self.buf = b"\n".join(lines[n:])
        return lines[:n]

    def message(self, timeout=5.0):
        """The next payload (bytes), or None when none comes in time."""
        lines = self._lines(3, timeout)
        if lines is None:
            return None
        assert lines[0] == b"message", lines
        return lines[2]

    def close(self):
        self.proc.kill()
        self.proc.wait()


def numsub(redis, channel):
    out = redis.cli("PUBSUB", "NUMSUB", channel, raw=True).split()
    return int(out[1])


def wait_until(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


def read_line(stream, timeout=5.0):
    """One line from a process's stdout pipe, without blocking forever."""
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        r, _, _ = select.select([stream], [], [], max(left, 0))
        if not r:
            return None
        ch = os.read(stream.fileno(), 1)
        if not ch:
            return buf or None
        buf += ch
    return buf


def info_stat(redis, name):
    for line in redis.cli("INFO", "stats").splitlines():
        if line.startswith(name + ":"):
            return int(line.split(":", 1)[1])
    raise KeyError(name)


def man_flags(page):
    """Every flag the man page documents with .Fl, as typed: -u, --json."""
    flags = set()
    with open(os.path.join(ROOT, "man", page)) as f:
        for line in f:
            for m in re.finditer(r"\bFl (-?[A-Za-z][-A-Za-z]*)", line):
                flags.add("-" + m.group(1))
    return flags
