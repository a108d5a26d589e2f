#!/usr/bin/env bash
# Runs the image built by deploy/image/build.sh under runc and checks it:
#
#   deploy/image/run-test.sh OUT.tar
#
# 1. the archive and deploy/Dockerfile describe the same image
#    (deploy/image/compare-dockerfile.py);
# 2. unpacked with umoci, run by runc with a read-only root filesystem (as the
#    chart runs it) in its own network namespace, with no settings but
#    BRIDGE_ACK_MODE=spooled: the embedded broker and demo app;
# 3. /readyz answers 200 (time printed), the process runs as 10001:10001, a
#    signed callback is answered OK in spooled mode (it was fsync'd to the
#    spool, in the volume the bridge owns), the spool directory is there and
#    the bridge's;
# 4. SIGTERM (the image's stop signal) drains: exit status 0 within 25 s and
#    the "Stopped. Final counts." line with the callback counted.
# The container's network is its own namespace with only loopback: the probes
# enter it with nsenter. runc's state and the container's cgroup are removed
# on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

archive=${1:?usage: deploy/image/run-test.sh OUT.tar}
die() { echo "FAIL: $*" >&2; [ -f "${log:-}" ] && { echo "--- container log" >&2; tail -n 30 "$log" >&2; }; exit 1; }
for t in runc umoci nsenter curl python3 sha256sum; do command -v "$t" >/dev/null || die "needs $t (Debian: runc, umoci, util-linux, curl)"; done
[ -f "$archive" ] || die "no archive at $archive"

started=$(date +%s)
echo "--- image: deploy/Dockerfile and $archive"
python3 deploy/image/compare-dockerfile.py "$archive" deploy/Dockerfile

work=$(mktemp -d)
id=ckb-image-test-$$
runc_root=$work/runc-state
runc_pid=
log=$work/container.log
cleanup() {
  if [ -n "$runc_pid" ]; then
    runc --root "$runc_root" kill "$id" KILL >/dev/null 2>&1 || true
    wait "$runc_pid" 2>/dev/null || true
  fi
  runc --root "$runc_root" delete --force "$id" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "--- image: unpack (umoci) and run (runc)"
mkdir -p "$work/oci"
tar -xf "$archive" -C "$work/oci"
tag=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"])' "$work/oci/index.json")
umoci unpack --image "$work/oci:$tag" "$work/bundle" >/dev/null
# The bundle as the chart runs the pod: read-only root, no terminal, its own
# cgroup (removed with the container). umoci makes the image's VOLUME a
# root-owned tmpfs; a container engine gives the volume the image
# directory's owner and mode (docker does, containerd's CRI copies it up), so
# does this.
python3 - "$work/bundle/config.json" "$id" <<'EOF'
import json, sys
path, cid = sys.argv[1], sys.argv[2]
c = json.load(open(path))
c["root"]["readonly"] = True
c["process"]["terminal"] = False
c["process"]["env"].append("BRIDGE_ACK_MODE=spooled")
c["process"]["env"].append("BRIDGE_LOG_FORMAT=json")
c["linux"]["cgroupsPath"] = "/" + cid
vols = [m for m in c["mounts"] if m["destination"] == "/var/lib/chat-kafka-bridge"]
assert len(vols) == 1, f"umoci made {len(vols)} mounts for the image's VOLUME"
vols[0]["options"] = [o for o in vols[0]["options"] if not o.startswith("mode=")] + ["uid=10001", "gid=10001", "mode=0750"]
json.dump(c, open(path, "w"), indent=1)
EOF
t0=$(date +%s.%N)
runc --root "$runc_root" run --bundle "$work/bundle" "$id" </dev/null >"$log" 2>&1 &
runc_pid=$!
pid=
deadline=$(( $(date +%s) + 30 ))
ready=
while [ "$(date +%s)" -lt "$deadline" ]; do
  kill -0 "$runc_pid" 2>/dev/null || die "the container exited at start"
  [ -n "$pid" ] || pid=$(runc --root "$runc_root" state "$id" 2>/dev/null | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["pid"] if s["status"]=="running" else "")' 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(nsenter -t "$pid" -n curl -s -o /dev/null -w '%{http_code}' --max-time 2 http://127.0.0.1:9090/readyz || true)" = 200 ]; then
    ready=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}'); break
  fi
  sleep 0.1
