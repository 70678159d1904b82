#!/usr/bin/env bash
# The test command: installs what the tests need (Debian and PyPI packages), builds
# the broker, runs every Rust test (unit, conformance, codec fuzzing, end-to-end with
# librdkafka, including a 3-broker cluster under kill -9 and an etcd restart) and the
# client suites (confluent-kafka, kafka-python, aiokafka, kcat) against the real
# binary, on one broker and on a 3-broker cluster; the Java client suite (tests/java,
# JUnit 5 + kafka-clients 4 from Maven) and Apache Kafka's command-line tools
# (tests/kafka) run from the client suites too, and so do the Go clients (tests/go:
# sarama, and franz-go's own kgo integration suite), a Kafka Streams application,
# a Kafka Connect worker and MirrorMaker 2 from Apache Kafka (tests/streams,
# tests/connect). Each test starts and stops the brokers, etcd and S3 servers it uses.
#
# Object stores: the end-to-end and client suites run with objects in a local
# directory and again in S3. The end-to-end S3 passes and the cluster pass use moto
# (PyPI `moto[server]`), started and stopped by the test setup itself; the client
# suites' single-broker S3 pass runs against LocalStack on this host where Python 3.13
# exists (localstack/run-host.sh installs and starts it, and stops it afterwards),
# else against moto. Each stage's line shows the seconds since the run began.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
stage() { echo "==> [$(( $(date +%s) - started )) s] $*"; }

./tests/install-deps.sh

stage "Terraform and Kubernetes manifests: fmt, validate, render, offline"
./terraform/check.sh
./k8s/check.sh

stage "building the broker (release)"
cargo build --release -p sluice-server

# The cluster tests and the etcd store's conformance suite start a real etcd and S3 server.
stage "Rust tests (objects in a local directory; etcd and S3 where a test needs them)"
cargo test --workspace --all-targets

stage "fuzz targets, short run: seed corpora and seeded mutations (docs/fuzzing.md)"
cargo test --manifest-path fuzz/Cargo.toml --no-default-features

stage "end-to-end tests again, objects in S3"
SLUICE_E2E_OBJECT_STORE=s3 cargo test -p sluice-e2e -- --skip cluster_

stage "end-to-end tests again, objects in S3 and metadata in etcd"
SLUICE_E2E_OBJECT_STORE=s3 SLUICE_E2E_META=etcd cargo test -p sluice-e2e -- --skip cluster_

# Cluster pass only: test_scaling.py adds a broker to the cluster fixture and
# test_group_failover.py starts a cluster of its own whatever the pass; franz-go's kgo
# suite, Streams, Connect and MirrorMaker 2 take minutes each and kill -9 a broker
# under load only on a cluster; Kafka's tools reassign partitions and elect leaders,
# which mean something only there (the ledger runs all of them on one Sluice broker
# and on Kafka).
cluster_only=(--deselect tests/clients/test_scaling.py
  --deselect tests/clients/test_group_failover.py
  --deselect tests/clients/test_go_clients.py::test_franz_go_kgo_suite
  --deselect tests/clients/test_kafka_tools.py
  --deselect tests/clients/test_streams.py --deselect tests/clients/test_connect.py)
# Not again on the S3 servers: what runs the same on any object store.
jvm_and_go=(--deselect tests/clients/test_java_client.py
  --deselect tests/clients/test_kafka_tools.py --deselect tests/clients/test_kafkajs.py
  --deselect tests/clients/test_go_clients.py)

stage "client tests (confluent-kafka, kafka-python, aiokafka, kcat), local objects"
python3 -m pytest tests/clients -q -p no:cacheprovider -W ignore::DeprecationWarning \
  "${cluster_only[@]}"

stage "compatibility ledger: docs/compatibility.md is current (APIs and scenarios)"
python3 scripts/compatibility.py --check

stage "client tests again, on a 3-broker cluster (etcd + S3 server)"
SLUICE_TEST_CLUSTER=3 python3 -m pytest tests/clients -q -p no:cacheprovider -W ignore::DeprecationWarning \
  --deselect tests/clients/test_s3_faults.py

# Last, so the run closes on a test summary. One single-broker pass on S3: LocalStack
# where Python 3.13 exists (it is what local stacks run), else moto. S3 through moto is
# also what the cluster pass and the end-to-end S3 passes use, and test_s3_faults.py
# (moto behind a fault-injecting proxy) runs in the local pass.
if [ -n "${LOCALSTACK_PYTHON:-}" ] || [ -x /root/.pyenv/versions/3.13.0/bin/python3 ] || command -v python3.13 >/dev/null; then
  stage "LocalStack on this host (localstack/run-host.sh)"
  trap './localstack/run-host.sh stop' EXIT
  ./localstack/run-host.sh start
  stage "Terraform: apply and destroy the LocalStack example"
  ./terraform/check.sh apply-localstack
  stage "client tests again, objects in LocalStack S3 (on this host)"
  SLUICE_TEST_OBJECT_STORE=s3 SLUICE_TEST_S3_ENDPOINT=http://127.0.0.1:4566 \
    python3 -m pytest tests/clients -q -p no:cacheprovider -W ignore::DeprecationWarning \
    --deselect tests/clients/test_s3_faults.py "${cluster_only[@]}" "${jvm_and_go[@]}"
  ./localstack/run-host.sh stop
  trap - EXIT
else
  stage "client tests again, objects in S3 (moto; no Python 3.13 here for LocalStack, set LOCALSTACK_PYTHON)"
  SLUICE_TEST_OBJECT_STORE=s3 python3 -m pytest tests/clients -q -p no:cacheprovider -W ignore::DeprecationWarning \
    --deselect tests/clients/test_s3_faults.py "${cluster_only[@]}" "${jvm_and_go[@]}"
fi
