"""The browser client used from another origin, in Debian's headless
Chromium: notifyd-ws serves /notify-client.js with the
Access-Control-Allow-Origin that --allowed-origin says, so a page on an
allowed origin can import it (module scripts are always fetched in CORS
mode) and receive notifications through it, and a page on any other
origin cannot."""
import json
import os
import shutil
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import ROOT, bin_path, free_port, wait_port
from test_browser import mint, SECRET, need_browser

NODE = shutil.which("node")
BROWSER_DIR = os.path.join(ROOT, "tests", "browser")

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>cross-origin notifyd client</title>
<script type="module">
const WS = %(ws)s, TOKEN = %(token)s;
try {
  const { NotificationClient } = await import(WS + '/notify-client.js');
  const client = new NotificationClient(WS.replace('http', 'ws') + '/ws/notifications', TOKEN);
  const got = new Promise((resolve) => client.on('*', (m) => resolve(m.content)));
  client.connect();
  const received = await Promise.race([got, new Promise((r) => setTimeout(() => r(null), 8000))]);
  client.disconnect();
  window.corsResult = { imported: true, received };
} catch (e) {
  window.corsResult = { imported: false, error: String(e) };
}
</script>
"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def page_server(tmp_path):
    """A static page server on its own origin (another port)."""
    servers = []

    def start(html):
        d = tmp_path / f"site{len(servers)}"
        d.mkdir()
        (d / "index.html").write_text(html)
        srv = ThreadingHTTPServer(("127.0.0.1", 0),
                                  partial(_Quiet, directory=str(d)))
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()


def _run_page(url):
    r = subprocess.run([NODE, os.path.join(BROWSER_DIR, "cors.mjs"),
                        url + "/index.html"], capture_output=True, timeout=60,
                       cwd=BROWSER_DIR)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


def _start_ws(redis, tmp_path, *extra):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    port = free_port()
    proc = subprocess.Popen([bin_path("notifyd-ws"), "--listen",
                             f"127.0.0.1:{port}", "--redis", redis.url,
                             "--jwt-secret-file", str(secret), *extra],
                            stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, f"http://127.0.0.1:{port}"


def _send(redis, text):
    subprocess.run([bin_path("notify-send"), "--redis", redis.url, "-u",
                    "alice", text], check=True, capture_output=True)


def _page(ws, token):
    return PAGE % {"ws": json.dumps(ws), "token": json.dumps(token)}


@pytest.fixture
def browser_ready():
    need_browser()


def test_allowed_origin_imports_the_client_and_receives(
        redis, tmp_path, page_server, browser_ready):
    site = page_server("")          # reserve the origin first
    other = page_server("")
    proc, ws = _start_ws(redis, tmp_path, "--allowed-origin", site)
    try:
        token = mint(SECRET, "alice")
        # Rewrite both pages now that notifyd-ws's URL is known.
        for i in (0, 1):
            (tmp_path / f"site{i}" / "index.html").write_text(_page(ws, token))
        _send(redis, "across origins")
        ok = _run_page(site)
        assert ok["imported"] is True, ok
        assert ok["received"] == "across origins", ok
        refused = _run_page(other)
        assert refused["imported"] is False, refused
        assert any("CORS" in line or "Access-Control-Allow-Origin" in line
                   for line in refused["console"]), refused
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_any_origin_when_no_list(redis, tmp_path, page_server, browser_ready):
    site = page_server("")
    proc, ws = _start_ws(redis, tmp_path)
    try:
        (tmp_path / "site0" / "index.html").write_text(
            _page(ws, mint(SECRET, "alice")))
        _send(redis, "from anywhere")
        ok = _run_page(site)
        assert ok["imported"] is True, ok
        assert ok["received"] == "from anywhere", ok
    finally:
        proc.terminate()
        proc.wait(timeout=10)
