# Versions of what deploy/cluster/binaries.sh builds from the Go module proxy
# and deploy/cluster/test.sh runs (helm also .ci/chart); sourced by all three.
# The cache directories are keyed by them.
K8S_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
HELM_VERSION=v3.22.0
PROM_OPERATOR_VERSION=v0.85.0
CKB_CI_CACHE=${CKB_CI_CACHE:-$HOME/.cache/chat-kafka-bridge-ci}
K8S_BIN=$CKB_CI_CACHE/kubernetes-$K8S_VERSION
ETCD_BIN=$CKB_CI_CACHE/etcd-$ETCD_VERSION
HELM_BIN=$CKB_CI_CACHE/helm-$HELM_VERSION
CRD_DIR=$CKB_CI_CACHE/prometheus-operator-crds-$PROM_OPERATOR_VERSION
