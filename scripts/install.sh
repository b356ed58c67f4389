#!/usr/bin/env bash
# Install riskloop and its locked runtime dependencies (no dev group) into a virtual env.
# The one install path of the image: the Dockerfile runs it, and
# tests/integration/test_install.py runs it into a clean venv and imports every entrypoint.
#
#   scripts/install.sh VENV_DIR              dependencies from uv.lock, then riskloop itself as a wheel
#   scripts/install.sh VENV_DIR --deps-only  only the dependencies (the Dockerfile's cached layer)
#
# Needs uv and a Python 3.11 interpreter (UV_PYTHON picks one; downloads are off).
# Nothing is resolved here: --frozen installs exactly uv.lock, and fails if the lock is stale.
set -euo pipefail

usage() { echo "usage: scripts/install.sh VENV_DIR [--deps-only]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
venv="$1"
deps_only=0
if [[ $# -eq 2 ]]; then
  [[ "$2" == "--deps-only" ]] || usage
  deps_only=1
fi
command -v uv >/dev/null || { echo "install.sh: uv is not on PATH (https://docs.astral.sh/uv/)" >&2; exit 2; }

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export UV_PROJECT_ENVIRONMENT="$venv" UV_PYTHON_DOWNLOADS=never
# --compile-bytecode: the image is read-only at run time; without .pyc every step
# would recompile mlflow/feast/kfp on import.
uv sync --frozen --no-dev --no-install-project --compile-bytecode --quiet
[[ "$deps_only" == 0 ]] || exit 0

# riskloop itself (with components and pipelines) as a freshly built wheel, not editable, so the
# venv works without the source tree. Built explicitly because uv keys its cache of a local
# project's build on pyproject.toml alone: `uv sync` could install a stale wheel of changed code.
wheel_dir="$(mktemp -d)"
trap 'rm -rf "$wheel_dir"' EXIT
uv build --wheel --quiet --out-dir "$wheel_dir"
uv pip install --python "$venv/bin/python" --no-deps --reinstall --compile-bytecode --quiet "$wheel_dir"/riskloop-*.whl
