#!/bin/sh
# Requests/s and latency of notifyd-api's send route: the daemon pinned to
# one core (THREADS worker threads, default 2, the daemon's default), a
# private redis-server and wrk on the other core, loopback only, CONNS
# connections for DURATION seconds (default 32 and 10).
set -eu
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
command -v wrk >/dev/null || { echo "bench-api: wrk missing (make deps)" >&2; exit 69; }
[ -x bin/notifyd-api ] || { echo "bench-api: build bin/notifyd-api first" >&2; exit 69; }

work=$(mktemp -d)
free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
rport=$(free_port)
aport=$(free_port)
ncpu=$(nproc)
api_cpu=0
other_cpu=$((ncpu > 1 ? 1 : 0))
pids=""
trap 'for p in $pids; do kill $p 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"' EXIT

taskset -c "$other_cpu" redis-server --port "$rport" --bind 127.0.0.1 \
    --dir "$work" --save "" --appendonly no --loglevel warning \
    >"$work/redis.log" 2>&1 &
pids="$pids $!"
until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.05; done

BENCH_API_KEY=$(openssl rand -hex 20)
export BENCH_API_KEY
printf 'bench %s\n' "$BENCH_API_KEY" > "$work/keys"
exec 3>"$work/ready"
taskset -c "$api_cpu" bin/notifyd-api --listen "127.0.0.1:$aport" \
    --redis "redis://127.0.0.1:$rport" --api-keys-file "$work/keys" \
    --threads "$THREADS" --log-level warn --ready-fd 3 &
pids="$pids $!"
exec 3>&-
i=0
until [ -s "$work/ready" ]; do
	i=$((i + 1)); [ $i -lt 200 ] || { echo "bench-api: daemon not ready" >&2; exit 69; }
	sleep 0.05
done

echo "notifyd-api send: $THREADS worker threads on cpu $api_cpu; redis-server and wrk on cpu $other_cpu; $CONNS connections, ${DURATION}s"
taskset -c "$other_cpu" wrk -t 1 -c "$CONNS" -d "${DURATION}s" --latency \
    -s tools/bench/api-send.lua "http://127.0.0.1:$aport" > "$work/wrk.out"
cat "$work/wrk.out"
stored=$(redis-cli -p "$rport" eval "local n=0 for _,k in ipairs(redis.call('keys','offline:{*')) do local h=redis.call('hmget',k,'seq','first') n=n+h[1]-h[2]+1 end return n" 0)
rps=$(awk '/^Requests\/sec/ {print $2}' "$work/wrk.out")
p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.out")
echo "notifyd-api send ($THREADS threads, 1 core): $rps requests/s, p99 $p99, $stored messages stored in Redis"
