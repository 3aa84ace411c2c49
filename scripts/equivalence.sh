#!/usr/bin/env bash
# One recording, scored by the reliability detector several ways; prints recall, false-positive
# rate and alert precision side by side (and the incident ids shared with the offline run):
#   offline (--from-file) | kafka1: Kafka, 1 partition | kafka6: 6 partitions from a full
#   backlog | kafka6-kill: 6 partitions, kill -9 once half is committed, restart from the
#   checkpoint (EQ_CHECKPOINT_S, default 10 s) | kafka6-noalign: 6 partitions with --no-align
#   bash scripts/equivalence.sh RECORDING.jsonl [LABELS.jsonl]
# Make a held-out recording with, e.g.:
#   python -m producers.synthetic --nodes 30 --links 2 --interval 10 --incident-rate 0.5 \
#     --count 240000 --seed 7 --rate 0 --output .cache/heldout/s7.jsonl
# Kafka runs produce the file's lines in file order (EQ_PRODUCER=replay: producers.replay, which
# sends in event-time order across nodes: a different order than the file's).
# Environment: EQ_ARGS extra flags for consumers.reliability (default "--warmup-s 1800"),
# EQ_MODES (default "offline kafka1 kafka6 kafka6-kill kafka6-noalign"), DWCP_BACKEND (confluent).
# Output: .cache/equivalence/<run>/<mode>.json (summaries) and table.md.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
recording=${1:?usage: bash scripts/equivalence.sh RECORDING.jsonl [LABELS.jsonl]}
labels=${2:-${recording%.jsonl}.labels.jsonl}
modes=${EQ_MODES:-offline kafka1 kafka6 kafka6-kill kafka6-noalign}
read -r -a extra <<<"${EQ_ARGS:---warmup-s 1800}"
export DWCP_BACKEND=${DWCP_BACKEND:-confluent}
run="eq-$(date -u +%Y%m%dT%H%M%S)-$$"
out="$root/.cache/equivalence/$run"
mkdir -p "$out"
bash scripts/setup.sh
py="$root/.venv/bin/python"

started=0
case "$(bash scripts/kafka-local.sh status || true)" in
  running*|*"not started by this script"*) ;;
  *) bash scripts/kafka-local.sh start; started=1 ;;
esac
cleanup() { if [ "$started" = 1 ]; then bash scripts/kafka-local.sh stop || true; fi; }
trap cleanup EXIT

rel=("$py" -m consumers.reliability --labels "$labels" "${extra[@]}" --interval 30)
for mode in $modes; do
  t0=$(date +%s)
  case "$mode" in
    offline)
      "${rel[@]}" --from-file "$recording" --summary "$out/$mode.json" --output-dir "$out/$mode" \
        >"$out/$mode.log" 2>&1 ;;
    kafka1|kafka6|kafka6-noalign|kafka6-kill)
      parts=6; flags=()
      [ "$mode" = kafka1 ] && parts=1
      [ "$mode" = kafka6-noalign ] && flags=(--no-align)
      prefix="$run-$mode."
      DWCP_TOPIC_PREFIX=$prefix "$py" -m stream.topics create --partitions "$parts" >/dev/null
      if [ "${EQ_PRODUCER:-file}" = replay ]; then
        DWCP_TOPIC_PREFIX=$prefix "$py" -m producers.replay "$recording" --no-labels --speed max \
          --progress-interval 0 >"$out/$mode.replay.log" 2>&1
      else  # the file's own order, keyed by node: the same records in the same order per node
        DWCP_TOPIC_PREFIX=$prefix "$py" - "$recording" <<'PY'
import os, sys
import orjson
from stream.files import open_recording
from stream.kafka import make_producer
from stream.settings import Settings
settings = Settings.from_env(os.environ)
topic = settings.topic("telemetry")
with make_producer(settings) as producer, open_recording(sys.argv[1]) as f:
    for line in f:
        if line.strip():
            producer.produce(topic, line.rstrip(b"\n"), orjson.loads(line)["node_id"].encode())
    producer.flush(120)
PY
      fi
      if [ "$mode" = kafka6-kill ]; then  # kill -9 once half is committed, then restart
        kill_args=(--from-beginning --group-id "$run-$mode" --state-dir "$out/$mode.state"
                   --checkpoint-interval "${EQ_CHECKPOINT_S:-10}")
        DWCP_TOPIC_PREFIX=$prefix "${rel[@]}" "${kill_args[@]}" >"$out/$mode.first.log" 2>&1 &
        pid=$!
        DWCP_TOPIC_PREFIX=$prefix "$py" - "$run-$mode" "$recording" "$pid" <<'PY'
import os, sys, time
from stream.files import open_recording
from stream.kafka import make_admin
from stream.settings import Settings
group, recording, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open_recording(recording) as f:
    half = sum(1 for line in f if line.strip()) // 2
settings = Settings.from_env(os.environ)
with make_admin(settings) as admin:
    while sum(admin.group_offsets(group, settings.topic("telemetry")).values()) < half:
        os.kill(pid, 0)  # raises if the first run died
        time.sleep(0.2)
    print(f"equivalence: kill -9 at {sum(admin.group_offsets(group, settings.topic('telemetry')).values()):,d} committed records", file=sys.stderr)
PY
        kill -9 "$pid"; wait "$pid" 2>/dev/null || true
        DWCP_TOPIC_PREFIX=$prefix "${rel[@]}" "${kill_args[@]}" --idle-timeout 15 \
          --summary "$out/$mode.json" >"$out/$mode.log" 2>&1
      else
        DWCP_TOPIC_PREFIX=$prefix "${rel[@]}" --from-beginning --idle-timeout 15 --no-checkpoint \
          --summary "$out/$mode.json" "${flags[@]}" >"$out/$mode.log" 2>&1
      fi
      DWCP_TOPIC_PREFIX=$prefix "$py" -m stream.topics delete --yes >/dev/null 2>&1 || true ;;
    *) echo "equivalence: unknown mode $mode" >&2; exit 2 ;;
  esac
  echo "equivalence: $mode done in $(( $(date +%s) - t0 ))s" >&2
done

"$py" - "$out" $modes <<'EOF'
import json, sys
from pathlib import Path
out, modes = Path(sys.argv[1]), sys.argv[2:]
rows = ["| mode | recall | false-positive rate | alert precision | alert incidents | same incident ids as the first mode | late records |",
        "|---|---:|---:|---:|---:|---:|---:|"]
first = None
for m in modes:
    doc = json.loads((out / f"{m}.json").read_text())
    rel = doc["reliability"]
    o = rel["evaluation"]["overall"]
    ids = set(rel.get("incident_ids", []))
    first = ids if first is None else first
    same = len(ids & first) / max(len(ids | first), 1)
    late = doc["loop"].get("late_records", "")
    rows.append(f"| {m} | {o['recall']:.1%} | {o['fpr']:.2%} | {o['precision']:.1%} | {o['alert_incidents']} | {same:.1%} | {late} |")
table = "\n".join(rows)
(out / "table.md").write_text(table + "\n")
print(table)
EOF
