#!/usr/bin/env bash
# Policy scan of the Helm chart, offline: render helm/riskloop for every values set (values.yaml, ci/*, envs/*)
# with helm-python-sdk into a temp dir, one object per file, and scan it with checkov from its own tool
# environment (tools/checkov). checkov's Helm mode needs a helm binary and silently finds nothing without
# one, so it scans the rendered YAML. Exit status: checkov's (non-zero on any failed check).
# Skips are inline in the templates (checkov.io/skipN annotations, each with its reason).
#   scripts/policy-scan.sh [--keep DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
CHECKOV=tools/checkov/.venv/bin/checkov

if [[ ${1:-} == --keep ]]; then
  out=${2:?usage: scripts/policy-scan.sh [--keep DIR]}
  rm -rf "$out"
else
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi

if [[ ! -x $CHECKOV ]]; then
  echo "policy-scan: creating the checkov tool environment (uv sync --frozen --project tools/checkov)" >&2
  uv sync --frozen --quiet --project tools/checkov
fi

"$PY" tests/tools/chart/chart.py --out "$out"
"$CHECKOV" -d "$out" --framework kubernetes --skip-download --compact --quiet
