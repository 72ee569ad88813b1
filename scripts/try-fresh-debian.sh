#!/usr/bin/env bash
# `make demo` on a stock Debian 12 with nothing but python3 (and make): what a new user has.
#
#   sudo scripts/try-fresh-debian.sh [WORKDIR]        (root; needs debootstrap and unshare)
#
# 1. debootstrap builds a minimal bookworm root with python3, make and ca-certificates only
#    (no pip, no ensurepip/venv, no uv, no Redis, no PostgreSQL);
# 2. this repository's committed HEAD is cloned into it;
# 3. `make install-runtime` runs inside it with the network (uv is bootstrapped by scripts/uv);
# 4. `make demo DEMO_ARGS=--headless` runs inside it in a fresh network namespace with only a
#    loopback interface, so nothing of this machine (its Redis, its PostgreSQL) can be used.
# The host's CA bundle is copied in, for networks whose HTTPS goes through a local CA.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/var/tmp/fapiao-fresh-debian}
root=$work/root
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ ! -x "$root/usr/bin/python3" ]; then
  mkdir -p "$work"
  debootstrap --variant=minbase --include=python3,make,ca-certificates bookworm "$root" "$mirror"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
rm -rf "$root/src/fapiao-bridge"
git clone --quiet "$repo" "$root/src/fapiao-bridge"

mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
mountpoint -q "$root/dev" || mount --bind /dev "$root/dev"
trap 'umount "$root/dev" "$root/proc" 2>/dev/null || true' EXIT

in_root() {
  chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    /bin/bash -c "cd /src/fapiao-bridge && $1"
}

echo "== inside: $(chroot "$root" /usr/bin/python3 --version), pip: $(chroot "$root" /usr/bin/python3 -m pip --version 2>&1 | tail -n 1)"
in_root "make install-runtime"
echo "== make demo, offline (loopback only) =="
export -f in_root
export root
unshare --net /bin/bash -c 'ip link set lo up && in_root "make demo DEMO_ARGS=--headless"'
echo "== make demo exited 0 on a fresh Debian 12 root =="
