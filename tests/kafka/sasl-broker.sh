#!/usr/bin/env bash
# One Apache Kafka broker (KRaft, one node) with a PLAINTEXT listener and a
# SASL_PLAINTEXT listener (SASL/PLAIN), from Maven's jars, for scripts other
# than the Rust harness (e.g. a Kubernetes test whose bridge pod needs a
# password-protected Kafka). The same configuration as tests/it/kafka.rs's
# secure brokers, without TLS and ACLs.
#
#   tests/kafka/sasl-broker.sh [--version 4.1.1] [--host 127.0.0.1] [--dir DIR] [--seconds 1800]
#
# SASL user and password: $KAFKA_SASL_USER / $KAFKA_SASL_PASSWORD (defaults
# bridge / bridge-secret). Listens on free ports of --host (an address of
# this machine: loopback, or one of your own test network namespace), writes
# DIR/bootstrap.env once the broker answers:
#   PLAINTEXT=host:port            no authentication (create topics with it)
#   SASL_PLAINTEXT=host:port       security.protocol=SASL_PLAINTEXT, sasl.mechanisms=PLAIN
#   SASL_USER=...
# and runs in the foreground until killed (SIGTERM/SIGINT) or --seconds
# pass, then stops the broker and removes DIR. Versions: 3.9.x and 4.x.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

version=4.1.1 host=127.0.0.1 dir= seconds=1800
while [ $# -gt 0 ]; do
  case $1 in
    --version) version=$2; shift 2;;
    --host) host=$2; shift 2;;
    --dir) dir=$2; shift 2;;
    --seconds) seconds=$2; shift 2;;
    *) echo "unknown argument $1 (see the header of $0)" >&2; exit 2;;
  esac
done
user=${KAFKA_SASL_USER:-bridge}
password=${KAFKA_SASL_PASSWORD:-bridge-secret}
case $version in
  4.*) pom=$here/pom.xml; log_args=("-Dlog4j2.configurationFile=$here/log4j2.properties");;
  3.9.*) pom=$here/reload4j/pom.xml; log_args=("-Dlog4j.configuration=file:$here/log4j.properties");;
  *) echo "sasl-broker.sh starts KRaft brokers, 3.9.x or 4.x (tests/it/kafka.rs also starts 2.4-3.2 with ZooKeeper)" >&2; exit 2;;
esac
for tool in java mvn python3; do
  command -v "$tool" >/dev/null || { echo "sasl-broker.sh: $tool is missing" >&2; exit 1; }
done
dir=${dir:-$(mktemp -d -t kafka-sasl-XXXXXX)}
mkdir -p "$dir/data"

libs=$dir/libs
mvn -q -B -f "$pom" -Dkafka.version="$version" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$libs"
cp="$libs/*"

free_port() { python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$host"; }
plain=$(free_port) sasl=$(free_port) controller=$(free_port)
share=
case $version in 4.*) share="share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1";; esac
cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$host:$controller
listeners=PLAINTEXT://$host:$plain,SASL_PLAINTEXT://$host:$sasl,CONTROLLER://$host:$controller
advertised.listeners=PLAINTEXT://$host:$plain,SASL_PLAINTEXT://$host:$sasl
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$user="$password";
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
$share
EOF
chmod 600 "$dir/server.properties"
java_opts=(-Xmx512m -XX:+UseSerialGC -Djava.awt.headless=true "${log_args[@]}")
java "${java_opts[@]}" -cp "$cp" kafka.tools.StorageTool format -t Y2hhdC1rYWZrYS1icmlkZw \
  -c "$dir/server.properties" >"$dir/format.log" 2>&1

java "${java_opts[@]}" -cp "$cp" kafka.Kafka "$dir/server.properties" >"$dir/broker.log" 2>&1 &
broker=$!
stop() {
  kill "$broker" 2>/dev/null || true
  for _ in $(seq 20); do kill -0 "$broker" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$broker" 2>/dev/null || true
  rm -rf "$dir"
}
trap stop EXIT
trap 'exit 0' TERM INT

# Ready when a Metadata request (v1, Kafka's wire protocol) on the PLAINTEXT
# port lists the broker.
metadata_lists_a_broker() {
  python3 - "$host" "$plain" <<'PY2'
import socket, struct, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    req = struct.pack(">hhih", 3, 1, 7, -1) + struct.pack(">i", -1)  # all topics
    s.sendall(struct.pack(">i", len(req)) + req)
    head = s.recv(12)
    size, corr, brokers = struct.unpack(">iii", head[:12])
    sys.exit(0 if corr == 7 and brokers >= 1 else 1)
except (OSError, struct.error):
    sys.exit(1)
PY2
}
deadline=$(( $(date +%s) + 120 ))
until metadata_lists_a_broker; do
  kill -0 "$broker" 2>/dev/null || { echo "the broker exited:" >&2; tail -20 "$dir/broker.log" >&2; exit 1; }
  [ "$(date +%s)" -lt "$deadline" ] || { echo "the broker did not answer within 120 s" >&2; exit 1; }
  sleep 1
done
cat >"$dir/bootstrap.env" <<EOF
PLAINTEXT=$host:$plain
SASL_PLAINTEXT=$host:$sasl
SASL_USER=$user
EOF
echo "Kafka $version ready: PLAINTEXT=$host:$plain SASL_PLAINTEXT=$host:$sasl (SASL/PLAIN user $user); $dir/bootstrap.env; stopping in ${seconds}s"
sleep "$seconds" &
wait $! || true
