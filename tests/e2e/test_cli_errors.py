"""What notify-send and notify-tail say when they cannot work, and with
which exit code (notifyd(7), EXIT STATUS): 64 for a command line that
cannot be read, 78 for a value that does not parse (from a flag or from
the environment alike), 69 for a Redis that is not there, or is not
Redis, or refuses us.

The other side is a real listener: a private redis-server, Python's
http.server, or a small socket server started here.
"""
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import free_port, run, wait_port
from cliutil import numsub, wait_until

WHERE = "(set with --redis or NOTIFYD_REDIS_URL)"

# Each way a CLI talks to Redis: (program, arguments, standard input).
REDIS_USERS = [
    ("notify-send", ["-u", "alice", "hi"], None),
    ("notify-send", ["--batch"], '{"broadcast":true,"content":"x"}\n'),
    ("notify-tail", [], None),
    ("notify-tail", ["--offline", "alice"], None),
    ("notify-tail", ["-u", "alice", "--since", "10m"], None),
]
REDIS_USER_IDS = ["send", "send-batch", "tail", "tail-offline", "tail-since"]


def only_line(p, prog):
    """The one line of stderr, without the program name."""
    err = p.stderr.decode()
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(prog + ": "), err
    return err[len(prog) + 2:-1]


# ---- Redis not reachable ---------------------------------------------


@pytest.mark.parametrize("prog,args,stdin", REDIS_USERS, ids=REDIS_USER_IDS)
def test_refused_names_the_url_and_where_it_is_set(prog, args, stdin):
    url = f"redis://127.0.0.1:{free_port()}"
    p = run(prog, "--redis", url, *args, input=stdin)
    assert p.returncode == 69
    assert only_line(p, prog) == \
        f"cannot connect to Redis at {url} {WHERE}: Connection refused"


def test_url_from_the_environment_is_named_the_same_way():
    url = f"redis://127.0.0.1:{free_port()}"
    p = run("notify-send", "-u", "alice", "hi",
            env={"NOTIFYD_REDIS_URL": url})
    assert p.returncode == 69
    assert only_line(p, "notify-send") == \
        f"cannot connect to Redis at {url} {WHERE}: Connection refused"


@pytest.mark.parametrize("given,shown", [
    ("redis://:s3cret@127.0.0.1:{port}/2", "redis://:***@127.0.0.1:{port}/2"),
    ("redis://bob:s3cret@127.0.0.1:{port}", "redis://bob:***@127.0.0.1:{port}"),
    ("redis://s3cret@127.0.0.1:{port}", "redis://:***@127.0.0.1:{port}"),
])
@pytest.mark.parametrize("prog", ["notify-send", "notify-tail"])
def test_password_is_never_printed(prog, given, shown):
    port = free_port()
    args = ["-u", "alice", "hi"] if prog == "notify-send" else []
    p = run(prog, *args, env={"NOTIFYD_REDIS_URL": given.format(port=port)})
    assert p.returncode == 69
    assert "s3cret" not in p.stderr.decode()
    assert only_line(p, prog) == (f"cannot connect to Redis at "
                                  f"{shown.format(port=port)} {WHERE}: "
                                  "Connection refused")


def test_missing_unix_socket(tmp_path):
    sock = tmp_path / "none.sock"
    for prog, args in (("notify-send", ["-u", "a", "x"]),
                       ("notify-tail", [])):
        p = run(prog, "--redis", f"unix://{sock}?db=1", *args)
        assert p.returncode == 69
        assert only_line(p, prog) == (f"cannot connect to Redis at "
                                      f"unix://{sock}?db=1 {WHERE}: "
                                      "No such file or directory")


# ---- something else listens there -------------------------------------


