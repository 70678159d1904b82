#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests: renders the base and every overlay with
# `kubectl kustomize` (kubectl >= 1.27, for kustomize v5 labels and replacements) and
# validates the result with `kubernetes-validate --strict` (PyPI), which rejects
# unknown fields as well as schema errors.
set -euo pipefail
cd "$(dirname "$0")"
command -v kubectl >/dev/null || { echo "k8s/check.sh: kubectl (>= 1.27) is required" >&2; exit 1; }
command -v kubernetes-validate >/dev/null || { echo "k8s/check.sh: pip install kubernetes-validate" >&2; exit 1; }
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for dir in base overlays/*/; do
  dir="${dir%/}"
  file="$out/$(echo "$dir" | tr / -).yaml"
  kubectl kustomize "$dir" > "$file"
  kubernetes-validate --strict --quiet "$file"
  echo "k8s: $dir: $(grep -c '^kind:' "$file") resources valid"
done
