#!/usr/bin/env bash
# Install exactly what uv.lock says into .venv (idempotent; a second run takes about a second).
#   bash scripts/setup.sh            # runtime + the fast and dev extras
#   bash scripts/setup.sh --check    # first fail if uv.lock is out of date with pyproject.toml
# uv (https://docs.astral.sh/uv/) is used from PATH when present, else installed once from PyPI
# into .cache/tools (pinned below). `uv sync --frozen` never re-resolves: every machine gets the
# versions in the committed lock. To upgrade: `uv lock --upgrade`, then `bash scripts/test.sh`.
# Environment: PYTHON (interpreter for the venv, default python3), UV (a uv binary to use).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
uv_version=0.13.9
export UV_PYTHON_DOWNLOADS=never   # use the machine's Python; never fetch an interpreter

uv=${UV:-}
if [ -z "$uv" ]; then
  if command -v uv >/dev/null 2>&1; then
    uv=$(command -v uv)
  else
    uv="$root/.cache/tools/bin/uv"
    if [ ! -x "$uv" ] || [ "$("$uv" --version 2>/dev/null | cut -d' ' -f2)" != "$uv_version" ]; then
      echo "setup: installing uv $uv_version into .cache/tools" >&2
      "$py" -m venv "$root/.cache/tools"
      "$root/.cache/tools/bin/python" -m pip install --quiet --disable-pip-version-check \
        "uv==$uv_version"
    fi
  fi
fi

if [ "${1:-}" = --check ]; then
  if ! "$uv" lock --check --python "$py" --quiet; then
    echo "setup: uv.lock is out of date with pyproject.toml: run \`uv lock\` and commit uv.lock" >&2
    exit 1
  fi
  echo "setup: uv.lock is up to date with pyproject.toml" >&2
fi
if [ ! -x "$root/.venv/bin/python" ]; then
  echo "setup: creating .venv and installing the locked packages (first time: a few minutes)" >&2
fi
# --compile-bytecode: the packages' .pyc are written once here. Without them, a machine with
# PYTHONDONTWRITEBYTECODE=1 (this one) compiles every module at every start: importing the four
# model consumers took 6.8 s instead of 3.0 s, in every consumer and every test that starts one.
"$uv" sync --frozen --python "$py" --extra fast --extra dev --quiet --compile-bytecode
echo "setup: .venv matches uv.lock ($("$uv" --version))" >&2
# numba compiles the reliability detector's loops (the context's, models/reliability/kernel.py,
# and the forest's walk) at their first call and caches them beside the source
# (models/reliability/__pycache__): done once here (about 4 s), so no consumer's first records
# wait for it. Later processes load the cache in well under a second.
"$root/.venv/bin/python" -c "import models.reliability as r; r.precompile()"
