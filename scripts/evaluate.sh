#!/usr/bin/env bash
# The end-to-end evaluation: replay the recorded-incident library through the local broker, run
# every detector/forecaster consumer that exists until it has caught up, write the report.
#   bash scripts/evaluate.sh [RECORDING]      (default data/incidents/fleet.jsonl.gz)
# Output: reports/pipeline/report.{json,md} + plots/, and docs/model-cards/*.generated.md.
# Each run uses its own topics (prefix eval-<time>-<pid>.), consumer groups and state folder,
# so it never mixes with another run or the demo; the topics are deleted at the end unless
# EVAL_KEEP_TOPICS=1. Environment: EVAL_OUT (reports/pipeline), EVAL_IDLE (consumers stop after
# this many seconds without new records, 20), EVAL_MAX_SECONDS (hard limit per consumer, 1500),
# EVAL_ARGS extra flags of the one-process run (default: every fit inline, see below, and
# "--bandwidth.warmup-windows 1400"), EVAL_SEPARATE=1 one process per consumer with
# EVAL_<NAME>_ARGS (the same defaults per consumer). The library's 20 links x 2000 samples never
# reach bandwidth's default 20000 warm-up windows, and the backlog arrives partition by
# partition, at most 467 windows per link before the first fit, so a larger warm-up leaves the
# links read before it without forecasts. Fits run inline here (--sync-retrain, --sync-train,
# --param background=false): live, the first fits run beside the loop and the records read
# while they run are passed through unscored, which on a backlog read at full speed is most of
# it; the evaluation measures the models, and gives the same figures every run.
# DWCP_BACKEND (confluent). Logs: .cache/evaluate/<run>/*.log
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
recording=${1:-data/incidents/fleet.jsonl.gz}
out=${EVAL_OUT:-reports/pipeline}
idle=${EVAL_IDLE:-20}
max_seconds=${EVAL_MAX_SECONDS:-1500}
run="eval-$(date -u +%Y%m%dT%H%M%S)-$$"
logs="$root/.cache/evaluate/$run"
mkdir -p "$logs"
export DWCP_BACKEND=${DWCP_BACKEND:-confluent}
export DWCP_TOPIC_PREFIX="$run."
# No DWCP_GROUP_ID: every consumer keeps its own group (dwcp-<name>); the topics are this run's.
export DWCP_STATE_DIR="$logs/state"
EVAL_RELIABILITY_ARGS=${EVAL_RELIABILITY_ARGS:---param background=false}
EVAL_CONSENSUS_ARGS=${EVAL_CONSENSUS_ARGS:---sync-retrain}
EVAL_BANDWIDTH_ARGS=${EVAL_BANDWIDTH_ARGS:---warmup-windows 1400 --sync-retrain}
EVAL_COMPRESSION_ARGS=${EVAL_COMPRESSION_ARGS:---sync-train}
default_args="--reliability.param background=false --consensus.sync-retrain"
default_args+=" --bandwidth.warmup-windows 1400 --bandwidth.sync-retrain --compression.sync-train"

bash scripts/setup.sh
py="$root/.venv/bin/python"

started=0
case "$(bash scripts/kafka-local.sh status || true)" in
  running*) echo "evaluate: reusing the running local broker" >&2 ;;
  *"not started by this script"*) echo "evaluate: reusing a broker this script did not start" >&2 ;;
  *) bash scripts/kafka-local.sh start; started=1 ;;
esac

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${EVAL_KEEP_TOPICS:-0}" != 1 ]; then
    "$py" -m stream.topics delete --yes >/dev/null || true
  fi
  if [ "$started" = 1 ]; then bash scripts/kafka-local.sh stop || true; fi
}
trap cleanup EXIT

echo "evaluate: run $run, topics $DWCP_TOPIC_PREFIX*, backend $DWCP_BACKEND, logs .cache/evaluate/$run/" >&2
"$py" -m stream.topics create >/dev/null
"$py" -m producers.replay "$recording" --speed max --progress-interval 5 2>&1 | tee "$logs/replay.log" >&2

# Every processor from the first record until idle (caught up): by default in one process
# (python -m consumers run ...: one group, one decode per record), flags from EVAL_ARGS; with
# EVAL_SEPARATE=1 one process per consumer, each in its own group, flags from EVAL_<NAME>_ARGS.
consumers=(reliability consensus bandwidth compression)
echo "evaluate: running ${consumers[*]} until idle for ${idle}s" >&2
t0=$(date +%s)
if [ "${EVAL_SEPARATE:-0}" = 1 ]; then
  for name in "${consumers[@]}"; do
    var="EVAL_${name^^}_ARGS"
    # shellcheck disable=SC2086
    "$py" -m "consumers.$name" --from-beginning --idle-timeout "$idle" --max-seconds "$max_seconds" \
      ${!var:-} >"$logs/$name.log" 2>&1 &
    pids+=("$!")
  done
else
  # shellcheck disable=SC2086
  "$py" -m consumers run "${consumers[@]}" --from-beginning --idle-timeout "$idle" \
    --max-seconds "$max_seconds" ${EVAL_ARGS:-$default_args} \
    >"$logs/pipeline.log" 2>&1 &
  pids+=("$!")
  consumers=(pipeline)
fi
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "evaluate: ${consumers[$i]} failed; see .cache/evaluate/$run/${consumers[$i]}.log" >&2
    tail -n 5 "$logs/${consumers[$i]}.log" >&2 || true
    status=1
  fi
done
pids=()
echo "evaluate: consumers done in $(( $(date +%s) - t0 ))s" >&2
for name in "${consumers[@]}"; do printf '  %s: %s\n' "$name" "$(tail -n 1 "$logs/$name.log")" >&2; done

# Timelines: one PNG per incident is ~30 KB; EVAL_TIMELINES caps them (0 = all) to keep the repo lean.
"$py" -m consumers.evaluate --out "$out" --command "bash scripts/evaluate.sh${1:+ $1}" \
  --max-timelines "${EVAL_TIMELINES:-12}" --title "Pipeline evaluation on $(basename "$recording")"
"$py" -m consumers.report_cards --report "$out/report.json" --out docs/model-cards
exit "$status"
