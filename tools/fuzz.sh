#!/bin/sh
# Build every libFuzzer target of tests/fuzz/ into build/fuzz/ with clang
# (ASan + UBSan + libFuzzer) and run each for FUZZ_SECONDS (default 60)
# on its corpus tests/fuzz/corpus/<target>/. New inputs go to
# build/fuzz/<target>/corpus (the committed corpus stays minimal); a crash
# is written to build/fuzz/<target>/ and stops the script.
#
#   sh tools/fuzz.sh                  build and run every target
#   sh tools/fuzz.sh fuzz_msg ...     only these targets
#   FUZZ_SECONDS=300 sh tools/fuzz.sh
#   FUZZ_BUILD_ONLY=1 sh tools/fuzz.sh
set -eu

cd "$(dirname "$0")/.."
SECS=${FUZZ_SECONDS:-60}
OUT=build/fuzz
CC=${FUZZ_CC:-clang}

# clang and its runtime (libclang_rt.fuzzer) are Debian packages.
if ! command -v "$CC" >/dev/null 2>&1 ||
    ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a \
    >/dev/null 2>&1; then
	echo "fuzz: installing clang" >&2
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends clang libclang-rt-dev >&2
fi

CFLAGS="-std=c11 -D_GNU_SOURCE -DNT_VERSION=\"fuzz\" -g -O1 -fsanitize=fuzzer,address,undefined
-fno-sanitize-recover=undefined -fno-omit-frame-pointer -Wall -Wextra -Wno-unused-parameter
-Ilib -Inotifyd-ws $(pkg-config --cflags hiredis jansson libjwt)"
LIBS="$(pkg-config --libs hiredis jansson libjwt) -lwslay -lev -lcrypto -lm"
LIB_SRCS=$(ls lib/*.c)
# fuzz_handshake drives the request parser and the handshake checks beside it.
WS_SRCS="notifyd-ws/http.c"

mkdir -p "$OUT"
targets=${*:-$(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//')}
for t in $targets; do
	srcs="tests/fuzz/$t.c $LIB_SRCS"
	[ "$t" = fuzz_handshake ] && srcs="$srcs $WS_SRCS"
	echo "fuzz: building $OUT/$t" >&2
	# shellcheck disable=SC2086
	$CC $CFLAGS -o "$OUT/$t" $srcs $LIBS
done
[ -n "${FUZZ_BUILD_ONLY:-}" ] && exit 0

for t in $targets; do
	work="$OUT/$t.work"
	mkdir -p "$work/corpus"
	maxlen=4096
	[ "$t" = fuzz_handshake ] && maxlen=9000
	dict=""
	[ -f "tests/fuzz/$t.dict" ] && dict="-dict=$(pwd)/tests/fuzz/$t.dict"
	echo "fuzz: running $t for ${SECS}s" >&2
	rc=0
	# -jobs=1 runs the fuzzer in one child whose log is fuzz-0.log.
	(cd "$work" && ASAN_OPTIONS=detect_leaks=1 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    "../$t" -workers=1 -jobs=1 -max_total_time="$SECS" \
	    -max_len="$maxlen" -artifact_prefix=./ -print_final_stats=1 \
	    $dict corpus "../../../tests/fuzz/corpus/$t") || rc=$?
	tail -n 25 "$work/fuzz-0.log" >&2
	if [ "$rc" -ne 0 ] || ls "$work"/crash-* "$work"/leak-* \
	    "$work"/timeout-* "$work"/oom-* >/dev/null 2>&1; then
		echo "fuzz: $t found a problem, see $work" >&2
		exit 1
	fi
done
echo "fuzz: every target ran ${SECS}s without a finding" >&2
