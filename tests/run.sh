#!/usr/bin/env bash
# The test command: installs what the tests need (Debian and PyPI packages), builds
# the broker, runs every Rust test (unit, conformance, codec fuzzing, end-to-end with
# librdkafka) and the client suites (confluent-kafka, kafka-python, aiokafka, kcat)
# against the real binary. Each test starts and stops the brokers it uses.
#
# Object stores: the end-to-end and client suites run twice, once with objects in a
# local directory and once in S3. For the S3 pass each broker gets its own S3 server
# (moto, PyPI `moto[server]`), started and stopped by the test setup itself.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v kcat >/dev/null || need_apt+=(kcat)
command -v make >/dev/null || need_apt+=(make)
command -v g++ >/dev/null || need_apt+=(g++)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${need_apt[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need_apt[@]}"
fi

echo "==> installing Python client libraries"
python3 -m pip install -q --disable-pip-version-check -r tests/clients/requirements.txt

echo "==> building the broker (release)"
cargo build --release -p sluice-server

echo "==> Rust tests (objects in a local directory)"
cargo test --workspace --all-targets

echo "==> end-to-end tests again, objects in S3"
SLUICE_E2E_OBJECT_STORE=s3 cargo test -p sluice-e2e

echo "==> client tests (confluent-kafka, kafka-python, aiokafka, kcat), local objects"
python3 -m pytest tests/clients -q -p no:cacheprovider -W ignore::DeprecationWarning

echo "==> client tests again, objects in S3"
SLUICE_TEST_OBJECT_STORE=s3 python3 -m pytest tests/clients -q -p no:cacheprovider -W ignore::DeprecationWarning
