"""Each program's --help and its man page name the same long flags, and
every man page is clean under mandoc -Tlint."""
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


@pytest.mark.parametrize("page", sorted(os.listdir(os.path.join(ROOT, "man"))))
def test_man_page_lints_clean(page):
    r = subprocess.run(["mandoc", "-Tlint", "-W", "warning",
                        os.path.join(ROOT, "man", page)], capture_output=True)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
