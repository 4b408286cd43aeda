#!/bin/sh
# Install the Debian packages that building, testing and running notifyd
# need. Does nothing (and needs no root) when all of them are present.
set -eu

PKGS="build-essential pkg-config libhiredis-dev libwslay-dev libjansson-dev
libjwt-dev libssl-dev libmicrohttpd-dev libev-dev libcmocka-dev redis-server mandoc
python3 python3-pytest python3-websockets python3-jwt curl openssl valgrind wrk
chromium"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
		missing="$missing $p"
	fi
done

# Node.js may come from elsewhere than Debian (with its own npm): ask for
# the commands, not the packages.
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"

if [ -n "$missing" ]; then
	echo "deps: installing:$missing" >&2
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	# shellcheck disable=SC2086
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
fi

# Browser tests drive Debian's chromium with playwright-core from npm.
if [ -f tests/browser/package.json ] && [ ! -d tests/browser/node_modules/playwright-core ]; then
	echo "deps: npm install in tests/browser" >&2
	(cd tests/browser && npm install --no-audit --no-fund --silent >&2)
fi
exit 0
