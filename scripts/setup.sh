#!/usr/bin/env bash
# Install everything a fresh machine needs into .venv (idempotent, quick when nothing changed).
#   bash scripts/setup.sh            # runtime + dev + fast client extra
# Re-installs only when pyproject.toml changes (a stamp file holds its hash).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
venv="$root/.venv"
stamp="$venv/.dwcp-installed"
want=$(sha256sum pyproject.toml | cut -c1-16)

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating virtual environment in .venv" >&2
  "$py" -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing dwcp-stream with extras [fast,dev] (first time takes a few minutes: tensorflow-cpu)" >&2
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e ".[fast,dev]"
  echo "$want" > "$stamp"
else
  echo "setup: .venv is up to date" >&2
fi
