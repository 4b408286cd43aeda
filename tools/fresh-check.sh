#!/bin/sh
# make fresh-check: prove that `make test` passes on a clean Debian 12.
#
# Builds (once, cached outside the repo) a debootstrap --variant=minbase
# root of bookworm with only build-essential, git, curl and
# ca-certificates, copies a fresh copy of it, puts the committed tree
# (git archive HEAD: nothing uncommitted, nothing built) into it, and
# runs `make test` there under chroot in a private mount namespace.
#
#   NOTIFYD_FRESH_CACHE   where the base root is kept
#                         (default /var/cache/notifyd/fresh-check)
#   NOTIFYD_FRESH_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#   NOTIFYD_FRESH_KEEP=1  keep the work root afterwards (its path is printed)
#   NOTIFYD_FRESH_TARGET  make target to run inside (default test)
#
# Needs root (debootstrap, chroot, mount). Exit status is make's.
set -eu

cd "$(dirname "$0")/.."
top=$(pwd)

[ "$(id -u)" -eq 0 ] || { echo "fresh-check: needs root (debootstrap and chroot)" >&2; exit 77; }
git rev-parse --verify -q HEAD >/dev/null || { echo "fresh-check: not a git checkout with a commit" >&2; exit 64; }

cache=${NOTIFYD_FRESH_CACHE:-/var/cache/notifyd/fresh-check}
mirror=${NOTIFYD_FRESH_MIRROR:-http://deb.debian.org/debian}
target=${NOTIFYD_FRESH_TARGET:-test}
base="$cache/bookworm-minbase"

for tool in debootstrap unshare chroot; do
	command -v "$tool" >/dev/null 2>&1 && continue
	echo "fresh-check: installing debootstrap" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2
	break
done

if [ ! -f "$base/.complete" ]; then
	echo "fresh-check: building the base root in $base (once)" >&2
	rm -rf "$base"
	mkdir -p "$cache"
	debootstrap --variant=minbase --include=build-essential,git,curl,ca-certificates \
	    bookworm "$base" "$mirror" >&2
	# The security and update suites, as a Debian 12 install has them.
	cat > "$base/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
EOF
	touch "$base/.complete"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/notifyd-fresh.XXXXXX")
cleanup() {
	if [ "${NOTIFYD_FRESH_KEEP:-0}" = 1 ]; then
		echo "fresh-check: kept $work/root" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "fresh-check: copying the base root" >&2
cp -a "$base" "$work/root"
root="$work/root"

# Registries here may sit behind a TLS-inspecting proxy: the root trusts
# what the host trusts, as a machine set up on this network would.
if [ -d /usr/local/share/ca-certificates ]; then
	cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
fi
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
# Nothing boots in a chroot: packages must not start their services
# (nginx, supervisor) there, as on any Debian chroot or container.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

mkdir -p "$root/src/notifyd"
git archive --format=tar HEAD | tar -x -C "$root/src/notifyd"
echo "fresh-check: $(git rev-parse --short HEAD) in $root/src/notifyd, running make $target" >&2

start=$(date +%s)
status=0
# A private mount namespace: /proc, /dev and /sys mounts vanish with it.
unshare --mount --propagation private sh -eu -c '
	root=$1; target=$2
	mount -t proc proc "$root/proc"
	mount --rbind /dev "$root/dev"
	mount --rbind /sys "$root/sys"
	mount -t tmpfs tmpfs "$root/tmp"
	mkdir -p "$root/dev/shm"
	exec chroot "$root" /usr/bin/env -i \
	    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	    HOME=/root LANG=C.UTF-8 TERM=dumb CI=true \
	    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
	    sh -c "cd /src/notifyd && make $target"
' sh "$root" "$target" || status=$?
echo "fresh-check: make $target exited $status after $(( $(date +%s) - start )) s" >&2
exit $status
