"""Token expiry with the browser client, in Debian's headless Chromium
(tests/browser/expiry.mjs): notifyd-ws closes a connection with 4002 a
little before its token's exp; the client's refreshToken hook fetches a
new token and the client reconnects at once with since=, so a user who
is sent a message every 100 ms across the expiry gets every one of them,
once, in order.

The test serves the page and a tiny token endpoint on its own origin
(the page imports /notify-client.js from notifyd-ws, which allows any
origin by default). The first token lives 4 s; the refresh answers after
300 ms, so that messages are sent while the page has no connection.
"""
import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from conftest import ROOT, bin_path, free_port
from test_browser import CHROMIUM, NODE, SECRET, mint, need_browser

BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
USER = "alice"
COUNT = 60
INTERVAL_S = 0.1
FIRST_TTL_S = 4
REFRESH_DELAY_S = 0.3

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>token expiry</title>
<script type="module">
const WS = %(ws)s, COUNT = %(count)d;
const seen = { closes: [], closedAt: [], openedAt: [], contents: [],
               fetches: 0, resumes: [], errors: [] };
window.expiry = seen;
async function token(ttl, delay) {
  seen.fetches++;
  const res = await fetch(`/token?ttl=${ttl}&delay=${delay}`);
  return res.text();
}
try {
  const { NotificationClient } = await import(WS + '/notify-client.js');
  const url = WS.replace('http', 'ws') + '/ws/notifications';
  const client = new NotificationClient(url, await token(%(ttl)d, 0), {
    refreshToken: () => token(600, %(delay)s),
  });
  client.onEvent('close', (e) => { seen.closes.push(e.code); seen.closedAt.push(Date.now()); });
  client.onEvent('open', () => {
    seen.openedAt.push(Date.now());
    if (seen.openedAt.length === 1) fetch('/ready');
  });
  client.onEvent('resume', (e) => seen.resumes.push(e.recovered));
  client.onEvent('error', (e) => seen.errors.push(`${e.source}: ${e.error}`));
  client.on('*', (m) => {
    seen.contents.push(m.content);
    if (seen.contents.length >= COUNT) window.expiryDone = true;
  });
  client.connect();
} catch (e) {
  seen.errors.push(String(e));
  window.expiryDone = true;
}
</script>
"""


class Site:
    """The page, GET /token?ttl=S&delay=S (a new token for USER after
    delay seconds) and GET /ready (the page is connected: start
    sending)."""

    def __init__(self, page):
        self.ready = threading.Event()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                u = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                ctype, body = "text/plain", b""
                if u.path == "/":
                    ctype, body = "text/html", page.encode()
                elif u.path == "/token":
                    time.sleep(float(q.get("delay", 0)))
                    body = mint(SECRET, USER, ttl=int(q["ttl"])).encode()
                elif u.path == "/ready":
                    site.ready.set()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()


def test_browser_token_expiry_reconnects_and_loses_nothing(redis, daemons,
                                                          tmp_path):
    need_browser()
    secret = tmp_path / "jwt.secret"
    secret.write_bytes(SECRET)
    port = free_port()
    daemons("notifyd-ws", "--listen", f"127.0.0.1:{port}", "--redis",
            redis.url, "--jwt-secret-file", str(secret))
    ws = f"http://127.0.0.1:{port}"
    site = Site(PAGE % {"ws": json.dumps(ws), "count": COUNT,
                        "ttl": FIRST_TTL_S, "delay": REFRESH_DELAY_S})
    sent_at = []

    def sender():
        if not site.ready.wait(30):
            return
        for i in range(COUNT):
            sent_at.append(time.time())
            subprocess.run([bin_path("notify-send"), "--redis", redis.url,
                            "-u", USER, f"n{i}"], check=True,
                           capture_output=True, timeout=10)
            time.sleep(INTERVAL_S)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    try:
        p = subprocess.run([NODE, os.path.join(BROWSER_DIR, "expiry.mjs"),
                            site.url + "/"], capture_output=True, timeout=90,
                           cwd=BROWSER_DIR,
                           env={**os.environ, "BROWSER_TEST_CHROMIUM": CHROMIUM})
    finally:
        t.join(timeout=30)
        site.close()
    assert p.returncode == 0, p.stderr.decode()
    seen = json.loads(p.stdout.decode().strip().splitlines()[-1])
    assert not seen["timedOut"] and not seen["errors"], seen
    assert seen["contents"] == [f"n{i}" for i in range(COUNT)], seen
    assert seen["closes"] == [4002], seen
    assert len(seen["openedAt"]) == 2 and seen["fetches"] == 2, seen
    assert seen["resumes"] == [True], seen
    # The refresh took a while: some messages were sent while the page
    # had no connection, and still came, through since.
    closed, reopened = seen["closedAt"][0] / 1000, seen["openedAt"][1] / 1000
    gap = [s for s in sent_at if closed <= s <= reopened]
    assert gap, f"nothing was sent between the close and the reconnect " \
        f"({closed:.3f}..{reopened:.3f})"
