#!/usr/bin/env bash
# The chart on a real Kubernetes, the bridge in real pods, the alerts in a
# real Prometheus (issue 14, steps 2-4):
#
#   deploy/cluster/test.sh IMAGE.tar [--api-only]
#
# IMAGE.tar is the OCI archive of deploy/image/build.sh. The Kubernetes, etcd
# and helm binaries come from deploy/cluster/binaries.sh (built once from the
# Go module proxy, cached by version outside the clone; it is run first).
#
#   api         etcd + kube-apiserver on 127.0.0.1, the prometheus-operator
#               CRDs installed server-side, `helm install` of every
#               helm/chat-kafka-bridge/ci/*-values.yaml, and values files the
#               chart renders but the API server must refuse.
#   node        one node: containerd + runc + kubelet + a private CNI bridge,
#               kube-controller-manager and kube-scheduler; a real Kafka broker
#               on the bridge's host address; the chart with the image
#               (pullPolicy Never); a signed callback to a pod IP read back
#               from Kafka; /metrics from the pod; `kubectl rollout restart`
#               under a trickle of callbacks with none lost and every old pod
#               drained on SIGTERM (exit 0 within terminationGracePeriodSeconds);
#               the StatefulSet on local PersistentVolumes made by the test.
#   prometheus  Debian's prometheus scraping the pods (and the kubelet's
#               cAdvisor), loaded with the PrometheusRule the API server
#               stores; Kafka stopped: the not-ready and delivery-failure
#               alerts fire, Kafka back: not-ready resolves and the spool is
#               replayed; every dashboard query against it.
#
# --api-only runs only the first step (for a machine whose node binaries are
# not built yet); it says so.
#
# The machine is left as it was: every process runs in cgroups the test made
# and is killed at the end (by deploy/cluster/watchdog.sh if this shell is
# SIGKILLed); containerd and the kubelet run in a private mount
# namespace (tmpfs over /run, /var/lib and /var/log, and the kernel tunables
# the kubelet would write bind-mounted over /proc/sys), so their mounts die
# with them; the test's bridge, cgroups and iptables chains are removed; and
# the end compares links, mounts, cgroups, iptables chains, sysctls and paths
# with what they were at the start, and fails on a difference. Everything
# listens on 127.0.0.1 or on the test's own bridge.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
# shellcheck source=deploy/cluster/versions.sh
. deploy/cluster/versions.sh

die() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok   $*"; }
IMAGE=${1:?usage: deploy/cluster/test.sh IMAGE.tar [--api-only]}
[ -f "$IMAGE" ] || die "no image archive at $IMAGE (deploy/image/build.sh OUT.tar)"
IMAGE=$(realpath "$IMAGE")
API_ONLY=0; [ "${2:-}" = "--api-only" ] && API_ONLY=1
[ "$(id -u)" = 0 ] || die "needs root (cgroups, mount namespaces, a bridge)"
for t in kubectl buildah containerd ctr runc java mvn kcat openssl python3 prometheus promtool nsenter unshare iptables-save nft ip curl; do
  command -v "$t" >/dev/null || die "needs $t (.ci/deploy installs the Debian packages)"
done
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] || die "needs containernetworking-plugins"

T_START=$(date +%s.%N)
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
STEP_TIMES=()
step() { STEP=$1; STEP_T0=$(date +%s.%N); shift; printf '\n=== cluster: %s: %s\n' "$STEP" "$*"; }
step_done() { local s; s=$(since "$STEP_T0"); STEP_TIMES+=("$STEP ${s}s"); printf '=== cluster: %s done in %s s\n' "$STEP" "$s"; }
# wait_for SECONDS WHAT CMD...: until CMD succeeds; dies after SECONDS.
wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline; deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "$what: not within ${secs}s"
    sleep 0.3
  done
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --- binaries -----------------------------------------------------------------
step binaries "deploy/cluster/binaries.sh (built once, then reused)"
if [ "$API_ONLY" = 1 ]; then deploy/cluster/binaries.sh --api-only; else deploy/cluster/binaries.sh; fi
step_done

W=$(mktemp -d /tmp/ckb-cluster.XXXXXX)
chmod 0755 "$W"
CG=ckb-cluster-$$
BR=ckb$$
BR=${BR:0:15}
export KUBECONFIG=$W/kubeconfig KUBECACHEDIR=$W/kube-cache
export HELM_CACHE_HOME=$W/helm/cache HELM_CONFIG_HOME=$W/helm/config HELM_DATA_HOME=$W/helm/data
KUBECTL=(kubectl --request-timeout=20s)
HELM=$HELM_BIN/helm
HOLDER=

