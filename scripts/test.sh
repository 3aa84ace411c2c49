#!/usr/bin/env bash
# The test command: install, lint, start the local Kafka broker, run every test, stop the broker.
#   bash scripts/test.sh [extra pytest args]
# Integration tests talk to a real single-node Apache Kafka (KRaft) started by
# scripts/kafka-local.sh; a broker this script did not start is reused and left running.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/setup.sh --check
py="$root/.venv/bin/python"

echo "test: ruff check, mypy (stream/ and models/)" >&2
"$py" -m ruff check stream models producers consumers tests bench
"$py" -m mypy

# A real Prometheus for tests/stream/test_metrics.py: Debian's package, installed when missing.
if ! command -v prometheus >/dev/null 2>&1; then
  echo "test: installing Debian's prometheus package (the metrics test scrapes a consumer)" >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo -n"; fi
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; then
    echo "test: could not install prometheus (apt-get install prometheus); its test will fail" >&2
  fi
fi

started=0
status=$(bash scripts/kafka-local.sh status || true)
case "$status" in
  running*) echo "test: reusing the running local broker" >&2 ;;
  *"not started by this script"*) echo "test: reusing a broker this script did not start: $status" >&2 ;;
  *) bash scripts/kafka-local.sh start; started=1 ;;
esac
cleanup() { if [ "$started" = 1 ]; then bash scripts/kafka-local.sh stop || true; fi; }
trap cleanup EXIT

set +e
"$py" -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "test: pytest collected no tests: treating that as a failure (the suite must never be empty)" >&2
  exit 1
fi
exit "$rc"
