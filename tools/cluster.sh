#!/bin/sh
# cluster.sh: the production arrangement from the repo, on loopback
# (make cluster): supervisord with contrib/supervisord.conf running
# NOTIFYD_WS_PROCS notifyd-ws sharing one port and a notifyd-api from
# bin/, nginx with contrib/nginx.conf in front, and a private
# redis-server unless NOTIFYD_REDIS_URL names one. It prints the URLs,
# then waits; Ctrl-C (SIGINT) or SIGTERM stops everything it started.
#
#   NGINX_PORT, WS_PORT, API_PORT   ports on 127.0.0.1 (8088, 8080, 8081)
#   NOTIFYD_WS_PROCS                notifyd-ws instances (2)
#   NOTIFYD_REDIS_URL               use this Redis instead of a private one
#   NOTIFYD_BIN                     the programs (bin/ of the repo)
#   CLUSTER_DIR                     state: secrets, logs, sockets (a new
#                                   temporary directory, removed at exit;
#                                   one given is kept)
#
# Other NOTIFYD_* variables reach the daemons as they are. Logs of
# supervisord and the daemons go to $CLUSTER_DIR/supervisord.log, nginx's
# to $CLUSTER_DIR/logs/. "cluster: ready" is printed once nginx, every
# daemon and Redis answer.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${NOTIFYD_BIN:-$root/bin}
NGINX_PORT=${NGINX_PORT:-8088}
WS_PORT=${WS_PORT:-8080}
API_PORT=${API_PORT:-8081}
NOTIFYD_WS_PROCS=${NOTIFYD_WS_PROCS:-2}
pids=""
sup_pid=""
keep_dir=${CLUSTER_DIR:+1}
dir=""

die() {
	code=$1
	shift
	echo "cluster: $*" >&2
	exit "$code"
}

cleanup() {
	trap - INT TERM EXIT
	# supervisord stops its daemons (SIGTERM, drain) before it exits.
	[ -z "$sup_pid" ] || kill -TERM "$sup_pid" 2>/dev/null || true
	[ -z "$sup_pid" ] || wait "$sup_pid" 2>/dev/null || true
	for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
	for p in $pids; do wait "$p" 2>/dev/null || true; done
	[ -n "$keep_dir" ] || [ -z "$dir" ] || rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# A port in use stops the run before anything starts.
for p in "$NGINX_PORT" "$WS_PORT" "$API_PORT"; do
	/usr/bin/python3 -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$p" 2>/dev/null ||
	    die 78 "port $p is in use: set NGINX_PORT, WS_PORT or API_PORT"
done
[ -x "$bin/notifyd-ws" ] && [ -x "$bin/notifyd-api" ] ||
    die 69 "the daemons are not built (make all)"
command -v supervisord >/dev/null && command -v nginx >/dev/null ||
    die 69 "supervisord or nginx is missing (make deps)"

if [ -n "$keep_dir" ]; then
	dir=$CLUSTER_DIR
	mkdir -p "$dir"
else
	dir=$(mktemp -d "${TMPDIR:-/tmp}/notifyd-cluster.XXXXXX")
fi
dir=$(cd "$dir" && pwd)
mkdir -p "$dir/logs" "$dir/nginx"

random_hex() {
	od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'
}
[ -s "$dir/jwt-secret" ] || random_hex 32 > "$dir/jwt-secret"
[ -s "$dir/api-keys" ] || printf 'cluster %s\n' "$(random_hex 16)" > "$dir/api-keys"
apikey=$(cut -d' ' -f2 "$dir/api-keys" | head -n 1)

if [ -z "${NOTIFYD_REDIS_URL:-}" ]; then
	rport=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	redis-server --port "$rport" --bind 127.0.0.1 --dir "$dir" --save "" \
	    --appendonly no --loglevel warning --logfile "$dir/logs/redis.log" &
	pids="$pids $!"
	NOTIFYD_REDIS_URL="redis://127.0.0.1:$rport"
fi

# What contrib/supervisord.conf expands, and what the daemons read.
export NOTIFYD_RUN_DIR="$dir" NOTIFYD_WS_PROCS NOTIFYD_REDIS_URL
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then
	hard=65536
fi
export NOTIFYD_MINFDS="${NOTIFYD_MINFDS:-$hard}"
export NOTIFYD_WS_LISTEN="127.0.0.1:$WS_PORT" NOTIFYD_API_LISTEN="127.0.0.1:$API_PORT"
export NOTIFYD_JWT_SECRET_FILE="$dir/jwt-secret" NOTIFYD_API_KEYS_FILE="$dir/api-keys"
export NOTIFYD_WS_DEMO="${NOTIFYD_WS_DEMO:-1}"
export PATH="$bin:$PATH"

supervisord -c "$root/contrib/supervisord.conf" >> "$dir/supervisord.log" 2>&1 &
sup_pid=$!

# contrib/nginx.conf in nginx's http context, placeholders filled in; the
# rest of a main configuration kept inside $dir.
sed -e "s/@LISTEN@/127.0.0.1:$NGINX_PORT/" -e "s/@WS_ADDR@/127.0.0.1:$WS_PORT/" \
    -e "s/@API_ADDR@/127.0.0.1:$API_PORT/" -e "s|@LOG_DIR@|$dir/logs|" \
    "$root/contrib/nginx.conf" > "$dir/nginx/notifyd.conf"
user_line=""
[ "$(id -u)" -ne 0 ] || user_line="user root;"
cat > "$dir/nginx/nginx.conf" <<EOF
$user_line
worker_processes 1;
pid $dir/nginx/nginx.pid;
error_log $dir/logs/error.log;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $dir/nginx/body;
    proxy_temp_path $dir/nginx/proxy;
    fastcgi_temp_path $dir/nginx/fastcgi;
    uwsgi_temp_path $dir/nginx/uwsgi;
    scgi_temp_path $dir/nginx/scgi;
    include $dir/nginx/notifyd.conf;
}
EOF
nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -e "$dir/logs/error.log" -g 'daemon off;' &
pids="$pids $!"

