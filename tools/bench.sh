#!/bin/sh
# make bench: run every benchmark the project ships and print figures.
# Benchmarks measure; they do not pass or fail.
set -eu
cd "$(dirname "$0")/.."
status=0
for b in tools/bench-*.sh; do
	[ -f "$b" ] || continue
	echo "== $b"
	sh "$b" || { echo "bench: $b failed" >&2; status=1; }
done
exit $status
