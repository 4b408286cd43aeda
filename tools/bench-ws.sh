#!/bin/sh
# bench-ws: notifyd-ws figures (make bench). Measures, never fails on a
# number: RSS per idle authenticated connection at 10,000 connections,
# then targeted and broadcast delivery throughput and latency.
#
# Everything is private and on loopback: a redis-server on a free port,
# one notifyd-ws, and the asyncio load client tools/bench/ws-load.py.
# BENCH_WS_CONNS, BENCH_WS_TARGETED and BENCH_WS_BROADCASTS scale it.
set -eu
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
conns=${BENCH_WS_CONNS:-10000}
targeted=${BENCH_WS_TARGETED:-50000}
broadcasts=${BENCH_WS_BROADCASTS:-20}

[ -x bin/notifyd-ws ] || { echo "bench-ws: build first (make)" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-ws.XXXXXX")
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	for p in $pids; do wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() {
	$PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

rport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --dir "$work" --save "" \
    --appendonly no --loglevel warning --maxclients 1000 >/dev/null &
pids="$pids $!"
i=0
until redis-cli -p "$rport" ping >/dev/null 2>&1; do
	i=$((i + 1)); [ $i -lt 100 ] || { echo "bench-ws: no redis" >&2; exit 1; }
	sleep 0.1
done

# The load client sends with the very script the senders use.
${CC:-cc} -Ilib -o "$work/print-lua" tools/bench/print-lua.c \
    build/plain/libnotifyd.a -lhiredis -ljansson
"$work/print-lua" > "$work/send.lua"

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/secret"
wport=$(free_port)
: > "$work/ready"
bin/notifyd-ws --listen "127.0.0.1:$wport" --redis "redis://127.0.0.1:$rport" \
    --jwt-secret-file "$work/secret" --log-level warn --ready-fd 3 \
    3>"$work/ready" 2>"$work/ws.log" &
wpid=$!
pids="$pids $wpid"
i=0
until [ -s "$work/ready" ]; do
	i=$((i + 1)); [ $i -lt 100 ] || { cat "$work/ws.log" >&2; exit 1; }
	sleep 0.1
done

echo "notifyd-ws $(bin/notifyd-ws --version | cut -d' ' -f2), $(nproc) cores," \
    "open files limit $(ulimit -Hn)"
$PY tools/bench/ws-load.py --ws-port "$wport" --redis-port "$rport" \
    --secret-file "$work/secret" --pid "$wpid" --conns "$conns" \
    --targeted "$targeted" --broadcasts "$broadcasts" \
    --notify-send bin/notify-send --lua-file "$work/send.lua"
echo "daemon CPU time: $(ps -o times= -p "$wpid" | tr -d ' ')s"
