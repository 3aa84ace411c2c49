"""Bandwidth forecaster on real throughput traces (Pensieve) and on a simulator recording, side
by side: the published ensemble forecast, the LSTM alone and every baseline, per horizon.

    python bench/bench_forecast_traces.py                                    # Pensieve
    python bench/bench_forecast_traces.py --recording .cache/bench/sim-s7.jsonl   # simulator
    python bench/bench_forecast_traces.py --rules ewa,ftl                    # compare rules

**Pensieve** (``data/real/pensieve.csv.gz``, see ``data/real/README.md``): the train split is
streamed first (all traces side by side in their own time; the LSTM warms up and retrains
on it, the ensemble's fleet prior learns from it), then the accuracy is reset and the test
split is streamed the same way: scored *causally*, the forecaster keeps learning online
(retrains, per-link errors) from the test samples it has already seen, never from later ones.
Each trace is a link of its own. Norway samples are irregularly spaced (0.3-1 s apart):
forecasts are **per sample step**, as the issue's reference baselines are (the target of
horizon ``h`` is the ``h``-th next sample, ``step_tolerance=None``), and the LSTM is
*time-aware*: the gap since the previous sample (ms) is one of its inputs (the feature column
the telemetry's RTT uses; jitter and loss are absent). Only test forecasts made once a trace
has a full 30-sample window and scored where every member has a forecast are counted; the
baselines over *all* test samples are printed beside them to check the reference figures.

**Through Kafka** (``--recording R --kafka``; the local broker must run, ``bash
scripts/kafka-local.sh start``): the recording is replayed onto fresh 6-partition topics
(``producers.replay --speed max``), ``python -m consumers.bandwidth`` reads it from the
beginning with the same forecaster settings (every fit inline) and publishes its forecasts and
running accuracy; the table is its final summary (``--summary``), and the last
``bandwidth_accuracy`` record per horizon read back from the predictions topic is kept in the
JSON beside it. The same consumer is also run on the file (``--from-file``): both tables are
printed, and they must be the same answer.

**Simulator** (``--recording``, e.g. ``python -m producers.synthetic --nodes 10 --links 2
--interval 10 --count 60000 --seed 7 --rate 0 --output .cache/bench/sim-s7.jsonl``): the
recording is fed as ``consumers.bandwidth`` reads it offline (every telemetry field, fixed
10 s interval, ``step_tolerance=0.5``), learning online from the first sample; scored from the
LSTM's warm-up on.

Results go to ``bench/results/forecast_traces.json`` (one section per data set and rule).
TensorFlow runs on one thread.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consumers.bandwidth import forecaster_inputs, link_records  # noqa: E402
from models.forecast import tfrt  # noqa: E402
from models.forecast.online import OnlineForecaster  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PENSIEVE = ROOT / "data" / "real" / "pensieve.csv.gz"
OUT = ROOT / "bench" / "results" / "forecast_traces.json"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: event time of every trace's first sample
HORIZONS = (1, 5, 15)
REFERENCE = {  # the baselines on the Pensieve test split, per sample step (Mbit/s)
    1: {"persistence": 0.232, "ewma": 0.274, "harmonic": 0.302},
    5: {"persistence": 0.420, "ewma": 0.392, "harmonic": 0.409},
    15: {"persistence": 0.533, "ewma": 0.492, "harmonic": 0.508},
}


def forecaster(args: argparse.Namespace, rule: str, irregular: bool) -> OnlineForecaster:
    return OnlineForecaster(
        window=30, horizons=HORIZONS, units=32, capacity=512,
        warmup_windows=args.warmup_windows, warmup_epochs=4,
        retrain_every=args.retrain_every, retrain_windows=args.retrain_windows, retrain_epochs=2,
        rule=rule, memory=args.memory, eta=args.eta, prior_strength=args.prior_strength,
        shrink=args.shrink,
        step_tolerance=None if irregular else 0.5, background=False, seed=args.seed,
    )  # fmt: skip


# -- Pensieve ----------------------------------------------------------------------------------
def load_pensieve(path: Path) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``{split: {trace: (t_s, mbps)}}`` in file order."""
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    with gzip.open(path, "rt") as fh:
        header = fh.readline().strip().split(",")
        if header != ["trace", "split", "t_s", "mbps"]:
            raise ValueError(f"{path}: unexpected header {header}")
        for line in fh:
            trace, split, t, v = line.rstrip("\n").split(",")
            out.setdefault(split, {}).setdefault(trace, []).append((float(t), float(v)))
    return {
        s: {k: (np.array([a for a, _ in v]), np.array([b for _, b in v])) for k, v in d.items()}
        for s, d in out.items()
    }


