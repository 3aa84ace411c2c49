"""The reliability detector on real server telemetry (ASD), side by side with the baselines a
user would try first, in one run.

    python bench/bench_asd.py                 # offline: --learn-from the train split, score the test split
    python bench/bench_asd.py --kafka         # and the same through the local broker (replay -> Kafka -> detector)

**Data** (``data/real/asd/``, see ``data/real/README.md``): 12 application servers x 19
metrics at 5-minute steps, a 30-day train split and a 15-day test split with expert-labelled
anomaly segments. All servers are one fleet for our detector (each server a node, the metrics
read as ``extra.m01..m19``), as a deployment would run it: one process, per-node baselines,
fleet-wide trees, forest and calibration.

**Ours**: ``consumers.reliability --learn-from train.csv --from-file test.csv --extra 'm*'``:
the train split is learned as a stream (outputs dropped, incidents reset), then the test split
is scored causally, one record after another, learning as it goes. Its threshold is the
detector's own (0.995: a quantile among the records it took as normal), chosen **without the
labels**; its alert events are its incidents (open .. last alert).

**Baselines**, per server: IsolationForest (100 trees) and PCA reconstruction error (95% of
the variance, standardised) fitted on the train split; river HalfSpaceTrees alone (10 trees,
height 8, window 250), learning the train split then scoring and learning the test split. Their
label-free threshold: a score's rank among the same server's train-split scores, flagged at
0.995 or more (the rule ours follows); their alert events come from the same incident tracker
ours uses (open after 2 flagged samples, resolve after 60 s quiet).

Printed per method: point-wise precision / recall / F1 without point adjust at the label-free
threshold, the best F1 over all thresholds (chosen with the labels: an optimistic bound, the
figure the issue's baselines quote), segment recall (a labelled segment overlapped by an alert
event) and alert precision (events overlapping a segment). Results: ``bench/results/asd.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.alerting import IncidentTracker  # noqa: E402
from models.evaluation.points import (  # noqa: E402
    best_f1,
    event_precision,
    point_scores,
    segment_recall,
)
from models.reliability.detector import DETECTORS as COMPONENTS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "real" / "asd"
OUT = ROOT / "bench" / "results" / "asd.json"
THRESHOLD = 0.995
METRICS = [f"m{i:02d}" for i in range(1, 20)]


# -- data ----------------------------------------------------------------------------------------
def load(
    data: Path, servers: list[str] | None
) -> tuple[dict[str, pd.DataFrame], list[dict[str, Any]]]:
    files = sorted(data.glob("omi-*.csv.gz"), key=lambda p: int(p.name.split("-")[1].split(".")[0]))
    if not files:
        raise SystemExit(f"no omi-*.csv.gz under {data} (see data/real/README.md)")
    frames = {}
    for f in files:
        name = f.name.removesuffix(".csv.gz")
        if servers and name not in servers:
            continue
        df = pd.read_csv(f)
        df["t"] = pd.to_datetime(df["timestamp"], utc=True)
        frames[name] = df
    labels = [json.loads(line) for line in (data / "labels.jsonl").read_text().splitlines() if line]
    labels = [lab for lab in labels if lab["node_id"] in frames]
    return frames, labels


def write_splits(frames: dict[str, pd.DataFrame], work: Path) -> tuple[Path, Path]:
    """One fleet: every server's train rows in one CSV, test rows in another, by event time."""
    paths = []
    for split in ("train", "test"):
        rows = pd.concat([df[df["split"] == split] for df in frames.values()])
        rows = rows.sort_values(["t", "node_id"], kind="stable")
        path = work / f"{split}.csv"
        rows[["timestamp", "node_id", *METRICS]].to_csv(path, index=False)
        paths.append(path)
    return paths[0], paths[1]


def segments(labels: list[dict[str, Any]]) -> dict[str, list[tuple[dt.datetime, dt.datetime]]]:
    out: dict[str, list[tuple[dt.datetime, dt.datetime]]] = defaultdict(list)
    for lab in labels:
        out[lab["node_id"]].append((_ts(lab["start"]), _ts(lab["end"])))
    return out


