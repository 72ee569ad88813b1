#!/usr/bin/env bash
# Build the production environment exactly as the Dockerfile's builder stage does: what
# uv.lock pins without the dev group, then the project itself as a wheel (not editable), so
# nothing from the source tree or from the developers' tools can hide a missing dependency.
#
#   scripts/build-production-env.sh DIR      (DIR: the venv to create, e.g. .venv-production)
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/build-production-env.sh DIR}
uv=${UV:-scripts/uv}

rm -rf "$target"
export UV_PROJECT_ENVIRONMENT=$target UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy
$uv sync --quiet --frozen --no-dev --no-install-project
# --reinstall-package: uv caches the built wheel of a local project by pyproject.toml alone, so
# without it a changed source tree would install yesterday's wheel.
$uv sync --quiet --frozen --no-dev --no-editable --reinstall-package fapiao-bridge
echo "production environment: $target ($("$target/bin/python" --version))"
