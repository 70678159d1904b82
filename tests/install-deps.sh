#!/usr/bin/env bash
# Installs what the tests and the lints need on a fresh Debian machine: Debian packages
# (kcat, curl, etcd, a C/C++ toolchain for librdkafka, Java 17 and Maven), the
# Python client libraries, kafkajs (npm), the Go clients of tests/go (Go module proxy,
# with the machine's Go, 1.26 or newer: Debian's is too old) and Apache Kafka's jars
# from Maven Central (the reference broker, its tools, Streams, Connect and MirrorMaker 2,
# cached in ~/.m2).
# Already-present tools are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v kcat >/dev/null || need_apt+=(kcat)
command -v curl >/dev/null || need_apt+=(curl)
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v make >/dev/null || need_apt+=(make)
command -v g++ >/dev/null || need_apt+=(g++)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
command -v java >/dev/null || need_apt+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || need_apt+=(maven)
command -v npm >/dev/null || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${need_apt[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_apt[@]}"
fi

echo "==> installing Python client libraries"
python3 -m pip install -q --disable-pip-version-check -r tests/clients/requirements.txt

echo "==> installing kafkajs (npm)"
(cd tests/js && npm install --no-audit --no-fund --silent)

echo "==> resolving the Go clients (sarama, franz-go with its tests; Go module proxy)"
(cd tests/go && go mod download all && go test -count=1 -run '^$' . github.com/twmb/franz-go/pkg/kgo >/dev/null)

echo "==> resolving Apache Kafka's jars, Streams, Connect and MirrorMaker 2 (Maven Central; cached in ~/.m2)"
./tests/kafka/kafka.sh classpath >/dev/null
./tests/kafka/kafka.sh classpath tests/connect/pom.xml >/dev/null
