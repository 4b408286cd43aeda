"""The browser client and the demo page.

- test_js_unit: the client's unit tests (tests/js, node --test with a fake
  WebSocket and fake timers), so that `make test` runs them too;
- test_assets_served: notifyd-ws serves the client, its declarations and
  (with --demo) the demo page, byte for byte what is in clients/js/;
- test_browser_*: the demo page in Debian's headless Chromium, driven by
  playwright-core (tests/browser/run.mjs, one scenario per test) against a
  real redis-server, notifyd-ws --demo and notify-send. Screenshots land in
  tests/artifacts/;
- test_browser_client_ack_mode_with_subprotocol_token: the served client
  used from a page's own script, with the token as subprotocol and ack mode;
- test_browser_resume_*: resuming (?since=, notifyd(7) "Each user's
  log"): after a notifyd-ws restart, after the page was closed and opened
  again with resume=1, and from an id the server no longer has. In each,
  another device of the user has read the messages in between, so the
  page can only get them through since.

The browser tests are skipped, saying why, only when chromium or
tests/browser/node_modules/playwright-core is missing (`make deps`
installs both).
"""
import base64
import hashlib
import hmac
import json
import os
import queue
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, bin_path, free_port

NODE = shutil.which("node")
CHROMIUM = os.environ.get("BROWSER_TEST_CHROMIUM", "/usr/bin/chromium")
BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
ARTIFACTS = os.path.join(ROOT, "tests", "artifacts")
CLIENT_DIR = os.path.join(ROOT, "clients", "js")
SECRET = b"browser-test-secret-not-for-production"
USER = "alice"
SCENARIO_TIMEOUT = 90


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(secret, sub=USER, ttl=600):
    """An HS256 JWT: base64url(header).base64url(payload).base64url(HMAC)."""
    now = int(time.time())
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps({"sub": sub, "iat": now, "exp": now + ttl}).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(sig)}"


def need_node():
    if NODE is None:
        pytest.skip("node is not installed (make deps installs it)")


