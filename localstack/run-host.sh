#!/usr/bin/env bash
# Runs LocalStack's S3 on this host without Docker, on loopback.
#
#   localstack/run-host.sh start   # install (once) and start in the background
#   localstack/run-host.sh stop
#
# Needs Python 3.13 (LOCALSTACK_PYTHON, default: pyenv's 3.13.0 or python3.13 on the
# PATH). Installs pinned packages into LOCALSTACK_VENV. Listens on
# 127.0.0.1:LOCALSTACK_PORT (4566) and creates the bucket SLUICE_BUCKET (sluice).
# Nothing is downloaded at run time (no certificate fetch, no analytics).
set -euo pipefail

VENV="${LOCALSTACK_VENV:-/var/tmp/localstack-venv}"
PORT="${LOCALSTACK_PORT:-4566}"
STATE="${LOCALSTACK_STATE:-/var/tmp/localstack-host}"
BUCKET="${SLUICE_BUCKET:-sluice}"
PACKAGES=(
  'localstack-core[runtime]==2026.3.0'
  'cbor2<6'
  'pyopenssl>=25,<26'
  'cryptography>=45.0.7,<47'
  'service-identity'
)

find_python() {
  if [ -n "${LOCALSTACK_PYTHON:-}" ]; then echo "$LOCALSTACK_PYTHON"; return; fi
  for p in /root/.pyenv/versions/3.13.0/bin/python3 "$(command -v python3.13 || true)"; do
    [ -n "$p" ] && [ -x "$p" ] && { echo "$p"; return; }
  done
  echo "error: Python 3.13 not found; set LOCALSTACK_PYTHON" >&2
  return 1
}

install() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import localstack' 2>/dev/null && return
  local py
  py="$(find_python)"
  "$py" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PACKAGES[@]}"
}

start() {
  install
  mkdir -p "$STATE"
  if [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
    echo "LocalStack already running (pid $(cat "$STATE/pid"))"
  else
    # S3 for the client tests; IAM and STS for the Terraform example.
    GATEWAY_LISTEN="127.0.0.1:$PORT" SERVICES=s3,iam,sts EAGER_SERVICE_LOADING=1 \
      SKIP_SSL_CERT_DOWNLOAD=1 DISABLE_EVENTS=1 LOCALSTACK_VOLUME_DIR="$STATE/volume" \
      nohup "$VENV/bin/python" -m localstack.runtime.main >"$STATE/localstack.log" 2>&1 &
    echo $! >"$STATE/pid"
  fi
  for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$PORT/_localstack/health" >/dev/null && break
    sleep 0.5
  done
  curl -sf "http://127.0.0.1:$PORT/_localstack/health" >/dev/null \
    || { echo "LocalStack did not start; see $STATE/localstack.log" >&2; exit 1; }
  S3_ENDPOINT="http://127.0.0.1:$PORT" "$(dirname "$0")/init-bucket.sh" "$BUCKET"
  echo "LocalStack S3 ready at http://127.0.0.1:$PORT (bucket $BUCKET)"
}

stop() {
  if [ -f "$STATE/pid" ]; then
    kill "$(cat "$STATE/pid")" 2>/dev/null || true
    rm -f "$STATE/pid"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
