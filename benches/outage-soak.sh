#!/usr/bin/env bash
# Memory under a Kafka outage: the release bridge runs with no reachable
# broker (127.0.0.1:1) in enqueued mode while curl sends a steady 200
# callbacks/s for 10 minutes (120 000 requests); RSS is sampled every 10 s.
# Loopback only, bounded in time and count. Prints peak RSS and final counts.
#   cargo build --release --locked && bash benches/outage-soak.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
rate=200
BIN=${CARGO_TARGET_DIR:-target}/release/chat-kafka-bridge
D=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$D"' EXIT
printf '[[apps]]\nsdk_app_id = 1400000001\n' > "$D/bridge.toml"
BRIDGE_CONFIG=$D/bridge.toml BRIDGE_KAFKA_BROKERS=127.0.0.1:1 \
BRIDGE_LISTEN=127.0.0.1:18080 BRIDGE_ADMIN_LISTEN=127.0.0.1:19090 \
BRIDGE_SPOOL_DIR=$D/spool RUST_LOG=warn,librdkafka=error "$BIN" > "$D/bridge.log" 2>&1 &
pid=$!
sleep 2
n=$((secs * rate))
URL="http://127.0.0.1:18080/callback?SdkAppid=1400000001&CallbackCommand=OfficialAccount.CallbackAfterSendMsg&n=[1-$n]"
timeout $((secs + 60)) curl -s --rate "$rate/s" -o /dev/null -H 'content-type: application/json' \
  --data-binary @tests/fixtures/callbacks/OfficialAccount.CallbackAfterSendMsg.json "$URL" > /dev/null &
cpid=$!
max=0
start=$(date +%s)
while kill -0 $cpid 2>/dev/null; do
  rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
  [ "$rss" -gt "$max" ] && max=$rss
  sleep 10
done
echo "outage of $(( $(date +%s) - start ))s at ${rate}/s: peak RSS ${max} KiB ($((max / 1024)) MiB)"
curl -s 127.0.0.1:19090/metrics | grep -E '^chat_bridge_(callbacks_total\{family="official_account",outcome="published"\}|spool_(events|bytes) |kafka_producer_queue_(messages|bytes) |events_discarded_total)'
kill -TERM $pid; wait $pid; echo "bridge exit $?"
