#!/usr/bin/env bash
# Builds (cold) or reuses (warm) the binaries the cluster test needs, all from
# the Go module proxy, and caches them outside the clone, keyed by version:
#
#   $CKB_CI_CACHE/kubernetes-v1.37.2/  kube-apiserver kubelet
#                                      kube-controller-manager kube-scheduler
#                                      pause (static, from build/pause/linux/pause.c)
#   $CKB_CI_CACHE/etcd-v3.6.16/        etcd
#   $CKB_CI_CACHE/helm-v3.22.0/        helm
#   $CKB_CI_CACHE/prometheus-operator-crds-v0.85.0/  *.yaml (the CRDs)
#
# CKB_CI_CACHE defaults to ~/.cache/chat-kafka-bridge-ci. Only the binaries are
# kept there; Go's module and build caches stay in their default places.
# A directory is complete only when its `.complete` marker exists, so an
# interrupted build is redone, never half-used.
#
# Usage: deploy/cluster/binaries.sh [--api-only | --helm-only]
#   --api-only  build only what the API-server step needs (etcd, helm,
#               kube-apiserver, the CRDs); the node binaries are built later.
#   --helm-only build only helm (.ci/chart's lint and template use this one,
#               so a cold machine builds helm once).
# Prints, per tool, whether it was cold (built) or warm (reused) and how long
# that took. Go builds run under `nice -n 19`.
set -euo pipefail

# shellcheck source=deploy/cluster/versions.sh
. "$(dirname "$0")/versions.sh"
CACHE=$CKB_CI_CACHE

api_only=0 helm_only=0
case "${1:-}" in
  --api-only) api_only=1 ;;
  --helm-only) helm_only=1 ;;
esac

export GOWORK=off GOFLAGS=-mod=mod GOTOOLCHAIN=local
command -v go >/dev/null || { echo "binaries.sh: needs Go (go.dev/dl or Debian's golang-go >= the Kubernetes module's go line)" >&2; exit 1; }

mkdir -p "$CACHE"
work=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

report() { printf 'binaries: %-34s %-4s %5ss  %s\n' "$1" "$2" "$3" "$4"; }

# Atomically publish $1 (a staged directory) as $2.
publish() { touch "$1/.complete"; rm -rf "$2"; mv "$1" "$2"; }

