"""The README's "run it" command: bin/notifyd-run (what `make run` starts)
brings up Redis and the daemons, and the commands it prints work.

`make run WS_PORT=9080 API_PORT=9081` hands its command-line variables to
bin/notifyd-run through the environment (GNU make exports them to
recipes), so these tests set the same variables in the environment of
the script itself: running `make run` here would rebuild bin/ (with the
wrong flags under `make check`)."""
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest
import websockets

from conftest import ROOT, bin_path, free_port, wait_port


def _start_run(env_extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NOTIFYD_") and k not in ("WS_PORT", "API_PORT")}
    env.update(env_extra)
    proc = subprocess.Popen([os.path.join(ROOT, "bin", "notifyd-run")],
                            env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    out = b""
    deadline = time.monotonic() + 20
    while b"Press Ctrl-C" not in out and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out += line
    return proc, out.decode()


def _stop_run(proc):
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


@pytest.mark.skipif(not os.path.exists(bin_path("notifyd-ws")),
                    reason="notifyd-ws is not built")
def test_run_starts_everything_and_printed_commands_work():
    ws_port, api_port = free_port(), free_port()
    proc, out = _start_run({"NOTIFYD_WS_LISTEN": f"127.0.0.1:{ws_port}",
                            "NOTIFYD_API_LISTEN": f"127.0.0.1:{api_port}"})
    try:
        assert "notifyd is running" in out, out
        redis_url = re.search(r"Redis: (redis://\S+)", out).group(1)
        page = re.search(r"(http://\S+)/#token=(\S+)", out)
        assert page.group(1) == f"http://127.0.0.1:{ws_port}"
        token = page.group(2)
        send_cmd = re.search(r"Send from the shell:\s+(.*)", out).group(1)
        token_cmd = re.search(r"Another user's token:\s+(.*)", out).group(1)
        curl_cmd = re.search(r"Send over HTTP:\s+(curl .*?/send)", out,
                             re.S).group(1).replace("\\\n", " ")

        async def receive_two():
            uri = f"ws://127.0.0.1:{ws_port}/ws/notifications?token={token}"
            async with websockets.connect(uri) as ws:
                await ws.send(json.dumps({"type": "ping"}))
                assert json.loads(await ws.recv())["type"] == "pong"
                # The printed commands, run as a person would paste them.
                subprocess.run(send_cmd, shell=True, check=True, timeout=10)
                first = json.loads(await asyncio.wait_for(ws.recv(), 5))
                r = subprocess.run(curl_cmd, shell=True, check=True,
                                   capture_output=True, timeout=10)
                assert json.loads(r.stdout)["status"] == "ok"
                second = json.loads(await asyncio.wait_for(ws.recv(), 5))
                return first, second

        first, second = asyncio.run(receive_two())
        assert first["content"] == "Hello from notify-send"
        assert first["target_user"] == "demo"
        assert second["content"] == "Hello over HTTP"

        # The printed command mints a token for alice that notifyd-ws takes.
        r = subprocess.run(token_cmd, shell=True, check=True,
                           capture_output=True, text=True, timeout=10)
        alice = r.stdout.strip()
        assert alice.count(".") == 2 and alice != token, r.stdout

        async def alice_gets_hers():
            uri = f"ws://127.0.0.1:{ws_port}/ws/notifications?token={alice}"
            async with websockets.connect(uri) as ws:
                await ws.send(json.dumps({"type": "ping"}))
                assert json.loads(await ws.recv())["type"] == "pong"
                subprocess.run(send_cmd.replace("-u demo", "-u alice"),
                               shell=True, check=True, timeout=10)
                return json.loads(await asyncio.wait_for(ws.recv(), 5))

        assert asyncio.run(alice_gets_hers())["target_user"] == "alice"
        # The demo page is on.
        r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                            f"http://127.0.0.1:{ws_port}/"], capture_output=True)
        assert r.stdout == b"200"
    finally:
        rc = _stop_run(proc)
    assert rc == 0
    # Ctrl-C stopped everything it started, the private Redis included.
    port = int(redis_url.rsplit(":", 1)[1])
    for p in (ws_port, api_port, port):
        with pytest.raises(OSError):
            wait_port(p, timeout=0.5)


