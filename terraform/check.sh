#!/usr/bin/env bash
# Offline checks of the Terraform: formatting, and `terraform validate` of every
# example (which validates the module too), with the AWS provider from the machine
# image (/opt/tf-plugins; TF_PLUGIN_DIR overrides). With `apply-localstack`, also
# applies the LocalStack example against LocalStack on this host and destroys it.
set -euo pipefail
cd "$(dirname "$0")"
plugins="${TF_PLUGIN_DIR:-/opt/tf-plugins}"
export TF_IN_AUTOMATION=1 TF_CLI_CONFIG_FILE=/dev/null CHECKPOINT_DISABLE=1

terraform fmt -recursive -check
for example in examples/*/; do
  terraform -chdir="$example" init -backend=false -input=false -plugin-dir="$plugins" >/dev/null
  terraform -chdir="$example" validate -no-color
done

if [ "${1:-}" = "apply-localstack" ]; then
  dir=examples/localstack
  state="$(mktemp -d)/terraform.tfstate"
  terraform -chdir="$dir" init -input=false -plugin-dir="$plugins" >/dev/null
  terraform -chdir="$dir" apply -auto-approve -input=false -no-color -state="$state" | tail -n 6
  terraform -chdir="$dir" destroy -auto-approve -input=false -no-color -state="$state" | tail -n 2
  rm -f "$state"
fi