k8s_module_dir() {
  # The module as the proxy serves it, copied so it can be edited.
  local src
  src=$(cd "$work" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  [ -d "$src" ] || { echo "binaries.sh: go mod download k8s.io/kubernetes@$K8S_VERSION gave no directory" >&2; exit 1; }
  echo "$src"
}

prepare_k8s_src() {
  # Copies the module and points each ./staging/ replace at the published
  # staging module of the same minor (v0.37.2 for v1.37.2).
  [ -d "$work/kubernetes" ] && return 0
  local src staging_v
  src=$(k8s_module_dir)
  cp -r "$src" "$work/kubernetes"
  chmod -R u+w "$work/kubernetes"
  rm -rf "$work/kubernetes/vendor" "$work/kubernetes/go.work" "$work/kubernetes/go.work.sum"
  staging_v="v0.${K8S_VERSION#v1.}"
  (cd "$work/kubernetes"
   # Staging modules the main module requires get the published version;
   # the others (sample-cli-plugin, ...) are not published: only drop those.
   go mod edit -json | python3 -c '
import json, sys
d = json.load(sys.stdin)
required = {r["Path"] for r in d["Require"]}
for r in d.get("Replace") or []:
    if r["New"]["Path"].startswith("./staging/"):
        print(r["Old"]["Path"], "require" if r["Old"]["Path"] in required else "drop")' \
   | while read -r m what; do
       if [ "$what" = require ]; then go mod edit -dropreplace="$m" -require="$m@$staging_v"
       else go mod edit -dropreplace="$m"; fi
     done)
}

k8s_ldflags() {
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local p=k8s.io/component-base/version
  echo "-s -w -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
}

build_k8s() {
  # $1: space-separated command names; $2: cache dir
  local cmds=$1 dir=$2 stage="$work/k8s-out" c pkgs=()
  prepare_k8s_src
  mkdir -p "$stage"
  # Keep what an earlier --api-only run already built.
  [ -d "$dir" ] && cp -a "$dir"/. "$stage"/ && rm -f "$stage/.complete"
  for c in $cmds; do pkgs+=("./cmd/$c"); done
  (cd "$work/kubernetes" && CGO_ENABLED=0 nice -n 19 go build -trimpath -ldflags "$(k8s_ldflags)" -o "$stage/" "${pkgs[@]}")
  if [ ! -x "$stage/pause" ]; then
    command -v gcc >/dev/null || { echo "binaries.sh: needs gcc to build the pause binary" >&2; exit 1; }
    nice -n 19 gcc -Os -static -o "$stage/pause" "$work/kubernetes/build/pause/linux/pause.c" -DVERSION="$K8S_VERSION"
    strip "$stage/pause"
  fi
  publish "$stage" "$dir"
}

# --- helm -----------------------------------------------------------------
dir="$CACHE/helm-$HELM_VERSION"; t0=$(date +%s)
if [ -f "$dir/.complete" ]; then state=warm; else
  state=cold
  mkdir -p "$work/helm"
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  hl="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    hl="$hl -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
  done
  GOBIN="$work/helm" CGO_ENABLED=0 nice -n 19 go install -trimpath -ldflags "$hl" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  publish "$work/helm" "$dir"
fi
report "helm $HELM_VERSION" "$state" $(( $(date +%s) - t0 )) "$("$dir/helm" version --short)"

[ "$helm_only" = 1 ] && exit 0

# --- etcd -----------------------------------------------------------------
dir="$CACHE/etcd-$ETCD_VERSION"; t0=$(date +%s)
if [ -f "$dir/.complete" ]; then state=warm; else
  state=cold
  mkdir -p "$work/etcd/out"
  (cd "$work/etcd" && go mod init ckb-etcd-build >/dev/null 2>&1 \
    && nice -n 19 go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null \
    && CGO_ENABLED=0 nice -n 19 go build -trimpath -ldflags "-s -w" -o out/etcd go.etcd.io/etcd/server/v3)
  publish "$work/etcd/out" "$dir"
fi
report "etcd $ETCD_VERSION" "$state" $(( $(date +%s) - t0 )) "$("$dir/etcd" --version | sed -n 1p)"

# --- prometheus-operator CRDs (YAML from the Go module) ----------------------
dir="$CACHE/prometheus-operator-crds-$PROM_OPERATOR_VERSION"; t0=$(date +%s)
if [ -f "$dir/.complete" ]; then state=warm; else
  state=cold
  src=$(cd "$work" && go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$work/crds"
  cp "$src"/example/prometheus-operator-crd/*.yaml "$work/crds/"
  chmod u+w "$work/crds"/*.yaml
  publish "$work/crds" "$dir"
fi
report "prometheus-operator CRDs $PROM_OPERATOR_VERSION" "$state" $(( $(date +%s) - t0 )) "$(ls "$dir" | wc -l) files"

# --- Kubernetes -------------------------------------------------------------
dir="$CACHE/kubernetes-$K8S_VERSION"; t0=$(date +%s)
if [ "$api_only" = 1 ]; then want="kube-apiserver"; else want="kube-apiserver kube-controller-manager kube-scheduler kubelet"; fi
missing=""
for c in $want pause; do [ -f "$dir/.complete" ] && [ -x "$dir/$c" ] || missing="$missing $c"; done
if [ -z "$missing" ]; then state=warm; else
  state=cold
  build_k8s "$want" "$dir"
fi
report "kubernetes $K8S_VERSION ($(echo $want | wc -w) + pause)" "$state" $(( $(date +%s) - t0 )) "$("$dir/kube-apiserver" --version)"
[ "$api_only" = 1 ] || "$dir/kubelet" --version >/dev/null
echo "binaries: cache $CACHE"
