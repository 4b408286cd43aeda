"""The Debian package (make deb): built, lintian-clean, installed on this
machine, run as its units would run it, removed and purged.

Why on this machine: a clean Debian 12 root (debootstrap) takes minutes
and the network, and the one make fresh-check caches may not exist on a
CI machine; a container is not available. The tests run as root on a
Debian 12 machine that already has the package's dependencies (the build
needs their -dev packages), so `apt-get install ./notifyd_*.deb` there is
what an operator's install does. The package touches only its own paths
(/usr/bin/notify*, /etc/notifyd, the units, the man pages) and the
notifyd system user, never the repo's bin/; the module removes and
purges it at the end whatever happens, and refuses to run when a notifyd
package was installed by someone else. It conflicts with libnotify-bin
(both have /usr/bin/notify-send): with that installed, it is skipped.

systemd cannot run here, so the installed units are executed as systemd
would (test_systemd_units.Service): ExecStart= as user notifyd with
EnvironmentFile=, Type=notify readiness, ExecReload=, KillSignal=.
"""
import asyncio
import json
import os
import pwd
import grp
import shutil
import stat
import subprocess
import tempfile
import urllib.request

import pytest
import websockets

from conftest import ROOT, Redis, assert_no_memory_report, free_port
from test_systemd_units import Service, operator_env_file, read_env_file

PKG = "notifyd"
UNIT_DIR = "/lib/systemd/system"
ENV_FILE = "/etc/notifyd/notifyd.env"
PROGRAMS = ("notifyd-ws", "notifyd-api", "notify-send", "notify-tail")
APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=120"]


def installed_version(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status} ${Version}", pkg],
                       capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else ""


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    """make deb, into a temporary directory (lintian is its own test);
    NOTIFYD_DEB=path tests that .deb instead."""
    if os.geteuid() != 0:
        pytest.skip("installs a package: needs root (CI runs as root)")
    if os.environ.get("NOTIFYD_DEB"):
        return os.environ["NOTIFYD_DEB"]
    out = tmp_path_factory.mktemp("deb")
    r = subprocess.run(["sh", os.path.join(ROOT, "tools", "mkdeb.sh")],
                       env=dict(os.environ, DEB_OUT_DIR=str(out),
                                LINTIAN="no"),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    path = r.stdout.strip().splitlines()[-1]
    assert os.path.basename(path) == (
        f"notifyd_{makefile_version()}_"
        f"{subprocess.check_output(['dpkg', '--print-architecture'], text=True).strip()}.deb")
    return path


def makefile_version():
    with open(os.path.join(ROOT, "Makefile")) as f:
        for line in f:
            if line.startswith("VERSION"):
                return line.split(":=")[1].strip()
    raise AssertionError("no VERSION in the Makefile")


def test_deb_lintian_clean(deb):
    """lintian finds no error and no warning (overrides are justified in
    debian/notifyd.lintian-overrides)."""
    r = subprocess.run(["lintian", "--fail-on", "error,warning", deb],
                       capture_output=True, text=True, timeout=300)
    tags = [ln for ln in r.stdout.splitlines() if ln[:2] in ("E:", "W:")]
    assert r.returncode == 0 and not tags, r.stdout + r.stderr


def test_deb_contents(deb):
    """The programs, every man page, the units, the environment file as
    the one conffile, the examples; a notifyd user made by adduser."""
    listing = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True,
                             text=True, check=True).stdout
    paths = {ln.split()[-1].lstrip(".") for ln in listing.splitlines()}
    want = {f"/usr/bin/{p}" for p in PROGRAMS}
    for page in os.listdir(os.path.join(ROOT, "man")):
        sect = page.rsplit(".", 1)[1]
        want.add(f"/usr/share/man/man{sect}/{page}.gz")
    want |= {f"{UNIT_DIR}/notifyd-ws@.service",
             f"{UNIT_DIR}/notifyd-api.service", f"{UNIT_DIR}/notifyd.target",
             ENV_FILE, "/usr/share/doc/notifyd/copyright",
             "/usr/share/doc/notifyd/examples/supervisord.conf",
             "/usr/share/doc/notifyd/examples/nginx.conf"}
    assert want <= paths, sorted(want - paths)
    info = tempdir_control(deb)
    assert info["conffiles"].split() == [ENV_FILE]
    assert "adduser --system" in info["postinst"]
    fields = subprocess.run(["dpkg-deb", "-f", deb, "Depends", "Conflicts"],
                            capture_output=True, text=True, check=True).stdout
    assert "adduser" in fields and "libnotify-bin" in fields


def tempdir_control(deb):
    """{name: text} of the control archive's files."""
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["dpkg-deb", "-e", deb, d], check=True)
        return {f: open(os.path.join(d, f)).read() for f in os.listdir(d)}


