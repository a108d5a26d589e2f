#!/usr/bin/env bash
# Started by deploy/cluster/test.sh in its control cgroups. If the test's
# shell disappears without running its own teardown (SIGKILL, OOM kill),
# this ends what it started: every process in the test's cgroups (the
# private mount namespace and its mounts go with them), the cgroups, the
# test's bridge, the kubelet's iptables chains and the test's directory. The test's teardown kills this watchdog
# first in every other case.
#
#   watchdog.sh TEST_PID CGROUP_NAME BRIDGE WORK_DIR
set -u
test_pid=$1 cg=$2 br=$3 work=$4
while kill -0 "$test_pid" 2>/dev/null; do sleep 2; done
mounts=$(awk '$3=="cgroup" || $3=="cgroup2" {print $2}' /proc/self/mounts)
# Out of the cgroups it is about to remove.
for m in $mounts; do echo "$$" >"$m/cgroup.procs" 2>/dev/null; done
pids_cg=$(echo "$mounts" | grep -m1 '/pids$')
for _ in 1 2 3 4 5 6 7 8 9 10; do
  p=$(find "$pids_cg/$cg" "$pids_cg/$cg-ctl" -name cgroup.procs -exec cat {} + 2>/dev/null)
  [ -z "$p" ] && break
  # shellcheck disable=SC2086
  kill -KILL $p 2>/dev/null
  sleep 0.5
done
for m in $mounts; do
  for c in "$m/$cg" "$m/$cg-ctl"; do [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null; done
done
for _ in 1 2 3 4 5 6 7 8 9 10; do ip -o link show master "$br" 2>/dev/null | grep -q . || break; sleep 0.5; done
ip link del "$br" 2>/dev/null
[ -f "$work/before/iptables" ] && "$(dirname "$0")/iptables-undo.sh" "$work/before/iptables"
case "$work" in /tmp/ckb-cluster.*) rm -rf "$work" ;; esac
echo "watchdog: test $test_pid gone; its processes, cgroups $cg, bridge $br, iptables chains and $work removed" >&2