def test_run_uses_configured_redis(redis):
    """With NOTIFYD_REDIS_URL set, no private redis-server is started."""
    ws_port, api_port = free_port(), free_port()
    proc, out = _start_run({"NOTIFYD_REDIS_URL": redis.url,
                            "NOTIFYD_WS_LISTEN": f"127.0.0.1:{ws_port}",
                            "NOTIFYD_API_LISTEN": f"127.0.0.1:{api_port}"})
    try:
        assert f"Redis: {redis.url}" in out, out
        assert "started a private redis-server" not in out
        send_cmd = re.search(r"Send from the shell:\s+(.*)", out).group(1)
        subprocess.run(send_cmd, shell=True, check=True, timeout=10)
        assert redis.cli("HGET", "offline:{demo}", "seq").strip() == "1"
    finally:
        assert _stop_run(proc) == 0


def _listening(port):
    try:
        wait_port(port, timeout=0.5)
        return True
    except OSError:
        return False


@pytest.mark.skipif(not os.path.exists(bin_path("notifyd-api")),
                    reason="notifyd-api is not built")
def test_run_ports_from_make_variables():
    """WS_PORT and API_PORT choose the ports, and win over the port of
    NOTIFYD_WS_LISTEN / NOTIFYD_API_LISTEN (whose host they keep)."""
    ws_port, api_port, unused_ws, unused_api = (free_port() for _ in range(4))
    proc, out = _start_run({"WS_PORT": str(ws_port), "API_PORT": str(api_port),
                            "NOTIFYD_WS_LISTEN": f"127.0.0.1:{unused_ws}",
                            "NOTIFYD_API_LISTEN": f"127.0.0.1:{unused_api}"})
    try:
        assert "notifyd is running" in out, out
        assert f"http://127.0.0.1:{ws_port}/#token=" in out, out
        assert f"http://127.0.0.1:{api_port}/api/notifications/send" in out, out
        r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                            f"http://127.0.0.1:{ws_port}/"], capture_output=True)
        assert r.stdout == b"200"
        count = re.search(r"Online users:\s+(curl .*)", out).group(1)
        r = subprocess.run(count, shell=True, check=True, capture_output=True,
                           timeout=10)
        assert "online_count" in json.loads(r.stdout)
        assert not _listening(unused_ws) and not _listening(unused_api)
    finally:
        assert _stop_run(proc) == 0
    assert not _listening(ws_port) and not _listening(api_port)


@pytest.mark.parametrize("var", ["WS_PORT", "API_PORT"])
def test_run_busy_port_is_one_line_naming_port_and_variable(var):
    """A port already in use stops the run at once, before Redis or any
    daemon starts, with one line that names the port and the variable."""
    if var == "API_PORT" and not os.path.exists(bin_path("notifyd-api")):
        pytest.skip("notifyd-api is not built")
    ports = {"WS_PORT": free_port(), "API_PORT": free_port()}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports[var] = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("NOTIFYD_") and k not in ports}
        env.update({k: str(v) for k, v in ports.items()})
        p = subprocess.run([os.path.join(ROOT, "bin", "notifyd-run")], env=env,
                           capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    assert p.stdout == "", p.stdout
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    m = re.fullmatch(rf"notifyd-run: port {ports[var]} is in use \({var}\): "
                     rf"try make run {var}=(\d+)", lines[0])
    assert m, lines[0]
    assert int(m.group(1)) != ports[var]
    other = "API_PORT" if var == "WS_PORT" else "WS_PORT"
    assert not _listening(ports[other])


@pytest.mark.skipif(not os.path.exists(bin_path("notifyd-api")),
                    reason="notifyd-api is not built")
def test_run_names_the_daemon_that_failed_to_start():
    """A daemon that exits at start-up is named, the run fails, and what
    had started is stopped."""
    ws_port, api_port = free_port(), free_port()
    proc, out = _start_run({"WS_PORT": str(ws_port), "API_PORT": str(api_port),
                            "NOTIFYD_API_THREADS": "0"})
    try:
        rc = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            _stop_run(proc)
    out += proc.stdout.read().decode()
    assert rc != 0
    assert "notifyd-run: notifyd-api failed to start" in out, out
    assert "notifyd is running" not in out
    assert not _listening(ws_port)
