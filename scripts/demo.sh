#!/usr/bin/env bash
# The set-up-and-run command: install, start the local broker, run the synthetic fleet and the
# consumers for a bounded time while the monitor shows what flows live, then stop cleanly.
#   bash scripts/demo.sh [SECONDS]          (default 60)
# Environment: DEMO_RATE events/s (2000), DEMO_NODES (50), DWCP_BACKEND (confluent),
# DEMO_SPEEDUP simulated-time speed-up (10), DEMO_INCIDENT_RATE incidents per node per simulated
# hour (1), DEMO_BAD_RATE fraction of malformed records (0.001). Logs of every process: .cache/demo/*.log
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
seconds=${1:-60}
rate=${DEMO_RATE:-2000}
nodes=${DEMO_NODES:-50}
speedup=${DEMO_SPEEDUP:-10}
export DWCP_BACKEND=${DWCP_BACKEND:-confluent}
logs="$root/.cache/demo"
mkdir -p "$logs"

bash scripts/setup.sh
py="$root/.venv/bin/python"

started=0
case "$(bash scripts/kafka-local.sh status || true)" in
  running*) echo "demo: reusing the running local broker" >&2 ;;
  *) bash scripts/kafka-local.sh start; started=1 ;;
esac

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$started" = 1 ]; then bash scripts/kafka-local.sh stop || true; fi
}
trap cleanup EXIT

"$py" -m stream.topics create

# Consumers first, so they are in their groups before the first event; then the fleet.
consumers=(ingest)
for name in "${consumers[@]}"; do
  "$py" -m "consumers.$name" --from-beginning >"$logs/$name.log" 2>&1 &
  pids+=("$!")
  echo "demo: started consumers.$name (log: .cache/demo/$name.log)" >&2
done
# A few incidents per simulated hour and 0.1% malformed records, so alerts and dead letters show.
"$py" -m producers.synthetic --nodes "$nodes" --rate "$rate" --speedup "$speedup" --duration "$seconds" \
  --incident-rate "${DEMO_INCIDENT_RATE:-1}" --bad-rate "${DEMO_BAD_RATE:-0.001}" \
  >"$logs/producer.log" 2>&1 &
pids+=("$!")
echo "demo: fleet of $nodes nodes at $rate events/s for ${seconds}s, backend $DWCP_BACKEND" >&2

"$py" -m consumers.monitor --max-seconds "$((seconds + 5))"

echo "demo: stopping consumers (SIGTERM: finish batch, flush, commit)" >&2
cleanup
pids=()
started=0
echo "demo: last lines of each log:" >&2
for f in "$logs"/*.log; do printf '  %s: %s\n' "$(basename "$f" .log)" "$(tail -n 1 "$f")" >&2; done