@pytest.fixture(scope="module")
def installed(deb):
    """The package installed with apt-get (as an operator would), purged
    at the end whatever happens."""
    if installed_version(PKG):
        pytest.skip(f"a {PKG} package is already installed here "
                    f"({installed_version(PKG)}): not touching it")
    if "ok installed" in installed_version("libnotify-bin"):
        pytest.skip("libnotify-bin is installed: the package conflicts "
                    "with it (/usr/bin/notify-send)")
    try:
        r = subprocess.run(APT + ["install", "--no-install-recommends", deb],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        yield deb
    finally:
        if installed_version(PKG):
            subprocess.run(APT + ["purge", PKG], capture_output=True,
                           timeout=600)


def test_deb_install_makes_user_and_secrets(installed):
    """postinst made the notifyd system user and this host's own JWT
    secret and API key, readable by root and group notifyd only."""
    user = pwd.getpwnam("notifyd")
    assert user.pw_uid < 1000 and user.pw_dir == "/nonexistent"
    assert user.pw_shell.endswith("nologin")
    for name in ("jwt-secret", "api-keys"):
        st = os.stat(f"/etc/notifyd/{name}")
        assert stat.S_IMODE(st.st_mode) == 0o640, name
        assert st.st_uid == 0 and grp.getgrgid(st.st_gid).gr_name == "notifyd"
    assert os.path.getsize("/etc/notifyd/jwt-secret") > 32
    name, key = open("/etc/notifyd/api-keys").read().split()
    assert name == "default" and len(key) == 64


def test_deb_units_serve(installed, tmp_path):
    """The installed units, run as user notifyd with the environment file
    (edited as an operator would: Redis and ports): each says READY=1; a
    user's token from the installed notifyd-ws --issue-token opens a
    WebSocket; messages from the installed notify-send and from
    notifyd-api with the key made at install arrive; reload and stop."""
    redis = Redis(tmp_path).start()
    ws_port, api_port = free_port(), free_port()
    backup = tmp_path / "notifyd.env.orig"
    shutil.copy(ENV_FILE, backup)
    edited = operator_env_file(tmp_path, ENV_FILE, {
        "NOTIFYD_REDIS_URL": redis.url,
        "NOTIFYD_WS_LISTEN": f"127.0.0.1:{ws_port}",
        "NOTIFYD_API_LISTEN": f"127.0.0.1:{api_port}",
    })
    shutil.copy(edited, ENV_FILE)
    log = open(tmp_path / "daemons.log", "w+")
    started = []
    try:
        for name in ("notifyd-api.service", "notifyd-ws@1.service"):
            s = Service(UNIT_DIR, name, ENV_FILE, user="notifyd", log=log)
            started.append(s)
            s.wait_ready()
        env = dict(read_env_file(ENV_FILE), PATH="/usr/bin:/bin")
        token = subprocess.run(
            ["setpriv", "--reuid=notifyd", "--regid=notifyd", "--init-groups",
             "--", "/usr/bin/notifyd-ws", "--issue-token", "alice"],
            env=env, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        key = open("/etc/notifyd/api-keys").read().split()[1]

        async def exchange():
            url = (f"ws://127.0.0.1:{ws_port}/ws/notifications?"
                   f"token={token}")
            async with websockets.connect(url) as ws:
                r = subprocess.run(["/usr/bin/notify-send", "-u", "alice",
                                    "from the installed notify-send"],
                                   env=env, capture_output=True, timeout=10)
                assert r.returncode == 0, r.stderr
                first = json.loads(await asyncio.wait_for(ws.recv(), 5))
                req = urllib.request.Request(
                    f"http://127.0.0.1:{api_port}/api/notifications/send",
                    data=json.dumps({"target_user": "alice",
                                     "content": "from notifyd-api"}).encode(),
                    headers={"Authorization": f"Bearer {key}",
                             "Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=10) as resp:
                    assert resp.status == 200
                second = json.loads(await asyncio.wait_for(ws.recv(), 5))
                return first, second
        first, second = asyncio.run(exchange())
        assert first["content"] == "from the installed notify-send"
        assert second["content"] == "from notifyd-api"
        assert [first["seq"], second["seq"]] == [1, 2]
        for s in started:
            s.reload()
        for s in started:
            assert s.proc.poll() is None, f"{s.name} exited on reload"
            assert s.stop() == 0, f"{s.name} did not stop cleanly"
        started = []
        log.seek(0)
        assert_no_memory_report(log.read())
    finally:
        for s in started:
            s.proc.kill()
            s.proc.wait()
        log.close()
        redis.stop()
        shutil.copy(backup, ENV_FILE)


def test_deb_remove_then_purge(installed):
    """apt-get remove takes the programs, units and man pages and keeps
    the configuration (the conffile, the secrets) as Debian does; purge
    takes that too. The notifyd user stays, as Debian leaves system
    users."""
    r = subprocess.run(APT + ["remove", PKG], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert installed_version(PKG).startswith("deinstall ok config-files")
    for p in PROGRAMS:
        assert not os.path.exists(f"/usr/bin/{p}"), p
    assert not os.path.exists(f"{UNIT_DIR}/notifyd-ws@.service")
    assert not os.path.exists("/usr/share/man/man7/notifyd-ops.7.gz")
    for f in (ENV_FILE, "/etc/notifyd/jwt-secret", "/etc/notifyd/api-keys"):
        assert os.path.exists(f), f

    r = subprocess.run(APT + ["purge", PKG], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert installed_version(PKG) == ""
    assert not os.path.exists("/etc/notifyd")
    pwd.getpwnam("notifyd")