# --- what the machine looks like now ---------------------------------------------
cgroup_mounts() { awk '$3=="cgroup" || $3=="cgroup2" {print $2}' /proc/self/mounts; }
snapshot() {
  local - d=$1; mkdir -p "$d"
  set +e +o pipefail
  ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | sort >"$d/links"
  awk '{print $5}' /proc/self/mountinfo | sort >"$d/mounts"
  for m in $(cgroup_mounts); do find "$m" -mindepth 1 -maxdepth 1 -type d; done | sort >"$d/cgroups"
  { iptables-save 2>/dev/null | sed 's/^/4 /'; ip6tables-save 2>/dev/null | sed 's/^/6 /'; } \
    | grep -E '^[46] [*:-]' | sed 's/ \[[0-9]*:[0-9]*\]$//' | sort >"$d/iptables"
  sysctl -a 2>/dev/null | grep -vE '^(fs\.(dentry|inode)-(state|nr)|fs\.inode-nr|fs\.file-nr|kernel\.ns_last_pid|kernel\.random\.(uuid|boot_id|entropy_avail)|kernel\.pty\.nr|net\.netfilter\.nf_conntrack_count|fs\.quota\.)' >"$d/sysctl" || true
  for p in /var/lib/cni /run/containerd /var/log/pods /var/log/containers /opt/containerd /etc/cni /var/lib/kubelet /run/netns /run/runc /etc/kubernetes; do
    [ -e "$p" ] && echo "$p"
  done >"$d/paths" || true
}
cg_pids() { [ -n "${CG_MADE:-}" ] && [ -n "${PIDS_CG:-}" ] || return 0; find "$PIDS_CG/$CG" "$PIDS_CG/$CG-ctl" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u; }
cleanup() {
  local rc=$? t0 p leftover=0
  t0=$(date +%s.%N)
  set +e
  trap - EXIT INT TERM
  printf '\n=== cluster: teardown\n'
  if [ "$rc" -ne 0 ] && [ -d "$W" ]; then
    for f in apiserver kubelet containerd kafka controller-manager scheduler prometheus; do
      [ -s "$W/$f.log" ] && { echo "--- last lines of $f.log"; tail -n 15 "$W/$f.log"; }
    done
  fi
  # Processes: TERM, then KILL, until the cgroups are empty.
  for sig in TERM TERM KILL KILL KILL; do
    p=$(cg_pids)
    [ -z "$p" ] && break
    # shellcheck disable=SC2086
    kill -"$sig" $p 2>/dev/null
    for _ in $(seq 1 30); do [ -z "$(cg_pids)" ] && break; sleep 0.1; done
  done
  [ -z "$(cg_pids)" ] || { echo "LEFT: processes $(cg_pids | tr '\n' ' ')"; leftover=1; }
  # Mounts of the test outside the namespace (none are made; checked below).
  for mp in $(awk -v w="$W" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r); do umount -l "$mp"; done
  # Cgroups, deepest first.
  [ -n "${CG_MADE:-}" ] && for m in $(cgroup_mounts); do
    for c in "$m/$CG" "$m/$CG-ctl"; do
      [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
    done
  done
  # Links: veths of pods die with their network namespaces; the bridge is ours.
  for _ in $(seq 1 50); do ip -o link show master "$BR" 2>/dev/null | grep -q . || break; sleep 0.1; done
  [ -n "${BR_MADE:-}" ] && for v in $(ip -o link show master "$BR" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do ip link del "$v"; done
  [ -n "${BR_MADE:-}" ] && ip link del "$BR"
  # iptables chains (and empty nf_tables tables) the kubelet made.
  [ -f "$W/before/iptables" ] && "$ROOT/deploy/cluster/iptables-undo.sh" "$W/before/iptables"
  # What is different from the start?
  if [ -d "$W/before" ]; then
    snapshot "$W/after"
    for f in links mounts cgroups iptables sysctl paths; do
      if ! diff "$W/before/$f" "$W/after/$f" >"$W/diff.$f"; then
        echo "LEFT ($f differs from the start):"; sed 's/^/    /' "$W/diff.$f" | head -20; leftover=1
      fi
    done
    [ "$leftover" = 0 ] && echo "ok   machine as found: no processes, links, mounts, cgroups, iptables chains, sysctl changes or paths left ($(wc -l <"$W/before/sysctl") sysctls compared)"
  fi
  rm -rf "$W"
  printf '=== cluster: teardown done in %s s\n' "$(since "$t0")"
  if [ "$rc" -eq 0 ] && [ "$leftover" -ne 0 ]; then rc=1; fi
  if [ "$rc" -eq 0 ]; then
    printf '\n=== cluster: passed in %s s:' "$(since "$T_START")"; printf ' %s;' "${STEP_TIMES[@]}"; echo
  else
    echo "=== cluster: FAILED (exit $rc)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
PIDS_CG=$(cgroup_mounts | grep -m1 '/pids$' || true)
[ -n "$PIDS_CG" ] || die "no pids cgroup hierarchy"
snapshot "$W/before"
for m in $(cgroup_mounts); do [ ! -e "$m/$CG" ] || die "$m/$CG exists already"; done

# Every process the test starts goes into $CG-ctl (all cgroup hierarchies), the
# pods into $CG (the kubelet's cgroupRoot): teardown kills what is in them.
CG_MADE=1
for m in $(cgroup_mounts); do
  mkdir "$m/$CG" "$m/$CG-ctl"
  if [ -f "$m/cpuset.cpus" ]; then
    for c in "$CG" "$CG-ctl"; do cat "$m/cpuset.cpus" >"$m/$c/cpuset.cpus"; cat "$m/cpuset.mems" >"$m/$c/cpuset.mems"; done
  fi
done
# spawn LOG CMD...: CMD in the background, in the control cgroups; sets SPAWNED.
spawn() {
  local log=$1; shift
  (
    for m in $(cgroup_mounts); do echo "$BASHPID" >"$m/$CG-ctl/cgroup.procs" 2>/dev/null || true; done
    exec "$@"
  ) </dev/null >>"$log" 2>&1 &
  SPAWNED=$!
}
# If this shell dies without its trap (SIGKILL), a watchdog still ends
# what it started (deploy/cluster/watchdog.sh).
spawn /proc/self/fd/2 deploy/cluster/watchdog.sh "$$" "$CG" "$BR" "$W"


# --- the network: a private /24 on a bridge of our own ---------------------------------
SUBNET=$(python3 - <<'EOF'
import ipaddress, subprocess
used = []
for line in subprocess.run(["ip", "-4", "-o", "route", "show", "table", "all"], capture_output=True, text=True).stdout.splitlines():
    dst = line.split()[0] if not line.split()[0] in ("local", "broadcast", "unicast") else line.split()[1]
    if dst != "default":
        try: used.append(ipaddress.ip_network(dst, strict=False))
        except ValueError: pass
for third in range(200, 256):
    net = ipaddress.ip_network(f"10.213.{third}.0/24")
    if not any(net.overlaps(u) for u in used):
        print(net); break
EOF
)
[ -n "$SUBNET" ] || die "no free /24 in 10.213.200.0-10.213.255.0"
PREFIX=${SUBNET%.0/24}
NODE_IP=$PREFIX.1
! ip link show "$BR" >/dev/null 2>&1 || die "a link named $BR exists already"
ip link add "$BR" type bridge
ip addr add "$NODE_IP/24" dev "$BR"
ip link set "$BR" up
BR_MADE=1
echo "network: bridge $BR, $SUBNET, host side $NODE_IP (no gateway, no NAT, no forwarding)"

# --- step 2: the API server ----------------------------------------------------------
step api "etcd + kube-apiserver, CRDs, helm install of every ci/*-values.yaml, values the server refuses"
mkdir -p "$W/pki" "$W/etcd"
(
  cd "$W/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 -subj /CN=ckb-test-ca 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,IP:%s,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' "$NODE_IP" >ext.cnf
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 1 -extfile ext.cnf 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)
TOKEN=$(openssl rand -hex 24)
echo "$TOKEN,ckb-admin,ckb-admin,system:masters" >"$W/pki/tokens.csv"
ETCD_PORT=$(free_port); ETCD_PEER=$(free_port); API_PORT=$(free_port)
cat >"$KUBECONFIG" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: ckb, cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: "$W/pki/ca.crt"}}]
users: [{name: ckb-admin, user: {token: "$TOKEN"}}]
contexts: [{name: ckb, context: {cluster: ckb, user: ckb-admin}}]
current-context: ckb
EOF
t0=$(date +%s.%N)
spawn "$W/etcd.log" "$ETCD_BIN/etcd" --name ckb --data-dir "$W/etcd" --unsafe-no-fsync \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-cluster "ckb=http://127.0.0.1:$ETCD_PEER" --log-level warn
spawn "$W/apiserver.log" "$K8S_BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --secure-port "$API_PORT" --advertise-address "$NODE_IP" \
  --tls-cert-file "$W/pki/apiserver.crt" --tls-private-key-file "$W/pki/apiserver.key" \
  --token-auth-file "$W/pki/tokens.csv" --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$W/pki/sa.pub" \
  --service-account-signing-key-file "$W/pki/sa.key" --service-cluster-ip-range 10.213.0.0/24 \
  --endpoint-reconciler-type none --kubelet-preferred-address-types InternalIP --profiling=false