def side_by_side(
    traces: dict[str, tuple[np.ndarray, np.ndarray]], prefix: str
) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray, np.ndarray]:
    """Keys, event times, Mbit/s and gap to the previous sample (ms) of all samples of all
    traces in event-time order (traces side by side)."""
    keys, ts, v, gap = [], [], [], []
    for name, (t, y) in traces.items():
        keys += [(f"{prefix}{name}", "pensieve")] * len(t)
        ts.append(T0 + t)
        v.append(y)
        gap.append(1000.0 * np.diff(t, prepend=t[0] - (t[1] - t[0] if len(t) > 1 else 1.0)))
    ts_, v_, gap_ = (np.concatenate(x) for x in (ts, v, gap))
    order = np.argsort(ts_, kind="stable")
    return [keys[i] for i in order], ts_[order], v_[order], gap_[order]


def feed_pensieve(f: OnlineForecaster, traces: Any, prefix: str, batch: int) -> None:
    keys, ts, v, gap = side_by_side(traces, prefix)
    nan = np.full(len(ts), np.nan)
    for a in range(0, len(ts), batch):
        b = slice(a, a + batch)
        f.process(keys[b], ts[b], v[b], gap[b], nan[b], nan[b])


def baselines_all_samples(traces: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[int, Any]:
    """The three baselines over every test sample (what the issue's reference scores)."""
    from models.forecast.baselines import EWMABaseline, HarmonicBaseline

    errs: dict[int, dict[str, list[np.ndarray]]] = {h: {} for h in HORIZONS}
    for _name, (_t, y) in traces.items():
        rows = np.zeros(len(y), np.int64)
        fc = {
            "persistence": y,
            "ewma": EWMABaseline(0.3).update(rows, y),
            "harmonic": HarmonicBaseline(5).update(rows, y),
        }
        for h in HORIZONS:
            if len(y) > h:
                for k, f in fc.items():
                    errs[h].setdefault(k, []).append(np.abs(f[:-h] - y[h:]))
    return {
        h: {k: round(float(np.concatenate(v).mean()), 4) for k, v in d.items()}
        for h, d in errs.items()
    }


def run_pensieve(args: argparse.Namespace, rule: str) -> dict[str, Any]:
    data = load_pensieve(Path(args.pensieve))
    f = forecaster(args, rule, irregular=True)
    t0 = time.perf_counter()
    feed_pensieve(f, data["train"], "train/", args.batch)
    train = table(f)
    f.accuracy_.reset()
    feed_pensieve(f, data["test"], "test/", args.batch)
    return {
        "data": str(Path(args.pensieve).relative_to(ROOT)),
        "protocol": "train split streamed first (LSTM warm-up and retrains, fleet prior), "
        "accuracy reset, then the test split streamed causally with online learning; per "
        "sample step (target = h-th next sample), LSTM gets the inter-sample gap as an input",
        "rule": rule,
        "seconds": round(time.perf_counter() - t0, 1),
        "records": f.records_,
        "lstm_version": f.version_,
        "retrains": len(f.retrains_),
        "train_split": train,
        "test_split": table(f),
        "test_baselines_all_samples": baselines_all_samples(data["test"]),
        "reference": REFERENCE,
    }


def statistical_members(args: argparse.Namespace) -> dict[str, Any]:
    """river's HoltWinters and SNARIMAX alone, one model per test trace learning online from
    its first sample, scored on the same forecasts as the ensemble (from sample 29 on): their
    MAE per horizon and cost per sample (learn + 15-step forecast), to decide whether they
    are worth an ensemble slot."""
    from river import linear_model, optim, preprocessing, time_series

    def snarimax() -> Any:
        reg = preprocessing.StandardScaler() | linear_model.LinearRegression(
            optimizer=optim.SGD(0.01), intercept_lr=0.1
        )
        return time_series.SNARIMAX(p=3, d=0, q=0, regressor=reg)

    makers = {
        "river HoltWinters(alpha=0.3, beta=0.05)": lambda: time_series.HoltWinters(0.3, 0.05),
        "river SNARIMAX(p=3, d=0, q=0), SGD linear regression": snarimax,
    }
    test = load_pensieve(Path(args.pensieve))["test"]
    out: dict[str, Any] = {}
    for label, make in makers.items():
        errs: dict[int, list[float]] = {h: [] for h in HORIZONS}
        n, t0 = 0, time.perf_counter()
        for _t, y in test.values():
            m = make()
            for i, v in enumerate(y.tolist()):
                m.learn_one(v)
                n += 1
                if i >= 29:
                    f = m.forecast(horizon=max(HORIZONS))
                    for h in HORIZONS:
                        if i + h < len(y):
                            errs[h].append(abs(max(f[h - 1], 0.0) - y[i + h]))
        us = 1e6 * (time.perf_counter() - t0) / n
        out[label] = {"mae": {str(h): round(float(np.mean(e)), 4) for h, e in errs.items()},
                      "us_per_sample": round(us, 1)}  # fmt: skip
        print(f"{label}: MAE {out[label]['mae']}, {us:.0f} us/sample")
    return out


# -- simulator recording -----------------------------------------------------------------------
def run_recording(args: argparse.Namespace, rule: str) -> dict[str, Any]:
    from stream.recordings import decoded_batches

    f = forecaster(args, rule, irregular=False)
    t0 = time.perf_counter()
    for recs in decoded_batches(args.recording, args.batch):
        f.process(*forecaster_inputs(link_records(recs)))
    return {
        "data": str(args.recording),
        "protocol": "online from the first sample, scored from the LSTM warm-up on",
        "rule": rule,
        "seconds": round(time.perf_counter() - t0, 1),
        "records": f.records_,
        "lstm_version": f.version_,
        "retrains": len(f.retrains_),
        "accuracy": table(f),
    }


def consumer_flags(args: argparse.Namespace, rule: str) -> list[str]:
    """``consumers.bandwidth`` flags that give :func:`forecaster`'s settings (fits inline)."""
    return [
        "--warmup-windows", str(args.warmup_windows), "--retrain-every", str(args.retrain_every),
        "--retrain-windows", str(args.retrain_windows), "--retrain-epochs", "2",
        "--ensemble-rule", rule, "--ensemble-memory", str(args.memory),
        "--ensemble-eta", str(args.eta), "--ensemble-shrink", str(args.shrink),
        "--seed", str(args.seed), "--sync-retrain",
        "--accuracy-every", "1000", "--tf-threads", "1",
    ]  # fmt: skip


def run_kafka(args: argparse.Namespace, rule: str) -> dict[str, Any]:
    """replay -> Kafka (6 partitions) -> consumers.bandwidth -> predictions topic, read back;
    and the same consumer on the file."""
    import os
    import shutil
    import subprocess
    import tempfile
    import uuid

    from consumers.report_inputs import from_kafka
    from stream.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="bench-forecast-"))
    prefix = f"fc-{uuid.uuid4().hex[:8]}."
    env = dict(os.environ, DWCP_TOPIC_PREFIX=prefix, DWCP_STATE_DIR=str(work / "state"))
    flags = consumer_flags(args, rule)

    def run(*cmd: str) -> None:
        subprocess.run([sys.executable, "-m", *cmd], env=env, check=True, cwd=ROOT)

    t0 = time.monotonic()
    run("stream.topics", "create", "--partitions", "6")
    try:
        run("producers.replay", str(args.recording), "--speed", "max", "--no-labels",
            "--progress-interval", "0")  # fmt: skip
        run("consumers.bandwidth", "--from-beginning", "--idle-timeout", "15", *flags,
            "--summary", str(work / "kafka.json"))  # fmt: skip
        kafka_s = time.monotonic() - t0
        inputs = from_kafka(Settings.from_env(env))
    finally:
        run("stream.topics", "delete", "--yes")
    last: dict[str, Any] = {}
    for p in inputs.predictions:
        if p.kind == "bandwidth_accuracy":
            last[str(p.horizon)] = p.extra  # in publishing order: the last one wins
    env["DWCP_STATE_DIR"] = str(work / "state-file")
    run("consumers.bandwidth", "--from-file", str(args.recording), *flags,
        "--summary", str(work / "file.json"))  # fmt: skip
    kafka, file = (json.loads((work / n).read_text())["bandwidth"]["accuracy"]
                   for n in ("kafka.json", "file.json"))  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)
    return {
        "data": str(args.recording),
        "protocol": "replay -> 6 partitions -> consumers.bandwidth (fits inline), online from "
        "the first sample; accuracy as published on the predictions topic (last record per "
        "horizon) and the consumer's final summary; the same consumer on the file beside it",
        "rule": rule,
        "seconds": round(kafka_s, 1),
        "accuracy": kafka,
        "accuracy_published_last": last,
        "accuracy_from_file": file,
    }


