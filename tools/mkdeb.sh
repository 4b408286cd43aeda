#!/bin/sh
# mkdeb.sh: build notifyd_<version>_<arch>.deb (make deb) with debhelper,
# from a copy of the working tree (tracked and untracked files that git
# does not ignore), so that the repo's own build/ and bin/ stay as they
# are. The version is the Makefile's VERSION, which debian/changelog must
# match. Prints the path of the .deb.
#
#   DEB_OUT_DIR   where the .deb goes (build/deb)
#   LINTIAN=no    skip the lintian check (the default fails on any
#                 warning or error)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
out=${DEB_OUT_DIR:-$root/build/deb}

die() {
	echo "mkdeb: $*" >&2
	exit 1
}

version=$(sed -n 's/^VERSION *:= *//p' "$root/Makefile")
deb_version=$(cd "$root" && dpkg-parsechangelog -S Version)
[ "$version" = "$deb_version" ] ||
    die "Makefile VERSION $version but debian/changelog $deb_version: add a changelog entry (dch -v $version)"
arch=$(dpkg --print-architecture)

mkdir -p "$out"
out=$(cd "$out" && pwd)
work="$out/src"
tree="$work/notifyd-$version"
rm -rf "$work"
mkdir -p "$tree"

# The files of the tree, not its build products or the caches beside it.
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	(cd "$root" && git ls-files -z -co --exclude-standard) |
	    (cd "$root" && tar --null -T - --ignore-failed-read -cf - 2>/dev/null) |
	    tar -xf - -C "$tree"
else
	(cd "$root" && tar --exclude=./build --exclude=./.git \
	    --exclude=./tests/browser/node_modules --exclude='./bin/notify*' \
	    -cf - .) | tar -xf - -C "$tree"
fi

echo "mkdeb: building notifyd $version ($arch) in $tree" >&2
if ! (cd "$tree" && DEB_BUILD_OPTIONS="nocheck noddebs parallel=$(nproc)" \
    dpkg-buildpackage -b -us -uc) > "$out/build.log" 2>&1; then
	tail -n 40 "$out/build.log" >&2
	die "dpkg-buildpackage failed (log: $out/build.log)"
fi
deb="$out/notifyd_${version}_$arch.deb"
mv "$work/notifyd_${version}_$arch.deb" "$deb"
rm -rf "$work"

if [ "${LINTIAN:-yes}" != no ]; then
	lintian --fail-on error,warning "$deb" >&2 || die "lintian: $deb is not clean"
fi
echo "$deb"
