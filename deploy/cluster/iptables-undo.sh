#!/usr/bin/env bash
# Removes the iptables chains that are not in BEFORE (the kubelet's
# KUBE-FIREWALL, KUBE-KUBELET-CANARY, ...) with the rules jumping to them,
# and, with the nf_tables backend, the tables that were not there before and
# are empty again. BEFORE is deploy/cluster/test.sh's snapshot: lines
# "4 <iptables-save line>" and "6 <ip6tables-save line>".
#
#   iptables-undo.sh BEFORE
set -u
before=$1
for fam in 4 6; do
  ipt=iptables; nftfam=ip
  [ "$fam" = 6 ] && { ipt=ip6tables; nftfam=ip6; }
  for table in filter nat mangle raw security; do
    for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1=="-N"{print $2}'); do
      grep -qxF "$fam :$chain" <(awk '$2 ~ /^:/ {print $1, $2}' "$before") && continue
      "$ipt" -t "$table" -S 2>/dev/null | awk -v c="$chain" '$1=="-A" && $0 ~ ("-j " c "( |$)") && $2 != c' | sed 's/^-A/-D/' \
        | while read -r rule; do eval "$ipt -t $table $rule"; done
      "$ipt" -t "$table" -F "$chain"; "$ipt" -t "$table" -X "$chain"
    done
    if "$ipt" --version 2>/dev/null | grep -q nf_tables && ! grep -qxF "$fam *$table" "$before" \
      && nft list table "$nftfam" "$table" >/dev/null 2>&1 && ! "$ipt-save" -t "$table" 2>/dev/null | grep -q '^-A'; then
      nft delete table "$nftfam" "$table"
    fi
  done
done
