#!/usr/bin/env bash
# Regenerate the hash-pinned lock files from pyproject.toml (`make lock`; `make lock UPGRADE=1` moves
# every pin to the newest allowed version):
#   requirements.lock        the controller's dependencies ([project].dependencies), what the image installs
#   requirements-build.lock  the build backend ([build-system].requires), what builds the wheel
# Both are universal (markers instead of one platform's answer, so one file serves amd64 and arm64)
# for the image's Python and carry the hash of every published file of each pin, for
# `pip install --require-hashes`. Without UPGRADE the pins already in a file are kept wherever
# pyproject.toml still allows them, so re-running after no change rewrites nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
UV="${UV:-uv}"
# The Python of the image (Dockerfile's PYTHON_IMAGE).
LOCK_PYTHON="${LOCK_PYTHON:-3.11}"

args=(pip compile --quiet --universal --python-version "${LOCK_PYTHON}" --generate-hashes
  --custom-compile-command "make lock")
[[ -n "${UPGRADE:-}" ]] && args+=(--upgrade)

"${UV}" "${args[@]}" --output-file requirements.lock pyproject.toml

build_in="$(mktemp -d)"
trap 'rm -rf "${build_in}"' EXIT
python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
  >"${build_in}/build-system.in"
"${UV}" "${args[@]}" --no-annotate --output-file requirements-build.lock "${build_in}/build-system.in"
