#!/usr/bin/env bash
# One recording, scored by the reliability detector several ways; prints recall, false-positive
# rate and alert precision side by side (and the incident ids shared with the offline run):
#   offline (--from-file) | kafka1: Kafka, 1 partition | kafka6: 6 partitions from a full
#   backlog | kafka6-kill: 6 partitions, kill -9 once half is committed, restart from the
#   checkpoint (EQ_CHECKPOINT_S, default 10 s) | kafka6-noalign: 6 partitions with --no-align |
#   kafka6-members: 6 partitions, two members of one group (needs --state-shards in EQ_ARGS):
#   the first reads the first half alone, the second joins (a rebalance: state moves with its
#   partitions), then the second half is produced and both read it; evaluated from the
#   shards' final checkpoints
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
# produce_lines FROM TO: the recording's non-empty lines [FROM, TO) (fractions of the whole) in
# file order, keyed by node: the same records in the same order per node
produce_lines() {
  "$py" - "$recording" "$1" "$2" <<'PY'
import os, sys
from datetime import datetime, timezone
import orjson
from stream.files import open_recording
from stream.kafka import make_producer
from stream.settings import Settings
settings = Settings.from_env(os.environ)
topic = settings.topic("telemetry")
with open_recording(sys.argv[1]) as f:
    lines = [line.rstrip(b"\n") for line in f if line.strip()]
def cut(frac: float) -> int:
    """The first line at or after frac of the lines where every later record is no older than
    every earlier one: a cut inside an interval would make the rest arrive late."""
    i = round(frac * len(lines))
    if i in (0, len(lines)):
        return i
    ts = [datetime.fromisoformat(orjson.loads(line)["timestamp"].replace("Z", "+00:00"))
          for line in lines]
    low = [datetime.max.replace(tzinfo=timezone.utc)] * (len(ts) + 1)
    for j in range(len(ts) - 1, -1, -1):
        low[j] = min(ts[j], low[j + 1])
    high = max(ts[:i])
    while i < len(ts) and low[i] <= high:
        high = max(high, ts[i])
        i += 1
    return i
lo, hi = (cut(float(x)) for x in sys.argv[2:4])
with make_producer(settings) as producer:
    for line in lines[lo:hi]:
        producer.produce(topic, line, orjson.loads(line)["node_id"].encode())
    producer.flush(120)
print(hi - lo)
PY
}
# wait_committed GROUP N PID...: until the group has committed N records (a member must live)
wait_committed() {
  local group=$1 n=$2; shift 2
  "$py" - "$group" "$n" "$@" <<'PY'
import os, sys, time
from stream.kafka import make_admin
from stream.settings import Settings
group, n, pids = sys.argv[1], int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
settings = Settings.from_env(os.environ)
topic = settings.topic("telemetry")
with make_admin(settings) as admin:
    while sum(admin.group_offsets(group, topic).values()) < n:
        for pid in pids:
            os.kill(pid, 0)  # raises if a member died
        time.sleep(0.2)
PY
}
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
        DWCP_TOPIC_PREFIX=$prefix produce_lines 0 1 >/dev/null
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
    kafka6-members)
      prefix="$run-$mode."; group="$run-$mode"
      export DWCP_TOPIC_PREFIX=$prefix
      "$py" -m stream.topics create --partitions 6 >/dev/null
      member=(--from-beginning --group-id "$group" --state-dir "$out/$mode.state"
              --checkpoint-interval "${EQ_CHECKPOINT_S:-10}")
      first=$(produce_lines 0 0.5)
      "${rel[@]}" "${member[@]}" >"$out/$mode.a.log" 2>&1 &
      a=$!
      wait_committed "$group" "$first" "$a"
      "${rel[@]}" "${member[@]}" >"$out/$mode.b.log" 2>&1 &
      b=$!
      until grep -q "restored from checkpoint" "$out/$mode.b.log"; do  # b took over shards
        kill -0 "$b"; sleep 0.5
      done
      echo "equivalence: second member joined after $first records; producing the rest" >&2
      rest=$(produce_lines 0.5 1)
      wait_committed "$group" "$(( first + rest ))" "$a" "$b"
      kill -TERM "$a" "$b"; wait "$a" "$b"
      # every shard's final checkpoint holds its whole evaluation: score them together
      : >"$out/$mode.empty.jsonl"
      "${rel[@]}" --from-file "$out/$mode.empty.jsonl" --with-state --group-id "$group" \
        --state-dir "$out/$mode.state" --summary "$out/$mode.json" >"$out/$mode.log" 2>&1
      "$py" -m stream.topics delete --yes >/dev/null 2>&1 || true
      unset DWCP_TOPIC_PREFIX ;;
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
