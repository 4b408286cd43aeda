#!/bin/sh
# Make build/valgrind/bin: one wrapper per program that runs the plain
# build (build/plain/bin) under valgrind memcheck. `make valgrind` points
# the end-to-end tests at it (NOTIFYD_BIN), and tests/e2e/conftest.py
# fails a test whose program printed a valgrind report.
set -eu
cd "$(dirname "$0")/.."
out=build/valgrind/bin
mkdir -p "$out"
for p in notifyd-ws notifyd-api notify-send notify-tail; do
	[ -x "build/plain/bin/$p" ] || continue
	cat > "$out/$p" <<EOT
#!/bin/sh
exec valgrind -q --error-exitcode=99 --leak-check=full \\
    --errors-for-leak-kinds=definite --show-leak-kinds=definite \\
    --suppressions=$PWD/tools/valgrind.supp "$PWD/build/plain/bin/$p" "\$@"
EOT
	chmod +x "$out/$p"
done
