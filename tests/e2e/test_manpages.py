"""Each program's --help and its man page name the same long flags, the
same environment variables and the same defaults, and every man page is
clean under mandoc -Tlint."""
import os
import re
import subprocess

import pytest

from conftest import ROOT, bin_path

PAGES = [("notifyd-ws", 8), ("notifyd-api", 8), ("notify-send", 1),
         ("notify-tail", 1)]


def _flags(text):
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*[a-z]", text))


@pytest.mark.parametrize("prog,section", PAGES)
def test_help_and_man_page_name_the_same_flags(prog, section):
    if not os.path.exists(bin_path(prog)):
        pytest.skip(f"{prog} is not built")
    helptext = subprocess.run([bin_path(prog), "--help"], capture_output=True,
                              timeout=10)
    assert helptext.returncode == 0
    page = os.path.join(ROOT, "man", f"{prog}.{section}")
    rendered = subprocess.run(["mandoc", "-Tascii", page], capture_output=True,
                              check=True).stdout.decode()
    rendered = re.sub(r".\x08", "", rendered)   # overstrike (bold/underline)
    in_help = _flags(helptext.stdout.decode() + helptext.stderr.decode())
    in_man = _flags(rendered)
    assert len(in_help) >= 4, in_help
    assert in_help - in_man == set(), f"in --help but not in {page}"
    assert in_man - in_help == set(), f"in {page} but not in --help"


def _help(prog):
    r = subprocess.run([bin_path(prog), "--help"], capture_output=True,
                       timeout=10)
    assert r.returncode == 0
    return r.stdout.decode()


def _render(prog, section):
    page = os.path.join(ROOT, "man", f"{prog}.{section}")
    text = subprocess.run(["mandoc", "-Tascii", page], capture_output=True,
                          check=True).stdout.decode()
    return re.sub(r".\x08", "", text)


def _help_entries(helptext):
    """--help flag entries: {"--name": "its whole help text"}."""
    entries, cur = {}, None
    for line in helptext.splitlines():
        m = re.match(r" {2,6}(?:-\w, )?(--[a-z][a-z-]*)", line)
        if m and (line.startswith("  -") or line.startswith("      --")):
            cur = m.group(1)
            entries[cur] = line
        elif cur and line.startswith(" " * 20):
            entries[cur] += " " + line.strip()
        else:
            cur = None
    return entries


def _section(rendered, name):
    m = re.search(r"^" + name + r"\n(.*?)(?=^[A-Z][A-Z ]+\n|\Z)", rendered,
                  re.S | re.M)
    return m.group(1) if m else ""


def _man_item(options, flag):
    """The text of the OPTIONS item that starts with flag."""
    lines = options.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"(\s+)(?:-\w, )?" + re.escape(flag) + r"\b", line)
        if not m:
            continue
        indent = len(m.group(1))
        body = [line]
        for nxt in lines[i + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            body.append(nxt)
        return " ".join(" ".join(body).split())
    return None


@pytest.mark.parametrize("prog,section", PAGES)
def test_help_shows_every_flag_with_its_variable_and_default(prog, section):
    """--help prints each flag with [env: VAR] and (default: X); the man
    page names the same variables in ENVIRONMENT and the same default in
    the flag's OPTIONS item."""
    if not os.path.exists(bin_path(prog)):
        pytest.skip(f"{prog} is not built")
    entries = _help_entries(_help(prog))
    rendered = _render(prog, section)
    environment = _section(rendered, "ENVIRONMENT")
    options = _section(rendered, "OPTIONS")
    help_vars = set()
    for flag, text in entries.items():
        var = re.search(r"\[env: (NOTIFYD_\w+)\]", text)
        if var:
            help_vars.add(var.group(1))
        default = re.search(r"\(default: ([^)]*)\)", text)
        if default:
            item = _man_item(options, flag)
            assert item is not None, f"{flag} has no OPTIONS item"
            assert default.group(1) in item, \
                f"{flag}: default {default.group(1)!r} not in man page: {item}"
    man_vars = set(re.findall(r"NOTIFYD_\w+", environment))
    assert help_vars, "no flag shows its variable in --help"
    assert help_vars - man_vars == set(), "in --help but not in ENVIRONMENT"
    assert man_vars - help_vars == set(), "in ENVIRONMENT but not in --help"


@pytest.mark.parametrize("page", sorted(os.listdir(os.path.join(ROOT, "man"))))
def test_man_page_lints_clean(page):
    r = subprocess.run(["mandoc", "-Tlint", "-W", "warning",
                        os.path.join(ROOT, "man", page)], capture_output=True)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
