"""The peer a user would write instead: a minimal Quix Streams app doing HST scoring (not a test).

Run by ``bench/bench_capacity.py`` with the Python of its own environment
(``.cache/bench/quix-venv``, Quix Streams and river installed there, never as a project
dependency). It reads the telemetry topic from the beginning in a new consumer group, scores
every record with river's MinMaxScaler + HalfSpaceTrees (the bare loop of
``bench/bench_reliability.py``: the schema's numeric fields, 10 trees of height 8, window 250), produces an
alert to the output topic when the score passes the threshold, and stops after ``--records``
records. It prints one JSON line: records, seconds from the first record to the last, alerts.

    .cache/bench/quix-venv/bin/python bench/quix_hst_app.py --broker 127.0.0.1:9092 \\
        --topic T --output T.alerts --records 100000
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

from quixstreams import Application
from river.anomaly import HalfSpaceTrees
from river.preprocessing import MinMaxScaler


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--broker", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--records", type=int, required=True)
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--fields", required=True, help="comma-separated numeric fields to score")
    a = ap.parse_args()
    app = Application(
        broker_address=a.broker,
        consumer_group=f"bench-quix-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        auto_create_topics=True,
    )
    source = app.topic(a.topic, value_deserializer="json")
    sink = app.topic(a.output, value_serializer="json")
    scaler = MinMaxScaler()
    hst = HalfSpaceTrees(n_trees=10, height=8, window_size=250, seed=0)
    fields = a.fields.split(",")
    seen = {"n": 0, "first": 0.0, "last": 0.0, "alerts": 0}

    def score(rec: dict) -> dict | None:
        if not seen["n"]:
            seen["first"] = time.perf_counter()
        seen["n"] += 1
        seen["last"] = time.perf_counter()
        if seen["n"] >= a.records:
            app.stop()
        x = {k: float(rec[k]) for k in fields if isinstance(rec.get(k), (int, float))}
        scaler.learn_one(x)
        x = scaler.transform_one(x)
        s = hst.score_one(x)
        hst.learn_one(x)
        if s < a.threshold:
            return None
        seen["alerts"] += 1
        return {"node_id": rec.get("node_id"), "event_time": rec.get("timestamp"), "score": s}

    sdf = app.dataframe(source)
    sdf = sdf.apply(score).filter(lambda v: v is not None)
    sdf.to_topic(sink)
    app.run()
    secs = seen["last"] - seen["first"]
    print(json.dumps({"records": seen["n"], "seconds": round(secs, 3), "alerts": seen["alerts"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
