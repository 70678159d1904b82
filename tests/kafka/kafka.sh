#!/usr/bin/env bash
# Apache Kafka from Maven Central, for the tests: the reference broker and its tools.
#
#   kafka.sh classpath            resolve the jars (Maven, cached in ~/.m2) and print
#                                 the path of the classpath file
#   kafka.sh start DIR PORT [CPORT]
#                                 format DIR and start a one-node KRaft broker+controller
#                                 on 127.0.0.1:PORT (controller on CPORT, default PORT+1);
#                                 returns once it answers (within 120 s); its pid is in
#                                 DIR/pid, its log in DIR/kafka.log
#   kafka.sh stop DIR             stop the broker started in DIR
#   kafka.sh TOOL ARGS...         run one of Kafka's command-line tools by its script name
#                                 (kafka-topics, kafka-console-producer, ...)
#   kafka.sh java ARGS...         run java with Kafka's classpath (Streams included), e.g.
#                                 a single source file: kafka.sh java App.java ARGS
#   kafka.sh connect-distributed WORKER.properties
#   kafka.sh connect-mirror-maker MM2.properties
#                                 a Connect worker / MirrorMaker 2, from tests/connect/pom.xml
#
# Classpaths are cached in $SLUICE_KAFKA_CACHE (default /var/tmp/sluice-kafka), keyed
# by the pom, so only the first run on a machine downloads anything.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${SLUICE_KAFKA_CACHE:-/var/tmp/sluice-kafka}"
java="${JAVA:-java}"

# The classpath file of a pom (default: this directory's), resolved once per pom.
classpath() {
  local pom="${1:-$here/pom.xml}"
  mkdir -p "$cache"
  local key
  key="$(sha256sum "$pom" | cut -c1-16)"
  local file="$cache/classpath-$key.txt"
  if [ ! -s "$file" ]; then
    mvn -q -B -f "$pom" dependency:build-classpath \
      -Dmdep.outputFile="$file.tmp" >&2
    mv "$file.tmp" "$file"
  fi
  echo "$file"
}

run_class() {
  local class="$1"
  shift
  local cp
  case "$class" in
    org.apache.kafka.connect.*) cp="$(cat "$(classpath "$here/../connect/pom.xml")")" ;;
    *) cp="$(cat "$(classpath)")" ;;
  esac
  exec "$java" -Xmx512m -Dlog4j2.configurationFile="$here/log4j2.properties" \
    -cp "$cp" "$class" "$@"
}

tool_class() {
  case "$1" in
    kafka-topics) echo org.apache.kafka.tools.TopicCommand ;;
    kafka-console-producer) echo org.apache.kafka.tools.ConsoleProducer ;;
    kafka-console-consumer) echo org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    kafka-consumer-groups) echo org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    kafka-configs) echo org.apache.kafka.tools.ConfigCommand ;;
    kafka-get-offsets) echo org.apache.kafka.tools.GetOffsetShell ;;
    kafka-delete-records) echo org.apache.kafka.tools.DeleteRecordsCommand ;;
    kafka-log-dirs) echo org.apache.kafka.tools.LogDirsCommand ;;
    kafka-broker-api-versions) echo org.apache.kafka.tools.BrokerApiVersionsCommand ;;
    kafka-reassign-partitions) echo org.apache.kafka.tools.reassign.ReassignPartitionsCommand ;;
    kafka-leader-election) echo org.apache.kafka.tools.LeaderElectionCommand ;;
    kafka-features) echo org.apache.kafka.tools.FeatureCommand ;;
    kafka-transactions) echo org.apache.kafka.tools.TransactionsCommand ;;
    kafka-producer-perf-test) echo org.apache.kafka.tools.ProducerPerformance ;;
    kafka-consumer-perf-test) echo org.apache.kafka.tools.ConsumerPerformance ;;
    kafka-storage) echo kafka.tools.StorageTool ;;
    connect-distributed) echo org.apache.kafka.connect.cli.ConnectDistributed ;;
    connect-mirror-maker) echo org.apache.kafka.connect.mirror.MirrorMaker ;;
    *) return 1 ;;
  esac
}

start() {
  local dir="$1" port="$2"
  local cport="${3:-$((port + 1))}"
  mkdir -p "$dir/data"
  cat > "$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  local cp
  cp="$(cat "$(classpath)")"
  local log4j="-Dlog4j2.configurationFile=$here/log4j2.properties"
  "$java" -Xmx256m $log4j -cp "$cp" kafka.tools.StorageTool format \
    -t "$("$java" $log4j -cp "$cp" kafka.tools.StorageTool random-uuid)" \
    -c "$dir/server.properties" --standalone >"$dir/format.log" 2>&1
  # Kafka's own defaults for a small machine: a 1 GiB heap, G1.
  nohup "$java" -Xms1g -Xmx1g -XX:+UseG1GC $log4j -cp "$cp" kafka.Kafka \
    "$dir/server.properties" >"$dir/kafka.log" 2>&1 &
  echo $! >"$dir/pid"
  # A JVM on a loaded 2-core machine can take well over 30 s to listen.
  for _ in $(seq 1 1200); do
    if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "Apache Kafka exited during start-up; its log:" >&2
      tail -n 40 "$dir/kafka.log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "Apache Kafka did not listen on $port within 120 s" >&2
  return 1
}

stop() {
  local dir="$1"
  [ -f "$dir/pid" ] || return 0
  local pid
  pid="$(cat "$dir/pid")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$dir/pid"; return 0; }
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  classpath) classpath "$@" ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  java)
    exec "$java" -Xmx384m -Dlog4j2.configurationFile="$here/log4j2.properties" \
      -cp "$(cat "$(classpath)")" "$@"
    ;;
  "") sed -n '2,21p' "$0" >&2; exit 2 ;;
  *)
    class="$(tool_class "$cmd")" || { echo "unknown tool $cmd" >&2; exit 2; }
    run_class "$class" "$@"
    ;;
esac