def _ts(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


# -- ours ----------------------------------------------------------------------------------------
def ours_offline(
    train: Path, test: Path, work: Path, extra: list[str]
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    from consumers.reliability import ReliabilityProcessor
    from stream.app import App

    out = work / "offline"
    argv = [
        "--from-file", str(test), "--learn-from", str(train), "--extra", "m*",
        "--output-dir", str(out), "--scores-output", str(out / "scores.csv"), "--interval", "30",
        *extra,
    ]  # fmt: skip
    App([ReliabilityProcessor], argv, environ={}).run(install_signals=False)
    alerts = [
        orjson.loads(x) for f in out.glob("*alerts.jsonl") for x in f.read_bytes().splitlines()
    ]
    return pd.read_csv(out / "scores.csv"), alerts


def ours_kafka(
    train: Path, test: Path, work: Path, extra: list[str]
) -> tuple[pd.DataFrame, list[dict[str, Any]], float]:
    """replay -> Kafka (6 partitions) -> consumers.reliability -> alerts topic, read back."""
    from consumers.report_inputs import from_kafka
    from stream.settings import Settings

    prefix = f"asd-{uuid.uuid4().hex[:8]}."
    env = dict(os.environ, DWCP_TOPIC_PREFIX=prefix, DWCP_STATE_DIR=str(work / "state"))
    py = sys.executable
    run = lambda *cmd: subprocess.run([py, "-m", *cmd], env=env, check=True, cwd=ROOT)  # noqa: E731
    t0 = time.monotonic()
    run("stream.topics", "create")
    try:
        run("producers.replay", str(test), "--speed", "max", "--extra", "m*", "--no-labels")
        scores = work / "kafka-scores.csv"
        run(
            "consumers.reliability", "--from-beginning", "--idle-timeout", "15",
            "--learn-from", str(train), "--extra", "m*", "--scores-output", str(scores),
            "--param", "background=false", "--interval", "30", *extra,
        )  # fmt: skip
        seconds = time.monotonic() - t0
        settings = Settings.from_env(env)
        alerts = [
            orjson.loads(orjson.dumps(a, default=_struct)) for a in from_kafka(settings).alerts
        ]
    finally:
        run("stream.topics", "delete", "--yes")
    return pd.read_csv(scores), alerts, seconds


def _struct(obj: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(obj)


def alert_events(alerts: list[dict[str, Any]]) -> dict[str, list[tuple[dt.datetime, dt.datetime]]]:
    spans: dict[str, list[Any]] = {}
    for a in alerts:
        t = _ts(a["event_time"])
        span = spans.setdefault(a["incident_id"], [a["node_id"], _ts(a["opened_at"]), t])
        span[2] = max(span[2], t)
    out: dict[str, list[tuple[dt.datetime, dt.datetime]]] = defaultdict(list)
    for node, start, end in spans.values():
        out[node].append((start, end))
    return out


# -- baselines -----------------------------------------------------------------------------------
def baseline_scores(df: pd.DataFrame, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (train scores, test scores)}``, higher = more anomalous."""
    from river.anomaly import HalfSpaceTrees
    from sklearn.decomposition import PCA
    from sklearn.ensemble import IsolationForest
    from sklearn.preprocessing import StandardScaler

    tr = df[df["split"] == "train"][METRICS].to_numpy(float)
    te = df[df["split"] == "test"][METRICS].to_numpy(float)
    out = {}
    forest = IsolationForest(n_estimators=100, random_state=seed).fit(tr)
    out["IsolationForest"] = (-forest.score_samples(tr), -forest.score_samples(te))
    scaler = StandardScaler().fit(tr)
    ztr, zte = scaler.transform(tr), scaler.transform(te)
    pca = PCA(n_components=0.95, random_state=seed).fit(ztr)
    err = lambda z: np.sum((z - pca.inverse_transform(pca.transform(z))) ** 2, axis=1)  # noqa: E731
    out["PCA reconstruction"] = (err(ztr), err(zte))
    hst = HalfSpaceTrees(n_trees=10, height=8, window_size=250, seed=seed)
    scores = []
    for row in np.clip(np.vstack([tr, te]), 0.0, 1.0):
        x = dict(zip(METRICS, row, strict=True))
        scores.append(hst.score_one(x))
        hst.learn_one(x)
    s = np.array(scores)
    out["river HalfSpaceTrees"] = (s[250 : len(tr)], s[len(tr) :])  # the first window is cold
    return out


def train_rank(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Each test score's mid-rank among the train scores, in [0, 1] (label-free calibration)."""
    s = np.sort(train)
    lo = np.searchsorted(s, test, side="left")
    hi = np.searchsorted(s, test, side="right")
    return 0.5 * (lo + hi) / s.size


def tracker_events(
    node: str, times: list[dt.datetime], u: np.ndarray
) -> list[tuple[dt.datetime, dt.datetime]]:
    tracker = IncidentTracker(node, open_after=2, hysteresis=0.97, resolve_after_s=60.0)
    alerts = []
    for t, x in zip(times, u, strict=True):
        alerts += tracker.observe(node, t, float(x), THRESHOLD)
    return alert_events([orjson.loads(orjson.dumps(a, default=_struct)) for a in alerts])[node]


# -- scoring -------------------------------------------------------------------------------------
def summarize(
    y: np.ndarray, flags: np.ndarray, scores: np.ndarray, segs: Any, events: Any
) -> dict[str, Any]:
    p = point_scores(y, flags)
    b = best_f1(y, scores)
    return {
        "point_precision": round(p["precision"], 4),
        "point_recall": round(p["recall"], 4),
        "point_f1": round(p["f1"], 4),
        "best_f1_with_labels": round(b["f1"], 4),
        "segment_recall": round(segment_recall(segs, events), 4),
        "alert_precision": round(event_precision(segs, events), 4),
        "alert_events": sum(len(v) for v in events.values()),
        "flagged_points": p["flagged"],
    }


def ours_result(
    frames: dict[str, pd.DataFrame], scores: pd.DataFrame, alerts: list[dict[str, Any]], segs: Any
) -> dict[str, Any]:
    test = pd.concat([df[df["split"] == "test"] for df in frames.values()])
    scores = scores.assign(t=pd.to_datetime(scores["timestamp"], utc=True))
    parts = [c for c in COMPONENTS if c in scores.columns]
    merged = test.merge(
        scores[["node_id", "t", "score", "flagged", *parts]], on=["node_id", "t"], how="left"
    )
    missing = int(merged["score"].isna().sum())
    if missing:
        raise SystemExit(f"{missing} test rows have no score from the detector")
    res = summarize(
        merged["label"].to_numpy(int),
        merged["flagged"].to_numpy(bool),
        merged["score"].to_numpy(float),
        segs,
        alert_events(alerts),
    )
    # which component ranks the segments (chosen with the labels: a diagnostic, not a result)
    res["component_best_f1"] = {
        c: round(best_f1(merged["label"].to_numpy(int), merged[c].to_numpy(float))["f1"], 4)
        for c in parts
    }
    res["per_server_best_f1"] = {
        node: round(best_f1(g["label"].to_numpy(int), g["score"].to_numpy(float))["f1"], 4)
        for node, g in merged.groupby("node_id")
    }
    return res


def baselines_result(frames: dict[str, pd.DataFrame], segs: Any) -> dict[str, dict[str, Any]]:
    ys: dict[str, list[np.ndarray]] = defaultdict(list)
    flags: dict[str, list[np.ndarray]] = defaultdict(list)
    raw: dict[str, list[np.ndarray]] = defaultdict(list)
    events: dict[str, dict[str, list[Any]]] = defaultdict(dict)
    for node, df in frames.items():
        test = df[df["split"] == "test"]
        times = list(test["t"].dt.to_pydatetime())
        for name, (tr, te) in baseline_scores(df).items():
            u = train_rank(tr, te)
            ys[name].append(test["label"].to_numpy(int))
            flags[name].append(u >= THRESHOLD)
            raw[name].append(u)  # the rank keeps each server's order; best F1 over pooled ranks
            events[name][node] = tracker_events(node, times, u)
    return {
        name: summarize(
            np.concatenate(ys[name]),
            np.concatenate(flags[name]),
            np.concatenate(raw[name]),
            segs,
            events[name],
        )
        for name in ys
    }


def print_table(title: str, rows: dict[str, dict[str, Any]]) -> None:
    print(f"\n{title}")
    cols = [
        "point_precision",
        "point_recall",
        "point_f1",
        "best_f1_with_labels",
        "segment_recall",
        "alert_precision",
        "alert_events",
    ]
    print(f"{'method':<24}" + "".join(f"{c.replace('_', ' '):>21}" for c in cols))
    for name, r in rows.items():
        print(f"{name:<24}" + "".join(f"{r[c]:>21}" for c in cols))
    for name, r in rows.items():
        if r.get("component_best_f1"):
            parts = ", ".join(f"{c} {v}" for c, v in r["component_best_f1"].items())
            print(f"{name}: best F1 (labels) of each component alone: {parts}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA), help="folder of omi-N.csv.gz and labels.jsonl")
    p.add_argument("--servers", help="comma-separated subset, e.g. omi-1,omi-2 (default all 12)")
    p.add_argument(
        "--kafka", action="store_true", help="also through the local broker (it must be running)"
    )
    p.add_argument(
        "--arg", action="append", default=[], help="extra flag for our detector (repeatable)"
    )
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--tag", default="", help="suffix of the result section's name")
    args = p.parse_args(argv)
    frames, labels = load(Path(args.data), args.servers.split(",") if args.servers else None)
    segs = segments(labels)
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="asd-") as tmp:
        work = Path(tmp)
        train, test = write_splits(frames, work)
        t0 = time.monotonic()
        scores, alerts = ours_offline(train, test, work, args.arg)
        rows["ours, offline"] = ours_result(frames, scores, alerts, segs)
        rows["ours, offline"]["seconds"] = round(time.monotonic() - t0, 1)
        if args.kafka:
            kscores, kalerts, secs = ours_kafka(train, test, work, args.arg)
            rows["ours, through Kafka"] = ours_result(frames, kscores, kalerts, segs)
            rows["ours, through Kafka"]["seconds"] = round(secs, 1)
            same = {a["incident_id"] for a in kalerts} == {a["incident_id"] for a in alerts}
            rows["ours, through Kafka"]["same_incidents_as_offline"] = same
    rows.update(baselines_result(frames, segs))
    print_table(
        f"ASD test split, {len(frames)} servers, {sum(len(v) for v in segs.values())} segments",
        rows,
    )
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {}
    doc[f"asd{args.tag}"] = {
        "command": "python bench/bench_asd.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": dt.datetime.now(dt.UTC).date().isoformat(),
        "servers": len(frames),
        "segments": sum(len(v) for v in segs.values()),
        "results": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
