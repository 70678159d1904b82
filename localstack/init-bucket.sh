#!/bin/sh
# Creates an S3 bucket on an S3-compatible endpoint (LocalStack, MinIO, moto) with a
# SigV4-signed request; an existing bucket is fine.
#
#   S3_ENDPOINT=http://127.0.0.1:4566 localstack/init-bucket.sh sluice
set -eu
BUCKET="${1:-${SLUICE_BUCKET:-sluice}}"
ENDPOINT="${S3_ENDPOINT:?set S3_ENDPOINT, e.g. http://127.0.0.1:4566}"
REGION="${AWS_REGION:-us-east-1}"
KEY="${AWS_ACCESS_KEY_ID:-test}"
SECRET="${AWS_SECRET_ACCESS_KEY:-test}"
for _ in $(seq 30); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT \
    --aws-sigv4 "aws:amz:$REGION:s3" --user "$KEY:$SECRET" "$ENDPOINT/$BUCKET" || true)
  case "$code" in
    200|409) echo "bucket $BUCKET ready at $ENDPOINT"; exit 0 ;;
  esac
  sleep 1
done
echo "could not create bucket $BUCKET at $ENDPOINT (last HTTP status $code)" >&2
exit 1