done
[ -n "$ready" ] || die "/readyz did not answer 200 within 30 s of runc run"
echo "ok   /readyz 200 after ${ready} s (from runc run)"
in_ns() { nsenter -t "$pid" -n "$@"; }

# Every process of the container runs as the image's user.
read -r _ ruid euid _ _ < <(grep '^Uid:' "/proc/$pid/status")
read -r _ rgid egid _ _ < <(grep '^Gid:' "/proc/$pid/status")
[ "$ruid:$euid:$rgid:$egid" = "10001:10001:10001:10001" ] || die "runs as uid $ruid/$euid gid $rgid/$egid, not 10001"
[ "$(readlink "/proc/$pid/exe" | sed 's/ (deleted)//')" = /usr/local/bin/chat-kafka-bridge ] || die "pid $pid is $(readlink "/proc/$pid/exe")"
echo "ok   the bridge (pid $pid on the host) runs as uid 10001, gid 10001"
grep -q '"message":"chat-kafka-bridge [^"]* listening\."' "$log" || die "no listening line"
grep -q '"ack_mode":"spooled"' "$log" || die "not in spooled mode"

# Spooled mode answers OK only once the event is fsync'd to the spool: the
# volume is writable by the bridge. The root filesystem is not.
cmd=OfficialAccount.CallbackAfterOfficialAccountInfoChanged
t=$(date +%s)
sign=$(printf 'demo-token%s' "$t" | sha256sum | cut -c1-64)
answer=$(in_ns curl -s --max-time 5 -H 'content-type: application/json' \
  "http://127.0.0.1:8080/callback?SdkAppid=1400000001&CallbackCommand=$cmd&RequestTime=$t&Sign=$sign" \
  --data-binary "@tests/fixtures/callbacks/$cmd.json")
[ "$answer" = '{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}' ] || die "signed callback answered $answer"
spool=/proc/$pid/root/var/lib/chat-kafka-bridge/spool
[ -d "$spool" ] || die "no spool directory in the working directory"
[ "$(stat -c %u:%g "$spool")" = 10001:10001 ] || die "spool owned by $(stat -c %u:%g "$spool")"
appended=$(in_ns curl -s --max-time 5 http://127.0.0.1:9090/metrics | awk '/^chat_bridge_spool_appends_total/{s+=$2} END{print s+0}')
[ "$appended" -ge 1 ] || die "chat_bridge_spool_appends_total is $appended after a spooled callback"
echo "ok   signed callback answered OK in spooled mode: $appended spool append(s) in /var/lib/chat-kafka-bridge/spool (owned 10001:10001)"
mount_opts=$(awk '$2=="/"{print $4}' "/proc/$pid/mounts" | sed -n 1p)
case ",$mount_opts," in *,ro,*) echo "ok   root filesystem mounted read-only ($mount_opts)" ;; *) die "root filesystem is $mount_opts" ;; esac

# SIGTERM: the image's STOPSIGNAL; drained and exit 0 well inside the chart's 30 s grace.
t0=$(date +%s.%N)
runc --root "$runc_root" kill "$id" TERM
status=0
deadline=$(( $(date +%s) + 25 ))
while kill -0 "$runc_pid" 2>/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || die "still running 25 s after SIGTERM"
  sleep 0.1
done
wait "$runc_pid" || status=$?
runc_pid=
took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
[ "$status" -eq 0 ] || die "exit status $status after SIGTERM"
final=$(grep '"message":"Stopped. Final counts."' "$log" || true)
[ -n "$final" ] || die "no 'Stopped. Final counts.' line"
echo "$final" | grep -q '"accepted":1' || die "final counts do not count the callback: $final"
echo "ok   SIGTERM: drained, exit status 0 after ${took} s; final counts: $(echo "$final" | grep -o '"accepted":[0-9]*,.*"discarded":[0-9]*')"
echo "--- image: run test passed in $(( $(date +%s) - started )) s"