def need_browser():
    need_node()
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing (make deps installs Debian's chromium)")
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        pytest.skip("tests/browser/node_modules/playwright-core is missing "
                    "(make deps runs npm install in tests/browser)")


class WS:
    """notifyd-ws --demo on a fixed port, stoppable and startable again."""

    def __init__(self, daemons, redis, tmp_path):
        self.daemons = daemons
        self.redis = redis
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        secret_file = tmp_path / "jwt.secret"
        secret_file.write_bytes(SECRET)
        self.args = ["--listen", f"127.0.0.1:{self.port}", "--redis", redis.url,
                     "--jwt-secret-file", str(secret_file), "--demo",
                     "--log-level", "info"]
        self.proc = None
        self.start()

    def start(self):
        # The killed instance's connections may hold the port for a moment.
        deadline = time.monotonic() + 10
        while True:
            try:
                self.proc = self.daemons("notifyd-ws", *self.args)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def kill(self):
        self.proc.kill()


@pytest.fixture
def ws(daemons, redis, tmp_path):
    return WS(daemons, redis, tmp_path)


def run_scenario(name, ws, redis, actions=None, ws2=None):
    """Run one scenario of tests/browser/run.mjs; answer its steps with
    actions[step](); return its JSON lines. Fails the test on failure.
    ws2: a second notifyd-ws on the same Redis, for another device."""
    need_browser()
    os.makedirs(ARTIFACTS, exist_ok=True)
    env = dict(os.environ)
    env.update({
        "BROWSER_TEST_BASE": ws.base,
        "BROWSER_TEST_USER": USER,
        "BROWSER_TEST_TOKEN": mint(SECRET),
        "BROWSER_TEST_BAD_TOKEN": mint(b"not-the-server-secret-0123456789abcdef"),
        "BROWSER_TEST_REDIS": redis.url,
        "BROWSER_TEST_NOTIFY_SEND": bin_path("notify-send"),
        "BROWSER_TEST_ARTIFACTS": ARTIFACTS,
        "BROWSER_TEST_CHROMIUM": CHROMIUM,
    })
    if ws2 is not None:
        env["BROWSER_TEST_BASE2"] = ws2.base
    proc = subprocess.Popen([NODE, os.path.join(BROWSER_DIR, "run.mjs"), name],
                            cwd=BROWSER_DIR, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines = queue.Queue()

    def reader():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    records = []
    deadline = time.monotonic() + SCENARIO_TIMEOUT
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"scenario {name} timed out: {records}")
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                break
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                rec = {"output": line}
            records.append(rec)
            if "step" in rec:
                action = (actions or {}).get(rec["step"])
                assert action is not None, f"unexpected step {rec['step']}"
                action()
                proc.stdin.write("ok\n")
                proc.stdin.flush()
        rc = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    result = records[-1] if records else {}
    assert rc == 0 and result.get("result") == "pass", \
        f"scenario {name} failed (exit {rc}):\n" + \
        "\n".join(json.dumps(r) for r in records) + f"\nstderr:\n{err}"
    return records


def checks(records):
    return [r["check"] for r in records if "check" in r]


def log_marks(redis, user=USER):
    """(last position, read mark) of the user's log (notifyd(7))."""
    out = redis.cli("HMGET", f"offline:{{{user}}}", "seq", "read", raw=True)
    seq, read = (int(v) if v else 0 for v in out.splitlines())
    return seq, read


def wait_all_read(redis, n, timeout=5.0):
    """Wait until the user's log holds n messages, all read; returns the
    last (position, read mark) seen."""
    deadline = time.monotonic() + timeout
    while True:
        marks = log_marks(redis)
        if marks == (n, n) or time.monotonic() > deadline:
            return marks
        time.sleep(0.05)


def expect_all_read(redis, n):
    """A step action: the other device has read all n messages, so the
    page can only get them through since."""
    def action():
        marks = wait_all_read(redis, n)
        assert marks == (n, n), f"(last position, read mark): {marks}, want {(n, n)}"
    return action


def test_js_unit():
    """The client's unit tests under node's test runner."""
    need_node()
    # The files themselves: Node 18 and 20 search a folder for *.test.mjs,
    # newer ones take only files or globs.
    js = os.path.join(ROOT, "tests", "js")
    files = sorted(os.path.join(js, f) for f in os.listdir(js)
                   if f.endswith(".test.mjs"))
    assert files, f"no *.test.mjs in {js}"
    p = subprocess.run([NODE, "--test", *files],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    # node --test passes vacuously on zero tests: make sure they ran.
    assert "# fail 0" in p.stdout
    passed = [ln for ln in p.stdout.splitlines() if ln.startswith("# pass ")]
    assert passed and int(passed[0].split()[2]) >= 55, p.stdout


def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def test_assets_served(ws):
    """notifyd-ws serves exactly the files of clients/js/."""
    for path, name, ctype in [
            ("/notify-client.js", "notify-client.js", "text/javascript"),
            ("/notify-client.d.ts", "notify-client.d.ts", "application/typescript"),
            ("/", "index.html", "text/html")]:
        status, got_type, body = http_get(ws.base + path)
        assert status == 200, (path, status)
        assert got_type.startswith(ctype), (path, got_type)
        with open(os.path.join(CLIENT_DIR, name), "rb") as f:
            assert body == f.read(), f"{path} differs from clients/js/{name} (rebuild?)"


def test_browser_connect_and_notify(ws, redis):
    """A pasted token connects; a notify-send shows with type, content, time."""
    recs = run_scenario("connect", ws, redis)
    assert {"connected", "notification shown", "data shown"} <= set(checks(recs))


def test_browser_channel_broadcast_needs_subscription(ws, redis):
    """A channel broadcast appears only while the page is subscribed."""
    recs = run_scenario("channel", ws, redis)
    assert {"broadcast not shown before subscribing",
            "broadcast shown after subscribing, other channels not",
            "broadcast not shown after unsubscribing"} <= set(checks(recs))


def test_browser_reconnects_and_resubscribes_after_restart(ws, redis):
    """notifyd-ws killed and started again: the page shows it reconnecting,
    connects again and gets its channel's broadcasts again."""
    recs = run_scenario("restart", ws, redis,
                        actions={"stop": ws.kill, "start": ws.start})
    assert {"reconnecting shown", "connected again",
            "resubscribed after restart"} <= set(checks(recs))


def test_browser_auth_failure_does_not_loop(ws, redis):
    """A rejected token (4001) leaves one connection attempt, no loop."""
    recs = run_scenario("auth_failed", ws, redis)
    loop = [r for r in recs if r.get("check") == "no reconnect loop"]
    assert loop and loop[0]["sockets"] == 1
    assert "a fresh token connects" in checks(recs)


def test_browser_offline_messages_after_connect(ws, redis):
    """Messages sent before the page opened appear once it connects."""
    recs = run_scenario("offline", ws, redis)
    assert {"offline messages shown",
            "not delivered again after a reload"} <= set(checks(recs))
    # Three messages and the reload's marker, all read.
    assert log_marks(redis) == (4, 4)


def test_browser_client_ack_mode_with_subprotocol_token(ws, redis):
    """The served client in a page's own script, token as subprotocol and
    ack mode on: offline messages arrive, are acked, and are marked read."""
    marks = []

    def acked():
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            marks.append(log_marks(redis))
            if marks[-1] == (2, 2):
                return
            time.sleep(0.05)

    recs = run_scenario("ack_protocol", ws, redis, actions={"acked": acked})
    assert {"connected with the token as subprotocol",
            "each message acknowledged"} <= set(checks(recs))
    assert marks and marks[-1] == (2, 2), \
        f"(last position, read mark) after the acks: {marks[-1:]}"


def test_browser_resume_after_restart_gets_exactly_the_missed(ws, redis, daemons, tmp_path):
    """notifyd-ws stops, messages are sent and another device reads them
    on a second instance; once notifyd-ws is back the page reconnects with
    since = the last message it processed and shows exactly the missed
    ones, once each, in order."""
    ws2 = WS(daemons, redis, tmp_path)
    recs = run_scenario("resume_restart", ws, redis, ws2=ws2,
                        actions={"stop": ws.kill, "start": ws.start,
                                 "read_by_other": expect_all_read(redis, 5)})
    assert {"received before the stop",
            "another device read the missed messages",
            "missed messages shown once each, in order",
            "reconnected with since"} <= set(checks(recs))


def test_browser_resume_reload_gets_what_was_sent_while_away(ws, redis):
    """With resume=1 the page keeps its last id in localStorage: opened
    again, it gets what was sent while it was away (though another device
    read it), not the old messages; a reload brings nothing old back."""
    recs = run_scenario("resume_reload", ws, redis,
                        actions={"read_by_other": expect_all_read(redis, 4)})
    assert {"last id stored",
            "another device read what was sent while away",
            "messages sent while away shown, old ones not",
            "a reload resumes after the last message"} <= set(checks(recs))


def test_browser_resume_lost_warns_and_shows_the_retained(ws, redis):
    """A stored id the server no longer has: the page is told
    (recovered false), warns that messages may have been missed, and
    shows the messages the log still keeps."""
    recs = run_scenario("resume_lost", ws, redis,
                        actions={"read_by_other": expect_all_read(redis, 2)})
    assert {"lost resume reported",
            "retained messages shown after a lost resume"} <= set(checks(recs))
