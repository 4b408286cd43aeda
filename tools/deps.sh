#!/bin/sh
# Install the Debian packages notifyd needs. Does nothing (and needs no
# root) when all of them are present.
#
#   sh tools/deps.sh run    building and `make run` (bin/notifyd-run) only
#   sh tools/deps.sh test   everything: run's set plus what the tests,
#                           make check and make bench use (the default)
set -eu

usage() {
	echo "usage: sh tools/deps.sh [run|test]" >&2
	exit 64
}

# Build: the compiler and the -dev packages the Makefile links against.
# Run: what bin/notifyd-run calls (redis-server, redis-cli, python3 for
# its port checks) and curl, which its printed commands use.
RUN_PKGS="build-essential pkg-config libhiredis-dev libwslay-dev libjansson-dev
libjwt-dev libssl-dev libmicrohttpd-dev libev-dev redis-server redis-tools
python3 curl"

# Tests: cmocka (unit), mandoc (lint-man), pytest, websockets and PyJWT
# with python3-cryptography (only a Recommends of python3-jwt, and PyJWT
# needs it for RS256/ES256), openssl (test keys), chromium (browser
# tests), valgrind (make valgrind) and wrk (make bench). Node.js and npm
# are checked below.
TEST_PKGS="libcmocka-dev mandoc python3-pytest python3-websockets python3-jwt
python3-cryptography openssl valgrind wrk chromium
supervisor nginx debhelper lintian systemd man-db strace"

case "${1:-test}" in
run)  set_name="run";  pkgs=$RUN_PKGS ;;
test) set_name="test"; pkgs="$RUN_PKGS $TEST_PKGS" ;;
*)    usage ;;
esac

missing=""
for p in $pkgs; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
		missing="$missing $p"
	fi
done

if [ "$set_name" = test ]; then
	# Node.js may come from elsewhere than Debian (with its own npm): ask
	# for the commands, not the packages.
	command -v node >/dev/null 2>&1 || missing="$missing nodejs"
	command -v npm >/dev/null 2>&1 || missing="$missing npm"
fi

if [ -n "$missing" ]; then
	echo "deps ($set_name): installing:$missing" >&2
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	# shellcheck disable=SC2086
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
fi

# Browser tests drive Debian's chromium with playwright-core from npm, at
# the version package-lock.json pins: an older or newer copy left in
# node_modules is replaced (npm ci installs exactly the lock file).
if [ "$set_name" = test ] && [ -f tests/browser/package-lock.json ]; then
	version_of() {
		node -p "require('./$1')$2" 2>/dev/null || true
	}
	want=$(cd tests/browser && version_of package-lock.json ".packages['node_modules/playwright-core'].version")
	have=$(cd tests/browser && version_of node_modules/playwright-core/package.json ".version")
	if [ "$want" != "$have" ]; then
		echo "deps: npm ci in tests/browser (playwright-core ${have:-none} -> $want)" >&2
		(cd tests/browser && npm ci --no-audit --no-fund --silent >&2)
	fi
fi
exit 0