@pytest.fixture
def http_server(tmp_path):
    """Python's http.server on a free port: answers a RESP command with
    an HTML error page (it takes it for an HTTP/0.9 request)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind",
                             "127.0.0.1", str(port)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield port
    finally:
        proc.kill()
        proc.wait()


class Listener:
    """A TCP server in a thread that does one thing with each connection:
    'status' answers like nginx does to bytes it cannot read, 'eof' reads
    and closes its side without a word, 'silent' reads and says nothing."""

    def __init__(self, mode):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            c.settimeout(5)
            try:
                c.recv(4096)
                if self.mode == "status":
                    c.sendall(b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n"
                              b"Content-Type: text/html\r\n\r\n<html>\r\n")
                elif self.mode == "eof":
                    c.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def listener():
    made = []

    def make(mode):
        made.append(Listener(mode))
        return made[-1]
    yield make
    for lst in made:
        lst.close()


@pytest.mark.parametrize("prog,args,stdin", REDIS_USERS, ids=REDIS_USER_IDS)
def test_an_http_server_is_not_a_redis_server(http_server, prog, args, stdin):
    url = f"redis://127.0.0.1:{http_server}"
    p = run(prog, "--redis", url, *args, input=stdin)
    assert p.returncode == 69
    line = only_line(p, prog)
    assert line == (f'{url} {WHERE} is not a Redis server '
                    f'(it answered "<!DOCTYPE HTML>")')
    assert "Protocol error" not in line


def test_an_http_status_line_is_quoted(listener):
    lst = listener("status")
    for url in (f"redis://127.0.0.1:{lst.port}",
                f"redis://:s3cret@127.0.0.1:{lst.port}/1"):
        p = run("notify-send", "--redis", url, "-u", "a", "x")
        assert p.returncode == 69
        shown = url.replace("s3cret", "***")
        assert only_line(p, "notify-send") == (
            f'{shown} {WHERE} is not a Redis server '
            f'(it answered "HTTP/1.1 400 Bad Request")')


def test_a_server_that_hangs_up_without_answering(listener):
    lst = listener("eof")
    url = f"redis://127.0.0.1:{lst.port}"
    p = run("notify-tail", "--redis", url)
    assert p.returncode == 69
    assert only_line(p, "notify-tail") == (
        f"cannot connect to Redis at {url} {WHERE}: the server closed the "
        "connection without answering")


def test_a_server_that_never_answers_times_out(listener):
    lst = listener("silent")
    url = f"redis://127.0.0.1:{lst.port}"
    t0 = time.monotonic()
    p = run("notify-send", "--redis", url, "-u", "a", "x")
    elapsed = time.monotonic() - t0
    assert p.returncode == 69
    assert only_line(p, "notify-send") == \
        f"cannot connect to Redis at {url} {WHERE}: no answer within 5000 ms"
    assert 4.5 < elapsed < 15


def test_notifyd_api_reports_a_non_redis_server_too(daemons, tmp_path,
                                                     http_server):
    # The connect helper is lib/nt_redis's: notifyd-api's log gets the same
    # words (its 503 answers keep them to the log).
    from apiutil import start_api

    class NotRedis:
        url = f"redis://127.0.0.1:{http_server}"
    api = start_api(daemons, NotRedis, tmp_path)
    assert api.get("/api/notifications/online-count").status == 503
    api.daemon.stop()
    log = api.daemon.stderr()
    assert (f'{NotRedis.url} {WHERE} is not a Redis server (it answered '
            '"<!DOCTYPE HTML>")') in log, log
    assert "Protocol error" not in log


# ---- Redis says no ----------------------------------------------------


def test_wrong_or_missing_password(redis):
    redis.cli("CONFIG", "SET", "requirepass", "s3cret")
    base = f"127.0.0.1:{redis.port}"
    p = run("notify-send", "--redis", f"redis://:wrong@{base}", "-u", "a", "x")
    assert p.returncode == 69
    assert only_line(p, "notify-send") == (
        f"Redis at redis://:***@{base} {WHERE} refused AUTH: WRONGPASS "
        "invalid username-password pair or user is disabled.")
    p = run("notify-tail", "--redis", f"redis://{base}")
    assert p.returncode == 69
    assert only_line(p, "notify-tail") == (
        f"Redis at redis://{base} {WHERE} refused PING: NOAUTH "
        "Authentication required.")


# ---- notify-tail loses Redis later --------------------------------------


def test_tail_says_the_same_once_when_reconnecting_fails(redis, daemons):
    tail = daemons("notify-tail", "--redis", redis.url)
    redis.stop()
    time.sleep(1.5)  # attempts at 100, 200, 400, 800 ms: one line only
    redis.start()
    wait_until(lambda: numsub(redis, "notifications") == 1, 15,
               "notify-tail to subscribe again")
    assert tail.stop() == 0
    lines = tail.stderr().splitlines()
    failed = [x for x in lines if "cannot connect" in x]
    assert failed == [
        f"notify-tail: cannot connect to Redis at {redis.url} {WHERE}: "
        "Connection refused; retrying with backoff up to 5000 ms"]
    assert lines[-1] == ("notify-tail: reconnected: subscribed to "
                         "notifications again")


# ---- values that do not parse: 78, naming the flag or the variable -------


@pytest.mark.parametrize("var,value,reason", [
    ("NOTIFYD_OFFLINE_TTL", "x", "want a duration"),
    ("NOTIFYD_OFFLINE_TTL", "0", "want a duration"),
    ("NOTIFYD_MAX_CONTENT", "lots", "want a size"),
    ("NOTIFYD_MAX_MESSAGE", "0", "want a size"),
    ("NOTIFYD_OFFLINE_MAX", "0", "want a whole number from 1 to 1000000"),
    ("NOTIFYD_REDIS_TIMEOUT", "soon", "want a duration"),
    ("NOTIFYD_REDIS_URL", "http://x", "bad redis URL"),
    ("NOTIFYD_REDIS_PREFIX", "a b", "redis prefix may only contain"),
])
def test_send_bad_variable_is_78_and_named(var, value, reason):
    p = run("notify-send", "-u", "alice", "hi", env={var: value})
    assert p.returncode == 78
    assert only_line(p, "notify-send").startswith(f"{var}='{value}': {reason}")


@pytest.mark.parametrize("flag,var,value,reason", [
    ("--ttl", "NOTIFYD_OFFLINE_TTL", "soon", "want a duration"),
    ("--max-content", "NOTIFYD_MAX_CONTENT", "-1", "want a size"),
    ("--max-message", "NOTIFYD_MAX_MESSAGE", "1x", "want a size"),
    ("--offline-max", "NOTIFYD_OFFLINE_MAX", "1e3",
     "want a whole number from 1 to 1000000"),
    ("--redis-timeout", "NOTIFYD_REDIS_TIMEOUT", "61s", "want a duration"),
    ("--redis", "NOTIFYD_REDIS_URL", "redis://h:0", "bad redis URL"),
    ("--redis-prefix", "NOTIFYD_REDIS_PREFIX", "x*", "redis prefix"),
])
def test_send_same_bad_value_from_flag_or_variable_is_78(flag, var, value,
                                                         reason):
    by_flag = run("notify-send", flag, value, "-u", "alice", "hi")
    by_var = run("notify-send", "-u", "alice", "hi", env={var: value})
    assert by_flag.returncode == by_var.returncode == 78
    assert only_line(by_flag, "notify-send").startswith(
        f"{flag} '{value}': {reason}")
    assert only_line(by_var, "notify-send").startswith(
        f"{var}='{value}': {reason}")


def test_a_flag_wins_over_a_bad_variable(redis):
    p = run("notify-send", "--redis", redis.url, "--ttl", "1h", "-u", "bob",
            "x", env={"NOTIFYD_OFFLINE_TTL": "forever"})
    assert p.returncode == 0, p.stderr
    assert 3600 - 30 <= int(redis.cli("TTL", "offline:{bob}")) <= 3600


@pytest.mark.parametrize("args,env,start", [
    (["-n", "0"], None, "--count '0': want a whole number"),
    (["-n", "many"], None, "--count 'many': want a whole number"),
    (["--ping-interval", "1ms"], None, "--ping-interval '1ms': want a duration"),
    (["--ready-fd", "99"], None, "--ready-fd '99': descriptor 99 is not open"),
    ([], {"NOTIFYD_REDIS_URL": "http://x"},
     "NOTIFYD_REDIS_URL='http://x': bad redis URL"),
    ([], {"NOTIFYD_REDIS_PREFIX": "a b"},
     "NOTIFYD_REDIS_PREFIX='a b': redis prefix may only contain"),
])
def test_tail_bad_value_is_78_and_named(args, env, start):
    p = run("notify-tail", *args, env=env)
    assert p.returncode == 78
    assert only_line(p, "notify-tail").startswith(start)


# ---- command lines that cannot be read: 64 -------------------------------


@pytest.mark.parametrize("prog,args,line", [
    ("notify-send", ["--bogus", "-u", "a", "x"],
     "unknown flag '--bogus' (see --help)"),
    ("notify-send", ["-u"], "-u needs a value (see --help)"),
    ("notify-send", ["-u", "a", "-b", "x"], "-u and -b exclude each other"),
    ("notify-send", ["x"], "give -u USER or -b (see --help)"),
    ("notify-send", ["--batch", "-u", "a"],
     "--batch takes its requests from standard input only "
     "(no -u, -b, -t, -c, -d or MESSAGE)"),
    ("notify-send", ["--batch", "-t", "info"],
     "--batch takes its requests from standard input only "
     "(no -u, -b, -t, -c, -d or MESSAGE)"),
    ("notify-send", ["-q", "-v", "-u", "a", "x"],
     "-q and -v exclude each other"),
    ("notify-tail", ["stray"], "unexpected argument 'stray' (see --help)"),
    ("notify-tail", ["--redis"], "--redis needs a value (see --help)"),
    ("notify-tail", ["-x"], "unknown flag '-x' (see --help)"),
    ("notify-tail", ["--since", "10m"],
     "--since needs -u USER: it follows one user's log"),
    ("notify-tail", ["--since", "10m", "-u", "a", "--offline", "a"],
     "--since and --offline exclude each other"),
])
def test_unreadable_command_line_is_64(prog, args, line):
    p = run(prog, *args, input="")
    assert p.returncode == 64
    assert only_line(p, prog) == line


# ---- bad data: 65 ----------------------------------------------------------


@pytest.mark.parametrize("args,line", [
    (["-u", "alice", "--since", "yesterday"],
     "--since 'yesterday': neither a message id (a UUID) nor a duration "
     "(e.g. 10m)"),
    (["-u", "alice", "--since", "01a21a0b-0001-7000-8000-00000000000g"],
     "--since '01a21a0b-0001-7000-8000-00000000000g': neither a message id "
     "(a UUID) nor a duration (e.g. 10m)"),
    # Names are checked as every program checks them (notifyd(7)).
    (["-u", "bad user", "--since", "10m"], "-u: user id may only contain"),
    (["-u", "bad user"], "-u: user id may only contain"),
    (["--offline", "a{b}"], "--offline: user id may only contain"),
    (["-c", "news!"], "-c: channel may only contain"),
    (["-t", "x" * 65], "-t: type is longer than 64 bytes"),
])
def test_tail_bad_since_is_65(args, line):
    p = run("notify-tail", *args)
    assert p.returncode == 65
    assert only_line(p, "notify-tail").startswith(line)


def test_help_and_version_exit_0_on_stdout():
    for prog in ("notify-send", "notify-tail"):
        for flag in ("--help", "-h"):
            p = run(prog, flag)
            assert p.returncode == 0 and p.stderr == b""
            assert p.stdout.decode().startswith(f"usage: {prog} ")
        p = run(prog, "--version")
        assert p.returncode == 0
        assert re.fullmatch(rf"{prog} \d+\.\d+\.\d+\n", p.stdout.decode())
