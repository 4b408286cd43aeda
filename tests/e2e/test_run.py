"""The README's "run it" command: bin/notifyd-run (what `make run` starts)
brings up Redis and the daemons, and the commands it prints work."""
import asyncio
import json
import os
import re
import signal
import subprocess
import time

import pytest
import websockets

from conftest import ROOT, bin_path, free_port, wait_port


def _start_run(env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFYD_")}
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
        assert redis.cli("HLEN", "offline:demo").strip() == "1"
    finally:
        assert _stop_run(proc) == 0
