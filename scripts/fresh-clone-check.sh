#!/usr/bin/env bash
# Clone this repository's HEAD into a temporary folder and run the README's two commands there,
# as a new user would: the set-up-and-run command (scripts/demo.sh) and the test command
# (scripts/test.sh). Prints how long each took.
#   bash scripts/fresh-clone-check.sh [--cold] [--keep] [--no-demo]
#     --cold     an empty uv package cache (UV_CACHE_DIR in the temporary folder): a new machine
#     --keep     leave the clone in place (default: removed afterwards)
#     --no-demo  only the test command
# Exit status: non-zero if either command fails. Stop a local broker first if you want the
# clone to start its own (otherwise it reuses the one listening on 127.0.0.1:9092).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cold=0 keep=0 demo=1
for arg in "$@"; do
  case "$arg" in
    --cold) cold=1 ;;
    --keep) keep=1 ;;
    --no-demo) demo=0 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "fresh-clone-check: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dwcp-fresh-XXXXXX")
cleanup() { if [ "$keep" = 0 ]; then rm -rf "$tmp"; else echo "fresh-clone-check: kept $tmp" >&2; fi; }
trap cleanup EXIT
if [ "$cold" = 1 ]; then export UV_CACHE_DIR="$tmp/uv-cache"; fi

git clone --quiet "$root" "$tmp/clone"
cd "$tmp/clone"
echo "fresh-clone-check: $(git log -1 --format='%h %s' | cut -c1-80) in $tmp/clone (cache: $([ "$cold" = 1 ] && echo cold || echo warm))" >&2

t0=$(date +%s)
bash scripts/setup.sh
t_setup=$(( $(date +%s) - t0 ))
rm -rf .venv   # the two commands below each install from scratch, as on a new machine

status=0
t_demo=skipped
if [ "$demo" = 1 ]; then
  t0=$(date +%s)
  if bash scripts/demo.sh >"$tmp/demo.log" 2>&1; then t_demo="$(( $(date +%s) - t0 ))s"; else status=1; t_demo="FAILED ($tmp/demo.log)"; fi
  grep '^\[' "$tmp/demo.log" | tail -n 1 >&2 || true
  rm -rf .venv
fi
t0=$(date +%s)
if bash scripts/test.sh -q -p no:cacheprovider >"$tmp/test.log" 2>&1; then t_test="$(( $(date +%s) - t0 ))s"; else status=1; t_test="FAILED ($tmp/test.log)"; fi
grep -E '^[0-9]+ (passed|failed)|passed|failed' "$tmp/test.log" | tail -n 1 >&2 || true
if [ "$status" != 0 ]; then keep=1; fi

echo "fresh-clone-check: set-up alone ${t_setup}s; demo (set-up + run) $t_demo; tests (set-up + suite) $t_test" >&2
exit "$status"
