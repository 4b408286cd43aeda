#!/bin/sh
# Throughput of notify-send --batch: N targeted messages over one
# pipelined connection to a private redis-server.
set -eu
N=${N:-100000}
work=$(mktemp -d)
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --dir "$work" --save "" --appendonly no --loglevel warning --logfile "$work/redis.log" &
rpid=$!
trap 'kill $rpid 2>/dev/null; wait $rpid 2>/dev/null; rm -rf "$work"' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
/usr/bin/python3 -c "
import json
for i in range($N):
    print(json.dumps({'target_user': 'u%d' % (i % 1000), 'notification_type': 'info', 'content': 'message %d' % i}))
" > "$work/batch.jsonl"
start=$(date +%s.%N)
bin/notify-send --redis "redis://127.0.0.1:$port" --batch < "$work/batch.jsonl"
end=$(date +%s.%N)
stored=$(redis-cli -p "$port" eval "local n=0 for _,k in ipairs(redis.call('keys','offline:{*')) do local h=redis.call('hmget',k,'seq','first') n=n+h[1]-h[2]+1 end return n" 0)
/usr/bin/python3 -c "print('notify-send --batch: %d messages in %.3f s, %.0f msg/s, %s stored' % ($N, $end - $start, $N / ($end - $start), '$stored'))"
