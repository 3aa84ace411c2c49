#!/usr/bin/env bash
# The set-up-and-run command: install, start the local broker, run the synthetic fleet and the
# consumers for a bounded time while the monitor shows what flows live, then stop cleanly.
#   bash scripts/demo.sh [SECONDS]          (default 60)
# Environment: DEMO_NODES (20) x 4 links, DEMO_INTERVAL seconds of event time between samples of
# a link (5), DEMO_SPEEDUP simulated-time speed-up (50: a 60 s demo covers 50 minutes of fleet
# time), so 20 x 4 / 5 x 50 = 800 events/s; DEMO_RATE caps events/s (2000); DWCP_BACKEND
# (confluent); DEMO_INCIDENT_RATE incidents per node per simulated hour (1); DEMO_BAD_RATE fraction
# of malformed records (0.001). The default fleet is one every consumer keeps up with on 2 cores
# (the monitor line shows each one's lag); DEMO_WARMUP_WINDOWS (3000) shortens the LSTM consumers'
# warm-up so that forecasts and consensus scores start within the demo (their defaults, 20,000
# and 8,000 windows, take minutes at this rate); DEMO_SEPARATE=1 one process per consumer.
# DEMO_METRICS=1: every process serves Prometheus metrics (ports from 9108), Debian's prometheus
# (installed by scripts/test.sh) scrapes them on 127.0.0.1:${DEMO_PROMETHEUS_PORT:-9090}, and the
# dashboard's panels are rendered at the end to .cache/demo/dashboard.png
# (scripts/render_dashboard.py).
# Logs of every process: .cache/demo/*.log
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
seconds=${1:-60}
rate=${DEMO_RATE:-2000}
nodes=${DEMO_NODES:-20}
speedup=${DEMO_SPEEDUP:-50}
interval=${DEMO_INTERVAL:-5}
export DWCP_BACKEND=${DWCP_BACKEND:-confluent}
# Each run gets its own topics, so a new run never re-reads an old one; every consumer has its
# own group (dwcp-<name>); model state (checkpoints) is kept across runs in .cache/demo/state,
# so the second run starts warm.
run="demo-$(date -u +%Y%m%dT%H%M%S)"
export DWCP_TOPIC_PREFIX=${DWCP_TOPIC_PREFIX:-$run.}
logs="$root/.cache/demo"
export DWCP_STATE_DIR=${DWCP_STATE_DIR:-$logs/state}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
mkdir -p "$logs"
rm -f "$logs"/*.log

bash scripts/setup.sh
py="$root/.venv/bin/python"

started=0
case "$(bash scripts/kafka-local.sh status || true)" in
  running*) echo "demo: reusing the running local broker" >&2 ;;
  *) bash scripts/kafka-local.sh start; started=1 ;;
esac

pids=()
consumers=()  # the consumer processes: each must still be running when the demo ends
metrics=${DEMO_METRICS:-0}
next_port=9108
scrape=()  # "job port" pairs for prometheus
mflag=()
metrics_flag() {  # mflag: --metrics-port for the next process (JOB), remembered for prometheus
  mflag=()
  if [ "$metrics" = 1 ]; then
    scrape+=("$1 $next_port")
    mflag=(--metrics-port "$next_port" --metrics-host 127.0.0.1)
    next_port=$((next_port + 1))
  fi
}
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${DEMO_KEEP_TOPICS:-0}" != 1 ] && [ "${#pids[@]}" -gt 0 ]; then
    "$py" -m stream.topics delete --yes >/dev/null 2>&1 || true
  fi
  if [ "$started" = 1 ]; then bash scripts/kafka-local.sh stop || true; fi
}
trap cleanup EXIT

"$py" -m stream.topics create

# Consumers first, so they are in their group before the first event; then the fleet. By default
# one process runs every processor (python -m consumers run ...: one poll and one validation per
# record, one dead letter per bad record); DEMO_SEPARATE=1 runs one process per consumer instead.
processors=(reliability consensus bandwidth compression)
warmup=${DEMO_WARMUP_WINDOWS:-3000}
if [ "${DEMO_SEPARATE:-0}" = 1 ]; then
  for name in ingest "${processors[@]}"; do
    extra=()
    case "$name" in bandwidth|consensus) extra=(--warmup-windows "$warmup") ;; esac
    metrics_flag "$name"
    "$py" -m "consumers.$name" --from-beginning "${extra[@]}" "${mflag[@]}" \
      >"$logs/$name.log" 2>&1 &
    pids+=("$!"); consumers+=("$!")
    echo "demo: started consumers.$name (log: .cache/demo/$name.log)" >&2
  done
  lag=ingest,$(IFS=,; echo "${processors[*]}")
else
  metrics_flag pipeline
  "$py" -m consumers run "${processors[@]}" --from-beginning \
    --bandwidth.warmup-windows "$warmup" --consensus.warmup-windows "$warmup" \
    "${mflag[@]}" >"$logs/pipeline.log" 2>&1 &
  pids+=("$!"); consumers+=("$!")
  lag=$(IFS=+; echo "${processors[*]}")
  echo "demo: started python -m consumers run ${processors[*]} (log: .cache/demo/pipeline.log)" >&2
fi
# A few incidents per simulated hour and 0.1% malformed records, so alerts and dead letters show.
metrics_flag producer
"$py" -m producers.synthetic --nodes "$nodes" --rate "$rate" --speedup "$speedup" --interval "$interval" --duration "$seconds" \
  --incident-rate "${DEMO_INCIDENT_RATE:-1}" --bad-rate "${DEMO_BAD_RATE:-0.001}" \
  "${mflag[@]}" >"$logs/producer.log" 2>&1 &
pids+=("$!")
echo "demo: fleet of $nodes nodes at $rate events/s for ${seconds}s, backend $DWCP_BACKEND" >&2

if [ "$metrics" = 1 ]; then
  command -v prometheus >/dev/null || { echo "demo: DEMO_METRICS=1 needs prometheus (apt-get install prometheus)" >&2; exit 1; }
  prom_port=${DEMO_PROMETHEUS_PORT:-9090}
  {
    printf 'global:\n  scrape_interval: 2s\nscrape_configs:\n'
    for pair in "${scrape[@]}"; do
      set -- $pair
      printf '  - job_name: %s\n    static_configs: [{targets: ["127.0.0.1:%s"]}]\n' "$1" "$2"
    done
  } >"$logs/prometheus.yml"
  rm -rf "$logs/tsdb"
  prometheus --config.file="$logs/prometheus.yml" --storage.tsdb.path="$logs/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" >"$logs/prometheus.log" 2>&1 &
  pids+=("$!")
  echo "demo: prometheus on http://127.0.0.1:$prom_port scraping ${scrape[*]}" >&2
fi

"$py" -m consumers.monitor --max-seconds "$((seconds + 5))" --lag "$lag"
if [ "$metrics" = 1 ]; then
  "$py" scripts/render_dashboard.py --prometheus "http://127.0.0.1:$prom_port" \
    --minutes "$(( (seconds + 59) / 60 + 1 ))" --out "$logs/dashboard.png" || true
fi

dead=0
for pid in "${consumers[@]}"; do
  if ! kill -0 "$pid" 2>/dev/null; then dead=$((dead + 1)); fi
done
echo "demo: stopping consumers (SIGTERM: finish batch, flush, commit)" >&2
cleanup
pids=()
started=0
echo "demo: last lines of each log:" >&2
for f in "$logs"/*.log; do printf '  %s: %s\n' "$(basename "$f" .log)" "$(tail -n 1 "$f")" >&2; done
if [ "$dead" -gt 0 ]; then
  echo "demo: FAILED: $dead consumer process(es) exited before the end (see their logs above)" >&2
  exit 1
fi