wait_for 90 "kube-apiserver /readyz" "${KUBECTL[@]}" get --raw /readyz
server_version=$("${KUBECTL[@]}" version -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')
[ "$server_version" = "$K8S_VERSION" ] || die "API server reports $server_version, want $K8S_VERSION"
ok "etcd $ETCD_VERSION and kube-apiserver $server_version ready after $(since "$t0") s (127.0.0.1:$API_PORT, token in system:masters, RBAC)"

"${KUBECTL[@]}" apply --server-side -f "$CRD_DIR" >/dev/null
for crd in servicemonitors podmonitors prometheusrules; do
  wait_for 60 "CRD $crd established" sh -c "${KUBECTL[*]} get crd $crd.monitoring.coreos.com -o jsonpath='{.status.conditions[?(@.type==\"Established\")].status}' | grep -qx True"
done
ok "prometheus-operator $PROM_OPERATOR_VERSION CRDs installed server-side: $(ls "$CRD_DIR"/*.yaml | wc -l) CRDs, ServiceMonitor/PodMonitor/PrometheusRule established"

CHART=$ROOT/helm/chat-kafka-bridge
"${KUBECTL[@]}" create namespace monitoring >/dev/null   # all-values.yaml puts its dashboard there
RELEASES=()
for f in "$CHART"/ci/*-values.yaml; do
  c=$(basename "$f" -values.yaml)
  t1=$(date +%s.%N)
  RELEASES+=("ci-$c")
  "$HELM" install "ci-$c" "$CHART" -f "$f" -n "ci-$c" --create-namespace --timeout 60s >"$W/helm-$c.txt" 2>&1 \
    || { cat "$W/helm-$c.txt"; die "helm install of ci/$c-values.yaml"; }
  "$HELM" get manifest "ci-$c" -n "ci-$c" >"$W/manifest-$c.yaml"
  want=$(grep -c '^kind:' "$W/manifest-$c.yaml")
  have=0
  while read -r ns refs; do
    # shellcheck disable=SC2086
    have=$(( have + $("${KUBECTL[@]}" -n "$ns" get $refs -o name | wc -l) ))
  done < <(python3 deploy/cluster/manifest_refs.py "$W/manifest-$c.yaml" "ci-$c")
  kinds=$(grep '^kind:' "$W/manifest-$c.yaml" | awk '{print $2}' | sort -u | paste -sd' ')
  [ "$have" = "$want" ] || die "ci/$c: the API server has $have of the release's $want objects"
  ok "helm install ci/$c-values.yaml in $(since "$t1") s: $have objects stored by the API server ($kinds)"
done

# Values the chart's schema and templates let through and the API server refuses.
for f in deploy/cluster/refused-*-values.yaml; do
  c=$(basename "$f" -values.yaml)
  want=$(sed -n 's/^# Refused with: //p' "$f")
  [ -n "$want" ] || die "$f lacks a '# Refused with:' line"
  "$HELM" template "$c" "$CHART" -f "$f" >/dev/null 2>"$W/template-$c.txt" \
    || { cat "$W/template-$c.txt"; die "$f: helm template refuses it; it is meant to reach the server"; }
  RELEASES+=("$c")
  if "$HELM" install "$c" "$CHART" -f "$f" -n "$c" --create-namespace --timeout 60s >"$W/helm-$c.txt" 2>&1; then
    die "$f: the API server accepted it"
  fi
  grep -qF "is invalid" "$W/helm-$c.txt" && grep -qF -- "$want" "$W/helm-$c.txt" \
    || { cat "$W/helm-$c.txt"; die "$f: refused, but not by the API server's validation with '$want'"; }
  ok "$(basename "$f"): helm template renders it, the API server refuses it: $(grep -o '[A-Za-z.]* "[^"]*" is invalid: [^;]*' "$W/helm-$c.txt" | head -1 | cut -c1-160)"
done
# None of these may reach the node: their images are in registries that are not there.
for r in "${RELEASES[@]}"; do "$HELM" uninstall "$r" -n "$r" >/dev/null; done
[ -z "$("$HELM" list -A -q)" ] || die "releases left: $("$HELM" list -A -q)"
left=$("${KUBECTL[@]}" get deployments,statefulsets,replicasets -A -o name | wc -l)
[ "$left" = 0 ] || die "$left workloads left after helm uninstall"
ok "the ${#RELEASES[@]} releases uninstalled: no workload left for the node"
step_done

if [ "$API_ONLY" = 1 ]; then
  echo
  echo "=== cluster: NOT RUN: the node and prometheus steps (--api-only: the node binaries are not built yet)"
  exit 0
fi

# --- step 3: one node ------------------------------------------------------------
step node "containerd, kubelet, a Kafka broker, the chart in real pods"
# The private mount namespace of containerd and the kubelet.
spawn "$W/holder.log" unshare --mount --propagation private sleep 3600
HOLDER=$SPAWNED
own_mount_ns() { [ "$(readlink "/proc/$HOLDER/ns/mnt")" != "$(readlink /proc/$$/ns/mnt)" ]; }
wait_for 5 "the holder's own mount namespace" own_mount_ns
in_ns() { nsenter -t "$HOLDER" -m -- "$@"; }
mkdir -p "$W/sysctl"
# The kubelet's kernel tunables (pkg/kubelet/cm setupKernelTunables): it only
# writes those that differ; here they read as what it wants and writes would
# land in these files.
for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
          kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
  k=${kv%=*}; v=${kv#*=}
  echo "$v" >"$W/sysctl/${k//\//.}"
  in_ns mount --bind "$W/sysctl/${k//\//.}" "/proc/sys/$k"
done
in_ns mount -t tmpfs -o mode=0755 ckb-run /run
in_ns mount -t tmpfs -o mode=0755 ckb-varlib /var/lib
in_ns mount -t tmpfs -o mode=0755 ckb-varlog /var/log
# The kubelet's cAdvisor finds containerd at its default socket: the private /run.
in_ns mkdir -p /run/containerd
in_ns ln -s "$W/containerd/containerd.sock" /run/containerd/containerd.sock
[ "$(in_ns cat /proc/sys/kernel/panic)" = 10 ] && [ "$(cat /proc/sys/kernel/panic)" != 10 ] \
  || die "the kernel tunables are not shadowed in the namespace"
ok "private mount namespace (holder pid $HOLDER): tmpfs on /run, /var/lib, /var/log; 6 kernel tunables shadowed"

mkdir -p "$W/containerd" "$W/cni/net.d" "$W/cni/ipam" "$W/kubelet" "$W/pod-logs"
cat >"$W/containerd/config.toml" <<EOF
version = 2
root = "$W/containerd/root"
state = "$W/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$W/containerd/containerd.sock"
[ttrpc]
  address = "$W/containerd/containerd.sock.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "$W/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:ckb-test"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  # Nothing is pulled: every registry is a closed loopback port.
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    endpoint = ["http://127.0.0.1:1"]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."registry.k8s.io"]
    endpoint = ["http://127.0.0.1:1"]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."*"]
    endpoint = ["http://127.0.0.1:1"]
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$W/cni/net.d"
    max_conf_num = 1
EOF
cat >"$W/cni/net.d/10-ckb.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "ckb", "plugins": [{"type": "bridge", "bridge": "$BR",
  "isGateway": false, "ipMasq": false, "hairpinMode": false,
  "ipam": {"type": "host-local", "dataDir": "$W/cni/ipam",
           "ranges": [[{"subnet": "$SUBNET", "rangeStart": "$PREFIX.10", "rangeEnd": "$PREFIX.250"}]]}}]}
EOF
t0=$(date +%s.%N)
spawn "$W/containerd.log" nsenter -t "$HOLDER" -m -- containerd --config "$W/containerd/config.toml"
CTR=(ctr --address "$W/containerd/containerd.sock" -n k8s.io)
wait_for 30 "containerd" "${CTR[@]}" version
ok "containerd $(containerd --version | awk '{print $3}') ready after $(since "$t0") s (runc, overlayfs, CNI bridge $BR)"

# The pause image, from the Kubernetes module's pause.c (built by binaries.sh).
mkdir -p "$W/buildah"
bah() { buildah --root "$W/buildah/storage" --runroot "$W/buildah/run" --storage-driver vfs "$@"; }
pc=$(bah from scratch)
bah copy "$pc" "$K8S_BIN/pause" /pause >/dev/null
bah config --entrypoint '["/pause"]' --user 65535:65535 "$pc"
bah commit --quiet --format oci "$pc" localhost/pause:ckb-test >/dev/null
bah push --quiet --format oci localhost/pause:ckb-test "oci-archive:$W/pause.tar:registry.k8s.io/pause:ckb-test"
bah rm "$pc" >/dev/null
"${CTR[@]}" images import --index-name registry.k8s.io/pause:ckb-test "$W/pause.tar" >/dev/null
IMAGE_TAG=$(tar -xOf "$IMAGE" index.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"])')
IMAGE_REF=docker.io/library/$IMAGE_TAG
"${CTR[@]}" images import --index-name "$IMAGE_REF" "$IMAGE" >/dev/null
grep -qxF "$IMAGE_REF" <<<"$("${CTR[@]}" images ls -q)" || die "$IMAGE_REF not in containerd after import: $("${CTR[@]}" images ls -q | tr '\n' ' ')"
ok "images imported into containerd: $IMAGE_REF (from $(basename "$IMAGE")), registry.k8s.io/pause:ckb-test (static pause)"

t0=$(date +%s.%N)
spawn "$W/controller-manager.log" "$K8S_BIN/kube-controller-manager" --kubeconfig "$KUBECONFIG" \
  --controllers '*,-node-ipam-controller' \
  --service-account-private-key-file "$W/pki/sa.key" --root-ca-file "$W/pki/ca.crt" \
  --use-service-account-credentials=false --leader-elect=false --bind-address 127.0.0.1 --secure-port "$(free_port)"
spawn "$W/scheduler.log" "$K8S_BIN/kube-scheduler" --kubeconfig "$KUBECONFIG" --leader-elect=false \
  --bind-address 127.0.0.1 --secure-port "$(free_port)"
cat >"$W/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupRoot: /$CG
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$W/containerd/containerd.sock
podLogsDir: $W/pod-logs
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 20
serializeImagePulls: false
EOF
spawn "$W/kubelet.log" nsenter -t "$HOLDER" -m -- "$K8S_BIN/kubelet" --config "$W/kubelet/config.yaml" \
  --kubeconfig "$KUBECONFIG" --root-dir "$W/kubelet" --cert-dir "$W/kubelet/pki" \
  --hostname-override ckb-node --node-ip "$NODE_IP" --v 1
wait_for 60 "node ckb-node Ready" sh -c "${KUBECTL[*]} get node ckb-node -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
ok "node ckb-node Ready after $(since "$t0") s (kubelet $("$K8S_BIN/kubelet" --version | awk '{print $2}'), cgroupfs under /$CG, InternalIP $NODE_IP)"

# A real Kafka broker on the bridge's host address (Maven's jars, as the
# integration tests do), with the bridge's three topics.
t0=$(date +%s.%N)
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' tests/kafka/pom.xml)
KAFKA_LIBS=$CKB_CI_CACHE/kafka-libs-$KAFKA_VERSION-$(sha256sum tests/kafka/pom.xml | cut -c1-12)
if [ ! -f "$KAFKA_LIBS/.complete" ]; then
  rm -rf "$KAFKA_LIBS.partial"
  mvn -q -B -f tests/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS.partial"
  touch "$KAFKA_LIBS.partial/.complete"; rm -rf "$KAFKA_LIBS"; mv "$KAFKA_LIBS.partial" "$KAFKA_LIBS"
fi
KAFKA_PORT=9092
KAFKA_CPORT=$(free_port)
KAFKA=$NODE_IP:$KAFKA_PORT
mkdir -p "$W/kafka/data"
cat >"$W/kafka/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CPORT
listeners=PLAINTEXT://$KAFKA,CONTROLLER://127.0.0.1:$KAFKA_CPORT
advertised.listeners=PLAINTEXT://$KAFKA
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$W/kafka/data
num.partitions=3
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
# Java's temporary files (lz4-java unpacks its native library there) in
# the test's directory, and no /tmp/hsperfdata_* files.
mkdir -p "$W/kafka/tmp"
JAVA_OPTS=(-Xmx512m -XX:+UseSerialGC -XX:-UsePerfData -Djava.awt.headless=true "-Djava.io.tmpdir=$W/kafka/tmp"
           "-Dlog4j2.configurationFile=$ROOT/tests/kafka/log4j2.properties")
java "${JAVA_OPTS[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format -t "$(java "${JAVA_OPTS[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid)" \
  -c "$W/kafka/server.properties" >"$W/kafka-format.log" 2>&1 || { cat "$W/kafka-format.log"; die "kafka storage format"; }
start_kafka() {
  spawn "$W/kafka.log" java "${JAVA_OPTS[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$W/kafka/server.properties"
  KAFKA_PID=$SPAWNED
  wait_for 60 "Kafka metadata on $KAFKA" kcat -b "$KAFKA" -L -m 2
}
start_kafka
for topic in official-account-events chat-callback-events official-account-events-dlq; do
  java "${JAVA_OPTS[@]}" -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$KAFKA" --create --topic "$topic" --partitions 3 --replication-factor 1 >"$W/topic.log" 2>&1 \
    || { cat "$W/topic.log"; die "creating topic $topic"; }
done
ok "Kafka $KAFKA_VERSION (KRaft) on $KAFKA after $(since "$t0") s, topics official-account-events, chat-callback-events, official-account-events-dlq (3 partitions)"

# The chart, with the image from step 1.
APP_TOKEN=cluster-test-token
NS=chat
t0=$(date +%s.%N)
"$HELM" install bridge "$CHART" -n "$NS" --create-namespace --wait --timeout 120s \
  -f deploy/cluster/node-values.yaml \
  --set "image.tag=${IMAGE_TAG#*:}" --set "kafka.brokers=$KAFKA" \
  --set-string "secret.tokens.1400000001=$APP_TOKEN" >"$W/helm-bridge.txt" 2>&1 \
  || { cat "$W/helm-bridge.txt"; "${KUBECTL[@]}" -n "$NS" get pods -o wide; "${KUBECTL[@]}" -n "$NS" describe pods | tail -40; die "helm install --wait of the bridge"; }
SEL=app.kubernetes.io/instance=bridge
pods_json() { "${KUBECTL[@]}" -n "$NS" get pods -l "$SEL" -o json; }
ready_ips() { "${KUBECTL[@]}" -n "$NS" get endpointslices -l kubernetes.io/service-name=bridge-chat-kafka-bridge \
  -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{"\n"}{end}'; }
read -r n_ready image_id < <(pods_json | python3 -c '
import json,sys
pods=[p for p in json.load(sys.stdin)["items"] if p["status"].get("phase")=="Running" and all(c["ready"] for c in p["status"].get("containerStatuses",[]))]
print(len(pods), pods[0]["status"]["containerStatuses"][0]["imageID"] if pods else "-")')
[ "$n_ready" = 2 ] || die "$n_ready of 2 pods Running and Ready"
ok "helm install --wait: 2 of 2 pods Running and Ready after $(since "$t0") s, image $IMAGE_REF ($image_id), pullPolicy Never"
POD_IPS=$(ready_ips | sort)
[ "$(echo "$POD_IPS" | wc -l)" = 2 ] || die "the Service's EndpointSlice has $(echo "$POD_IPS" | wc -l) ready addresses: $POD_IPS"
POD_IP=$(echo "$POD_IPS" | head -1)
ok "EndpointSlice of the Service: ready $(echo $POD_IPS)"

# A signed callback to a pod IP, read back from Kafka.
marker=ckb-cluster-$(openssl rand -hex 6)
t=$(date +%s)
sign=$(printf '%s%s' "$APP_TOKEN" "$t" | sha256sum | cut -c1-64)
cmd=OfficialAccount.CallbackAfterOfficialAccountInfoChanged
body=$(python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); b["Name"]=sys.argv[2]; print(json.dumps(b))' "tests/fixtures/callbacks/$cmd.json" "$marker")
answer=$(curl -s --max-time 5 -H 'content-type: application/json' \
  "http://$POD_IP:8080/callback?SdkAppid=1400000001&CallbackCommand=$cmd&contenttype=json&RequestTime=$t&Sign=$sign" -d "$body")
[ "$answer" = '{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}' ] || die "callback to $POD_IP answered: $answer"
deadline=$(( $(date +%s) + 30 ))
until kcat -b "$KAFKA" -t official-account-events -C -e -q -f '%k %s\n' 2>/dev/null | grep -F "$marker" >"$W/event.txt"; do
  [ "$(date +%s)" -lt "$deadline" ] || die "the event of the callback did not reach Kafka within 30 s"
  sleep 0.5
done
ok "signed callback to pod $POD_IP:8080 answered OK; its event read back from Kafka topic official-account-events, key $(awk '{print $1}' "$W/event.txt")"
curl -s --max-time 5 "http://$POD_IP:9090/metrics" >"$W/pod-metrics.txt"
accepted=$(awk '/^chat_bridge_callbacks_total/{s+=$2} END{print s+0}' "$W/pod-metrics.txt")
grep -q '^chat_bridge_ready 1' "$W/pod-metrics.txt" && [ "$accepted" -ge 1 ] || die "/metrics of $POD_IP: ready or callbacks_total missing"
PROMTOOL=promtool
"$PROMTOOL" check metrics <"$W/pod-metrics.txt" >/dev/null 2>&1 || die "promtool check metrics on the pod's /metrics"
ok "/metrics scraped from pod $POD_IP:9090: chat_bridge_ready 1, chat_bridge_callbacks_total $accepted, $(grep -c '^# TYPE chat_bridge_' "$W/pod-metrics.txt") families pass promtool check metrics"
pod0=$(pods_json | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["metadata"]["name"])')
# To a file first: grep -q would end the pipe early, and pipefail report kubectl's SIGPIPE.
"${KUBECTL[@]}" -n "$NS" logs "$pod0" >"$W/logs-$pod0.txt" || die "kubectl logs $pod0 (API server -> kubelet)"
grep -q 'listening\.' "$W/logs-$pod0.txt" || { head -c 2000 "$W/logs-$pod0.txt"; die "kubectl logs $pod0 lacks the listening line"; }
ok "kubectl logs $pod0 through the API server and the kubelet"

# kubectl rollout restart under a trickle of callbacks.
t0=$(date +%s.%N)
OLD_PODS=$(pods_json | python3 -c 'import json,sys; print(" ".join(p["metadata"]["name"] for p in json.load(sys.stdin)["items"]))')
GRACE=$(pods_json | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["spec"]["terminationGracePeriodSeconds"])')
for p in $OLD_PODS; do spawn "$W/old-$p.log" "${KUBECTL[@]}" --request-timeout=0 -n "$NS" logs -f "$p"; done
spawn "$W/watch.json" "${KUBECTL[@]}" --request-timeout=0 -n "$NS" get pods -l "$SEL" -w -o json --output-watch-events
rm -f "$W/trickle.stop"
ENDPOINTS_CMD="kubectl --request-timeout=5s -n $NS get endpointslices -l kubernetes.io/service-name=bridge-chat-kafka-bridge -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{\"\\n\"}{end}'"
spawn "$W/trickle.log" python3 deploy/cluster/trickle.py send "$ENDPOINTS_CMD" \
  "$W/trickle.stop" "$W/trickle.json" --rate 20 --token "$APP_TOKEN"
TRICKLE=$SPAWNED
sleep 3
"${KUBECTL[@]}" -n "$NS" rollout restart deployment/bridge-chat-kafka-bridge >/dev/null
"${KUBECTL[@]}" -n "$NS" rollout status deployment/bridge-chat-kafka-bridge --timeout 180s >"$W/rollout.txt" 2>&1 \
  || { cat "$W/rollout.txt"; die "rollout restart did not complete within 180 s"; }
for p in $OLD_PODS; do wait_for 60 "old pod $p gone" sh -c "! ${KUBECTL[*]} -n $NS get pod $p"; done
rollout_s=$(since "$t0")
sleep 3
touch "$W/trickle.stop"
wait_for 15 "the trickle to stop" sh -c "! kill -0 $TRICKLE"
kcat -b "$KAFKA" -t chat-callback-events -C -e -q -f '%s\n' >"$W/kafka-general.txt"
python3 deploy/cluster/trickle.py verify "$W/trickle.json" "$W/kafka-general.txt"
failed=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["failed"]))' "$W/trickle.json")
[ "$failed" = 0 ] || die "$failed callbacks were not acknowledged during the rollout (maxUnavailable 0 and the preStop sleep should leave none)"
ok "rollout restart of 2 pods under 20 callbacks/s completed in $rollout_s s; every callback acknowledged and in Kafka"
# Every old pod drained on SIGTERM: its final-counts line, exit code 0, within the grace period.
for p in $OLD_PODS; do
  final=$(grep '"message":"Stopped. Final counts."' "$W/old-$p.log" || true)
  [ -n "$final" ] || { tail -5 "$W/old-$p.log"; die "old pod $p: no 'Stopped. Final counts.' line"; }
  python3 - "$W/watch.json" "$p" "$final" "$GRACE" <<'EOF' || die "old pod $p did not drain as it should"
import json, sys, datetime
watch, pod, final, grace = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
dec, text, i, objs = json.JSONDecoder(), open(watch).read(), 0, []
while i < len(text):
    while i < len(text) and text[i].isspace(): i += 1
    if i >= len(text): break
    o, i = dec.raw_decode(text, i); objs.append(o["object"])
mine = [o for o in objs if o["metadata"]["name"] == pod]
# deletionTimestamp is when the grace period ends: the deletion was
# asked for deletionGracePeriodSeconds before it.
deleting = next(o["metadata"] for o in mine if o["metadata"].get("deletionTimestamp"))
codes = [c["state"]["terminated"]["exitCode"] for o in mine for c in o["status"].get("containerStatuses", []) if "terminated" in c.get("state", {})]
t_del = datetime.datetime.fromisoformat(deleting["deletionTimestamp"].replace("Z", "+00:00")) \
    - datetime.timedelta(seconds=deleting["deletionGracePeriodSeconds"])
t_fin = datetime.datetime.fromisoformat(final["timestamp"].replace("Z", "+00:00"))
took = (t_fin - t_del).total_seconds()
assert codes and codes[-1] == 0, f"exit codes seen: {codes}"
assert 0 < took < grace, f"final counts {took:.1f} s after deletion, grace {grace} s"
print(f"ok   old pod {pod}: SIGTERM drained, 'Stopped. Final counts.' {took:.1f} s after deletion (preStop sleep included; grace {grace} s), exit code {codes[-1]}; accepted {final.get('accepted')}, delivered {final.get('delivered')}, spool_pending {final.get('spool_pending')}, discarded {final.get('discarded')}")
EOF
done

# The StatefulSet (spool-persistence values) on local PersistentVolumes the test makes.
t0=$(date +%s.%N)
NS_STS=chat-sts
"${KUBECTL[@]}" create namespace "$NS_STS" >/dev/null
"${KUBECTL[@]}" -n "$NS_STS" create secret generic chat-bridge-credentials --from-literal="token-1400000001=$APP_TOKEN" >/dev/null
for i in 0 1; do
  mkdir -p "$W/pv-$i"
  cat <<EOF | "${KUBECTL[@]}" apply -f - >/dev/null
apiVersion: v1
kind: PersistentVolume
metadata: {name: ckb-spool-$i}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: fast-ssd
  local: {path: "$W/pv-$i"}
  nodeAffinity:
    required:
      nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [ckb-node]}]}]
EOF
done
"$HELM" install sts "$CHART" -n "$NS_STS" --wait --timeout 120s -f "$CHART/ci/spool-persistence-values.yaml" \
  --set autoscaling.enabled=false --set replicaCount=2 --set image.pullPolicy=Never \
  --set "image.tag=${IMAGE_TAG#*:}" --set "kafka.brokers=$KAFKA" >"$W/helm-sts.txt" 2>&1 \
  || { cat "$W/helm-sts.txt"; "${KUBECTL[@]}" -n "$NS_STS" get pods,pvc -o wide; "${KUBECTL[@]}" -n "$NS_STS" describe pods | tail -30; die "helm install --wait of the StatefulSet"; }
bound=$("${KUBECTL[@]}" -n "$NS_STS" get pvc -o jsonpath='{range .items[*]}{.metadata.name}={.spec.volumeName} {end}')
sts_ip=$("${KUBECTL[@]}" -n "$NS_STS" get pod sts-chat-kafka-bridge-0 -o jsonpath='{.status.podIP}')
pv0=$("${KUBECTL[@]}" -n "$NS_STS" get pvc spool-sts-chat-kafka-bridge-0 -o jsonpath='{.spec.volumeName}')
t=$(date +%s); sign=$(printf '%s%s' "$APP_TOKEN" "$t" | sha256sum | cut -c1-64)
answer=$(curl -s --max-time 5 -H 'content-type: application/json' \
  "http://$sts_ip:8080/callback?SdkAppid=1400000001&CallbackCommand=$cmd&contenttype=json&RequestTime=$t&Sign=$sign" -d "$body")
[ "$answer" = '{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}' ] || die "spooled callback to $sts_ip answered: $answer"
pv_dir=$W/pv-${pv0#ckb-spool-}
spool_files=$(find "$pv_dir" -type f | wc -l)
[ "$spool_files" -ge 1 ] || die "no spool file on $pv_dir after a spooled callback"
uid0=$("${KUBECTL[@]}" -n "$NS_STS" get pod sts-chat-kafka-bridge-0 -o jsonpath='{.metadata.uid}')
"${KUBECTL[@]}" -n "$NS_STS" delete pod sts-chat-kafka-bridge-0 --wait=true --timeout 60s >/dev/null
replaced_ready() {
  [ "$("${KUBECTL[@]}" -n "$NS_STS" get pod sts-chat-kafka-bridge-0 -o jsonpath='{.metadata.uid} {.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" != "$uid0 True" ] \
    && "${KUBECTL[@]}" -n "$NS_STS" get pod sts-chat-kafka-bridge-0 -o jsonpath='{.metadata.uid} {.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -q ' True$'
}
wait_for 90 "sts-chat-kafka-bridge-0 replaced and Ready" replaced_ready
pv_again=$("${KUBECTL[@]}" -n "$NS_STS" get pvc spool-sts-chat-kafka-bridge-0 -o jsonpath='{.spec.volumeName}')
[ "$pv_again" = "$pv0" ] || die "the replaced pod's claim is on $pv_again, was $pv0"
ok "StatefulSet (ci/spool-persistence-values.yaml, 2 replicas, spooled mode) Ready on local PersistentVolumes in $(since "$t0") s: $bound; a spooled callback wrote $spool_files file(s) on $pv0; the deleted pod 0 came back Ready on the same volume"
"$HELM" uninstall sts -n "$NS_STS" --wait --timeout 60s >/dev/null
step_done

# --- step 4: Prometheus -----------------------------------------------------------
step prometheus "Debian's prometheus, the chart's alerts, the dashboard's queries"
t0=$(date +%s.%N)
"${KUBECTL[@]}" -n "$NS" get prometheusrule bridge-chat-kafka-bridge -o json >"$W/prometheusrule.json"
mkdir -p "$W/prometheus"
python3 deploy/cluster/promcheck.py rules "$W/prometheusrule.json" "$W/prometheus/rules.json"
python3 - "$W/prometheusrule.json" <<'EOF' || die "the stored PrometheusRule lacks the node-values.yaml alertFor windows"
import json, sys
rules = {r["alert"]: r.get("for") for g in json.load(open(sys.argv[1]))["spec"]["groups"] for r in g["rules"]}
assert rules["ChatKafkaBridgeNotReady"] == "20s", rules
print(f"ok   alertFor applied by the chart: ChatKafkaBridgeNotReady for {rules['ChatKafkaBridgeNotReady']} (rule file: 5m)")
EOF
"$PROMTOOL" check rules "$W/prometheus/rules.json" >/dev/null || die "promtool check rules on the stored PrometheusRule"
write_targets() {
  pods_json | python3 -c '
import json,sys
t=[{"targets":[p["status"]["podIP"]+":9090"],"labels":{"namespace":p["metadata"]["namespace"],"pod":p["metadata"]["name"]}} for p in json.load(sys.stdin)["items"] if p["status"].get("podIP") and not p["metadata"].get("deletionTimestamp")]
print(json.dumps(t))' >"$W/prometheus/targets.json.new"
  mv "$W/prometheus/targets.json.new" "$W/prometheus/targets.json"
}
write_targets
PROM_PORT=$(free_port)
cat >"$W/prometheus/prometheus.yml" <<EOF
global: {scrape_interval: 2s, evaluation_interval: 2s, scrape_timeout: 1s}
rule_files: ["$W/prometheus/rules.json"]
scrape_configs:
  # The job the chart's monitors name (app.kubernetes.io/name); the pods by
  # IP from the API server (no Service routing here), with the labels the
  # operator would add.
  - job_name: chat-kafka-bridge
    file_sd_configs: [{files: ["$W/prometheus/targets.json"], refresh_interval: 2s}]
  # CPU and memory panels: the kubelet's cAdvisor.
  - job_name: kubelet-cadvisor
    scheme: https
    metrics_path: /metrics/cadvisor
    tls_config: {insecure_skip_verify: true}
    static_configs: [{targets: ["$NODE_IP:10250"]}]
EOF
spawn "$W/prometheus.log" prometheus --config.file "$W/prometheus/prometheus.yml" --storage.tsdb.path "$W/prometheus/data" \
  --web.listen-address "127.0.0.1:$PROM_PORT" --log.level warn
PROM=http://127.0.0.1:$PROM_PORT
wait_for 30 "prometheus ready" curl -sf "$PROM/-/ready"
python3 deploy/cluster/promcheck.py targets "$PROM" chat-kafka-bridge 2
python3 deploy/cluster/promcheck.py targets "$PROM" kubelet-cadvisor 1
ok "$(prometheus --version 2>&1 | head -1) on 127.0.0.1:$PROM_PORT ready after $(since "$t0") s, $(python3 -c 'import json,sys; print(sum(len(g["rules"]) for g in json.load(open(sys.argv[1]))["groups"]))' "$W/prometheus/rules.json") rules loaded"
for a in ChatKafkaBridgeNotReady ChatKafkaBridgeDeliveryFailures ChatKafkaBridgeDown ChatKafkaBridgeEventsDiscarded; do
  [ "$(python3 -c "import sys; sys.path.insert(0, 'deploy/cluster'); import promcheck; print(promcheck.alert_state('$PROM', '$a'))")" = inactive ] \
    || die "$a is not inactive while Kafka is up"
done
ok "ChatKafkaBridgeNotReady, ChatKafkaBridgeDeliveryFailures, ChatKafkaBridgeDown, ChatKafkaBridgeEventsDiscarded inactive while Kafka is up"

# Traffic of every kind for the dashboard: accepted, rejected, dead-lettered.
POD_IPS_NOW=$(ready_ips)
for ip in $POD_IPS_NOW; do
  t=$(date +%s); sign=$(printf '%s%s' "$APP_TOKEN" "$t" | sha256sum | cut -c1-64)
  q="SdkAppid=1400000001&CallbackCommand=$cmd&contenttype=json&RequestTime=$t"
  curl -s -o /dev/null --max-time 5 -H 'content-type: application/json' "http://$ip:8080/callback?$q&Sign=$sign" -d "$body"
  curl -s -o /dev/null --max-time 5 -H 'content-type: application/json' "http://$ip:8080/callback?$q&Sign=$(printf '0%.0s' {1..64})" -d "$body"
  curl -s -o /dev/null --max-time 5 -H 'content-type: application/json' "http://$ip:8080/callback?$q&Sign=$sign" -d '[1]'
done

# Kafka down: the not-ready alert fires (for: 20s), deliveries fail (message.timeout.ms 5000) and spool.
outage=$(date +%s.%N)
kill -TERM "$KAFKA_PID"
wait_for 30 "Kafka to stop" sh -c "! kill -0 $KAFKA_PID"
OUTAGE_MARKERS=()
for i in $(seq 1 10); do
  ip=$(echo "$POD_IPS_NOW" | sed -n "$(( i % 2 + 1 ))p")
  m=ckb-outage-$(openssl rand -hex 4)-$i
  b=$(python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); b["Name"]=sys.argv[2]; print(json.dumps(b))' "tests/fixtures/callbacks/$cmd.json" "$m")
  t=$(date +%s); sign=$(printf '%s%s' "$APP_TOKEN" "$t" | sha256sum | cut -c1-64)
  a=$(curl -s --max-time 5 -H 'content-type: application/json' "http://$ip:8080/callback?SdkAppid=1400000001&CallbackCommand=$cmd&contenttype=json&RequestTime=$t&Sign=$sign" -d "$b")
  [ "$a" = '{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}' ] && OUTAGE_MARKERS+=("$m")
  sleep 0.2
done
echo "sent 10 callbacks during the outage, ${#OUTAGE_MARKERS[@]} acknowledged (enqueued mode: answered OK, spooled when delivery fails)"
python3 deploy/cluster/promcheck.py alerts "$PROM" "$outage" 120 ChatKafkaBridgeNotReady=firing:20 ChatKafkaBridgeDeliveryFailures=firing \
  | sed 's/^/ok   Kafka stopped: /'
echo "     (NotReady: for: 20s, never sooner, plus the bridge's metadata probe and 2 s scrape/evaluation; DeliveryFailures: no for:, deliveries fail after message.timeout.ms 5000)"
outage_s=$(since "$outage")
back=$(date +%s.%N)
start_kafka
echo "Kafka restarted after a ${outage_s} s outage"
python3 deploy/cluster/promcheck.py alerts "$PROM" "$back" 120 ChatKafkaBridgeNotReady=inactive \
  | sed 's/^/ok   Kafka back (broker start included): /'
echo "     (ChatKafkaBridgeDeliveryFailures stays firing for its 10 min window by design: it reports that deliveries failed, not that they still do)"
deadline=$(( $(date +%s) + 90 ))
while :; do
  kcat -b "$KAFKA" -t official-account-events -C -e -q -f '%s\n' >"$W/kafka-oa.txt" 2>/dev/null || true
  missing=0; for m in "${OUTAGE_MARKERS[@]}"; do grep -qF "\"$m\"" "$W/kafka-oa.txt" || missing=$((missing + 1)); done
  [ "$missing" = 0 ] && break
  [ "$(date +%s)" -lt "$deadline" ] || die "$missing of the ${#OUTAGE_MARKERS[@]} callbacks acknowledged during the outage are not in Kafka 90 s after it returned"
  sleep 1
done
[ "${#OUTAGE_MARKERS[@]}" -ge 1 ] || die "no callback was acknowledged during the outage"
ok "all ${#OUTAGE_MARKERS[@]} callbacks acknowledged during the outage are in Kafka $(since "$back") s after it returned (replayed from the spool)"
[ "$(python3 -c "import sys; sys.path.insert(0, 'deploy/cluster'); import promcheck; print(promcheck.alert_state('$PROM', 'ChatKafkaBridgeEventsDiscarded'))")" = inactive ] \
  || die "ChatKafkaBridgeEventsDiscarded is not inactive after the outage: an acknowledged event was dropped"
ok "ChatKafkaBridgeEventsDiscarded inactive after the outage: nothing acknowledged was dropped"
sleep 5
python3 deploy/cluster/promcheck.py dashboard "$PROM" "$CHART/files/dashboards/chat-kafka-bridge.json" "$NS"
step_done