ctl() {
	supervisorctl -c "$root/contrib/supervisord.conf" "$@"
}

# Every program RUNNING (up for startsecs), not just STARTING.
all_running() {
	st=$(ctl status 2>/dev/null) || return 1
	[ -n "$st" ] && ! printf '%s\n' "$st" | grep -qv ' RUNNING '
}

# Ready: every program RUNNING, both daemons ready (Redis up), nginx
# passing requests to notifyd-ws.
i=0
until all_running &&
    curl -fsS -o /dev/null "http://127.0.0.1:$WS_PORT/readyz" 2>/dev/null &&
    curl -fsS -o /dev/null "http://127.0.0.1:$API_PORT/readyz" 2>/dev/null &&
    curl -fsS -o /dev/null "http://127.0.0.1:$NGINX_PORT/notify-client.js" 2>/dev/null; do
	kill -0 "$sup_pid" 2>/dev/null || die 69 "supervisord exited (log: $dir/supervisord.log)"
	i=$((i + 1))
	[ $i -lt 300 ] || die 69 "not ready within 30 s (logs: $dir/supervisord.log, $dir/logs/)"
	sleep 0.1
done

token=$(notifyd-ws --issue-token demo --ttl 12h) || die 70 "notifyd-ws --issue-token failed"

cat <<EOT
notifyd cluster: nginx on 127.0.0.1:$NGINX_PORT -> $NOTIFYD_WS_PROCS notifyd-ws on 127.0.0.1:$WS_PORT, notifyd-api on 127.0.0.1:$API_PORT
Redis: $NOTIFYD_REDIS_URL    state and logs: $dir

  Demo page (user "demo"):  http://127.0.0.1:$NGINX_PORT/#token=$token
  Another user's token:     $bin/notifyd-ws --jwt-secret-file $dir/jwt-secret --issue-token alice
  Send through nginx:       curl -sS -H 'Authorization: Bearer $apikey' -H 'Content-Type: application/json' \\
                              -d '{"target_user":"demo","notification_type":"info","content":"Hello through nginx"}' \\
                              http://127.0.0.1:$NGINX_PORT/api/notifications/send
  Send from the shell:      NOTIFYD_REDIS_URL=$NOTIFYD_REDIS_URL $bin/notify-send -u demo "Hello from notify-send"
  Processes:                NOTIFYD_RUN_DIR=$dir NOTIFYD_WS_PROCS=$NOTIFYD_WS_PROCS NOTIFYD_MINFDS=$NOTIFYD_MINFDS \\
                              supervisorctl -c $root/contrib/supervisord.conf status
  Logs:                     tail -f $dir/supervisord.log $dir/logs/notifyd-access.log

cluster: ready. Press Ctrl-C to stop everything.
EOT
status=0
wait "$sup_pid" || status=$?
sup_pid=""
die 69 "supervisord exited ($status; log: $dir/supervisord.log)"
