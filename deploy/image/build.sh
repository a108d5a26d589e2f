#!/usr/bin/env bash
# Builds the bridge's OCI image without a daemon (buildah, from scratch) and
# writes it as an OCI archive:
#
#   deploy/image/build.sh OUT.tar [BINARY]
#
# BINARY defaults to ${CARGO_TARGET_DIR:-target}/release/chat-kafka-bridge
# (`cargo build --release --locked`, the Dockerfile's build command).
#
# The image is the release binary (debug info stripped), the shared libraries
# `ldd` lists for it, /usr/bin/sleep (the chart's preStop hook runs `sleep`)
# with its libraries, the CA bundle, a passwd/group with the user `bridge`
# (10001:10001), and /var/lib/chat-kafka-bridge owned by it. Its config is
# deploy/Dockerfile's runtime stage: the same user, working directory, volume,
# ports, stop signal and entrypoint (deploy/image/run-test.sh compares them).
# The libraries are the build machine's (Debian bookworm here, like the
# Dockerfile's debian:bookworm-slim), so the binary runs with the libraries it
# was linked against.
#
# Nothing is left behind: buildah uses a storage root in a temporary directory
# (vfs driver: no mounts) that is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

out=${1:?usage: deploy/image/build.sh OUT.tar [BINARY]}
bin=${2:-${CARGO_TARGET_DIR:-target}/release/chat-kafka-bridge}
die() { echo "FAIL: $*" >&2; exit 1; }
[ -x "$bin" ] || die "no binary at $bin: run cargo build --release --locked (or pass BINARY)"
for t in buildah ldd strip tar sha256sum; do command -v "$t" >/dev/null || die "needs $t (Debian: buildah, binutils)"; done

# What the image is; deploy/image/run-test.sh checks each against deploy/Dockerfile.
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p;T;q' Cargo.toml)
IMAGE_NAME=${IMAGE_NAME:-chat-kafka-bridge}
UID_GID=10001
USER_NAME=bridge
WORKDIR=/var/lib/chat-kafka-bridge
PORTS=(8080 9090)
ENTRYPOINT=/usr/local/bin/chat-kafka-bridge
PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SIZE_LIMIT_MB=${IMAGE_SIZE_LIMIT_MB:-30}

t0=$(date +%s.%N)
work=$(mktemp -d)
ctr=
bah() { buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs "$@"; }
cleanup() {
  [ -n "$ctr" ] && bah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# --- the root filesystem, with owners and modes, as one tar ------------------
root=$work/rootfs
mkdir -p "$root"/{etc/ssl/certs,usr/bin,usr/lib,usr/lib64,usr/local/bin,tmp,var/lib}
# Debian's merged /usr, so the paths ldd prints (/lib/..., /lib64/...) resolve.
ln -s usr/bin "$root/bin"; ln -s usr/sbin "$root/sbin"; ln -s usr/lib "$root/lib"; ln -s usr/lib64 "$root/lib64"
mkdir -p "$root/usr/sbin"

install -m 0755 "$bin" "$root$ENTRYPOINT"
strip --strip-debug "$root$ENTRYPOINT"
install -m 0755 /usr/bin/sleep "$root/usr/bin/sleep"

# Every library either program loads, at the path the loader looks for it.
libs=$( { ldd "$bin"; ldd /usr/bin/sleep; } | awk '/=> \//{print $3} /^[ \t]*\/[^ ]+ \(/{print $1}' | sort -u)
[ -n "$libs" ] || die "ldd listed no libraries for $bin"
nlibs=0
for l in $libs; do
  # Resolve the path through the host's merged /usr (e.g. /lib/x86_64-linux-gnu/libc.so.6).
  case "$l" in /usr/*) dest=$root$l ;; *) dest=$root/usr$l ;; esac
  mkdir -p "$(dirname "$dest")"
  cp -L "$l" "$dest"
  chmod 0755 "$dest"
  nlibs=$((nlibs + 1))
done
# glibc >= 2.34 has nss_files and nss_dns built in; say what they are used for.
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"

cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\n%s:x:%s:%s::/nonexistent:/usr/sbin/nologin\n' "$USER_NAME" "$UID_GID" "$UID_GID" >"$root/etc/passwd"
printf 'root:x:0:\n%s:x:%s:\n' "$USER_NAME" "$UID_GID" >"$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf" "$root/etc/ssl/certs/ca-certificates.crt"
chmod 1777 "$root/tmp"
# The Dockerfile's `install -d -o 10001 -g 10001 -m 0750 /var/lib/chat-kafka-bridge`.
install -d -o "$UID_GID" -g "$UID_GID" -m 0750 "$root$WORKDIR"

# Files from this machine keep no host owner: everything is root's but the workdir.
chown -R 0:0 "$root"; chown "$UID_GID:$UID_GID" "$root$WORKDIR"
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
tar --numeric-owner --sort=name --mtime="@$epoch" -C "$root" -cf "$work/rootfs.tar" .

# --- the image ----------------------------------------------------------------
ctr=$(bah from scratch)
bah add "$ctr" "$work/rootfs.tar" / >/dev/null
config=(--user "$UID_GID:$UID_GID" --workingdir "$WORKDIR" --volume "$WORKDIR"
        --stop-signal SIGTERM --entrypoint "[\"$ENTRYPOINT\"]"
        --env "PATH=$PATH_ENV" --os linux --arch amd64
        --label "org.opencontainers.image.title=chat-kafka-bridge"
        --label "org.opencontainers.image.version=$VERSION"
        --label "org.opencontainers.image.description=Tencent Cloud Chat webhooks to Kafka (deploy/image/build.sh)")
for p in "${PORTS[@]}"; do config+=(--port "$p/tcp"); done
bah config "${config[@]}" "$ctr"
bah commit --quiet --format oci --timestamp "$epoch" "$ctr" "localhost/$IMAGE_NAME:$VERSION" >/dev/null
mkdir -p "$(dirname "$out")"
rm -f "$out"
bah push --quiet --format oci "localhost/$IMAGE_NAME:$VERSION" "oci-archive:$out:$IMAGE_NAME:$VERSION"

# --- what was built -------------------------------------------------------------
rootfs_bytes=$(stat -c %s "$work/rootfs.tar")
archive_bytes=$(stat -c %s "$out")
mb() { awk -v b="$1" 'BEGIN{printf "%.1f MB", b/1000000}'; }
t1=$(date +%s.%N)
echo "image: $IMAGE_NAME:$VERSION from scratch: $(basename "$bin") (stripped $(mb "$(stat -c %s "$root$ENTRYPOINT")")), sleep, $nlibs shared libraries, CA bundle, passwd/group"
echo "image: uncompressed $(mb "$rootfs_bytes") (one layer), OCI archive $(mb "$archive_bytes") at $out, built in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s"
echo "image: sha256 of the archive $(sha256sum "$out" | cut -c1-64)"
[ "$rootfs_bytes" -lt $((SIZE_LIMIT_MB * 1000000)) ] || die "the image is $(mb "$rootfs_bytes"), over the ${SIZE_LIMIT_MB} MB goal"
echo "ok   image under the ${SIZE_LIMIT_MB} MB goal"