# -- reporting ---------------------------------------------------------------------------------
def table(f: OnlineForecaster) -> dict[str, Any]:
    out = {}
    for h, s in f.accuracy_.summary().items():
        out[str(h)] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in s.items()}
    return out


def print_table(title: str, acc: dict[str, Any], members: tuple[str, ...]) -> None:
    print(f"\n{title}")
    cols = ["published", *members]
    print(f"{'h':>3} {'n':>7} " + " ".join(f"{c:>11}" for c in cols) + "   best baseline  "
          "skill(pub)  skill(lstm)  coverage")  # fmt: skip
    for h, s in acc.items():
        vals = [s["mae"], *(s[f"mae_{m}"] for m in members)]
        print(
            f"{h:>3} {s['n']:>7} " + " ".join(f"{v:>11.4f}" for v in vals)
            + f"   {s['best_baseline']:>13}  {100 * s['skill']:>9.1f}%  "
            f"{100 * s['skill_lstm']:>10.1f}%  {100 * s['coverage']:>7.1f}%"
        )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pensieve", default=str(PENSIEVE), help="trace,split,t_s,mbps CSV (gz)")
    p.add_argument("--recording", help="a simulator JSONL recording instead of Pensieve")
    p.add_argument("--rules", default="ewa", help="comma-separated: ewa, ftl")
    p.add_argument("--memory", type=float, default=50.0)
    p.add_argument("--eta", type=float, default=20.0)
    p.add_argument("--prior-strength", type=float, default=10.0)
    p.add_argument("--shrink", type=float, default=1000.0, help="the combiner's fleet shrinkage")
    p.add_argument("--warmup-windows", type=int, default=30000)
    p.add_argument("--retrain-every", type=int, default=10000)
    p.add_argument("--retrain-windows", type=int, default=16384)
    p.add_argument("--batch", type=int, default=500, help="records per process() call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--tag", default="", help="suffix of the result section's name")
    p.add_argument(
        "--kafka",
        action="store_true",
        help="with --recording: through the local broker (replay -> consumers.bandwidth)",
    )
    p.add_argument(
        "--statistical", action="store_true", help="also measure river HoltWinters/SNARIMAX alone"
    )
    args = p.parse_args(argv)
    if args.kafka and not args.recording:
        p.error("--kafka needs --recording (Pensieve is streamed in process only)")
    tfrt.configure_threads(1, 1)
    out_path = Path(args.out)
    doc = json.loads(out_path.read_text()) if out_path.exists() else {}
    if args.statistical:
        doc["pensieve/statistical_alone"] = {
            "command": "python bench/bench_forecast_traces.py --statistical",
            "results": statistical_members(args),
        }
    for rule in args.rules.split(","):
        if args.recording and args.kafka:
            res = run_kafka(args, rule)
            name = f"kafka/{Path(args.recording).name}/{rule}{args.tag}"
            print_table(f"{name}: through Kafka ({res['seconds']} s)", res["accuracy"], MEMBERS)
            print_table(f"{name}: the same consumer on the file", res["accuracy_from_file"],
                        MEMBERS)  # fmt: skip
        elif args.recording:
            res = run_recording(args, rule)
            name = f"simulator/{Path(args.recording).name}/{rule}{args.tag}"
            print_table(f"{name} ({res['seconds']} s)", res["accuracy"], MEMBERS)
        else:
            res = run_pensieve(args, rule)
            name = f"pensieve/{rule}{args.tag}"
            print_table(f"{name}: train split", res["train_split"], MEMBERS)
            print_table(f"{name}: TEST split ({res['seconds']} s)", res["test_split"], MEMBERS)
            print("test baselines over all samples:", res["test_baselines_all_samples"])
            print("issue's reference:              ", REFERENCE)
        res["command"] = "python bench/bench_forecast_traces.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        res["settings"] = {"memory": args.memory, "eta": args.eta, "batch": args.batch,
                           "prior_strength": args.prior_strength, "shrink": args.shrink,
                           "warmup_windows": args.warmup_windows,
                           "retrain_every": args.retrain_every,
                           "retrain_windows": args.retrain_windows, "seed": args.seed}  # fmt: skip
        doc[name] = res
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"\nwrote {out_path}")
    return 0


MEMBERS = ("lstm", "persistence", "ewma", "harmonic")

if __name__ == "__main__":
    sys.exit(main())
