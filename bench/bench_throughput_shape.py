"""How close is the simulator's throughput to real links? Scale-free signatures side by side.

    python bench/bench_throughput_shape.py            # Pensieve vs both simulator models
    python bench/bench_throughput_shape.py --quick    # fewer simulated links, no learnability

For every data set, per sample step (the forecaster's step: Pensieve samples are ~1 s apart,
the simulator's come every ``--interval`` seconds), over series of at least 40 samples:

* **volatility**: the mean absolute one-step change over the mean level (persistence's h=1
  error, scale-free), and the median per-series sd of one-step log changes;
* **memory**: the median per-series autocorrelation of the (demeaned) log level at lags 1, 5
  and 15, and of the one-step log changes at lag 1 (negative: part of every change is undone
  next step, which smoothing exploits; zero: a random walk, where the last value is best);
* **error growth**: persistence's error at h=5 and h=15 over its error at h=1;
* **smoothers vs the last value**: EWMA(0.3) and harmonic-mean-of-5 errors over persistence's,
  per horizon (below 1: averaging helps);
* **learnability**: skill over persistence of a gradient-boosted median model on the last 30
  samples' scale-free features, fitted on half of the series and scored on the other half
  (2-fold by series; scikit-learn's HistGradientBoostingRegressor, absolute error on the log
  ratio), and its skill over the best of the three baselines on the same targets. It says how
  much a model *can* learn from the throughput history alone when it is fitted on the same
  kind of series: the room a forecaster has, not what ours reaches.

The simulator is run in memory (``producers.fleet``; no Kafka), with ``--throughput-model``
``classic`` and ``tcp`` (see ``producers/fleet.py``), 20 nodes x 2 links by default.
Results: ``bench/results/throughput_shape.json``.
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

from models.forecast.baselines import EWMABaseline, HarmonicBaseline  # noqa: E402
from producers.config import FleetConfig  # noqa: E402
from producers.fleet import Fleet  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PENSIEVE = ROOT / "data" / "real" / "pensieve.csv.gz"
OUT = ROOT / "bench" / "results" / "throughput_shape.json"
HORIZONS = (1, 5, 15)
WINDOW = 30
MIN_LEN = 40
EPS = 1e-3  # Mbit/s added before logs (a dead link reports 0)


def load_pensieve(path: Path) -> dict[str, list[np.ndarray]]:
    """``{split: [Mbit/s per trace]}``."""
    out: dict[str, dict[str, list[float]]] = {}
    with gzip.open(path, "rt") as fh:
        fh.readline()
        for line in fh:
            trace, split, _t, v = line.rstrip("\n").split(",")
            out.setdefault(split, {}).setdefault(trace, []).append(float(v))
    return {s: [np.array(v) for v in d.values()] for s, d in out.items()}


def simulate(model: str, nodes: int, links: int, interval: float, steps: int, seed: int,
             incident_rate: float) -> list[np.ndarray]:  # fmt: skip
    """Throughput of every link of a simulated fleet; a node's outage cuts its links' series."""
    cfg = FleetConfig(nodes=nodes, links_per_node=links, interval_s=interval, seed=seed,
                      incident_rate=incident_rate, throughput_model=model)  # fmt: skip
    fleet = Fleet(cfg)
    L = fleet.topology.n_links
    current: list[list[float]] = [[] for _ in range(L)]
    done: list[np.ndarray] = []
    for _ in range(steps):
        s = fleet.step()
        up = np.zeros(L, bool)
        up[s.links] = True
        v = s.values["throughput_mbps"]
        for link in range(L):
            if up[link]:
                current[link].append(float(v[link]))
            elif current[link]:
                done.append(np.array(current[link]))
                current[link] = []
    done += [np.array(c) for c in current if c]
    return done


def _ewma(y: np.ndarray) -> np.ndarray:
    """The forecaster's EWMA(0.3) member over one series."""
    return EWMABaseline(0.3).update(np.zeros(len(y), np.int64), y)


def _harmonic(y: np.ndarray) -> np.ndarray:
    """The forecaster's harmonic-mean-of-5 member over one series."""
    return HarmonicBaseline(5).update(np.zeros(len(y), np.int64), y)


def _acf(x: np.ndarray, lag: int) -> float:
    x = x - x.mean()
    d = float((x * x).sum())
    return float((x[:-lag] * x[lag:]).sum() / d) if d > 0 and len(x) > lag else float("nan")


def signature(series: list[np.ndarray], learn: bool = True, seed: int = 0) -> dict[str, Any]:
    """The scale-free figures of the module docstring for a set of series."""
    series = [s for s in series if len(s) >= MIN_LEN]
    logs = [np.log(s + EPS) for s in series]
    err: dict[str, dict[int, list[np.ndarray]]] = {
        k: {h: [] for h in HORIZONS} for k in ("persistence", "ewma", "harmonic")
    }
    for y in series:
        fc = {"persistence": y, "ewma": _ewma(y), "harmonic": _harmonic(y)}
        for h in HORIZONS:
            for k, f in fc.items():
                err[k][h].append(np.abs(f[:-h] - y[h:]))
    mae = {k: {h: float(np.concatenate(v[h]).mean()) for h in HORIZONS} for k, v in err.items()}
    level = float(np.concatenate(series).mean())
    p1 = mae["persistence"][1]
    out: dict[str, Any] = {
        "series": len(series),
        "samples": int(sum(len(s) for s in series)),
        "volatility_rel_step": round(p1 / level, 4),
        "volatility_log_sd": round(float(np.median([np.diff(x).std() for x in logs])), 4),
        **{
            f"acf_level_lag{k}": round(float(np.nanmedian([_acf(x, k) for x in logs])), 3)
            for k in HORIZONS
        },
        "acf_change_lag1": round(float(np.nanmedian([_acf(np.diff(x), 1) for x in logs])), 3),
        **{f"persistence_growth_h{h}": round(mae["persistence"][h] / p1, 3) for h in HORIZONS[1:]},
        **{
            f"{k}_over_persistence_h{h}": round(mae[k][h] / mae["persistence"][h], 3)
            for k in ("ewma", "harmonic")
            for h in HORIZONS
        },
    }
    if learn:
        out.update(learnability(series, seed))
    return out


def _features(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale-free features at every step with a full window, and those steps' indices."""
    lv = np.log(y + EPS)
    idx = np.arange(WINDOW - 1, len(y))
    win = np.lib.stride_tricks.sliding_window_view(lv, WINDOW)  # row i ends at i + WINDOW - 1
    last = win[:, -1:]
    rel = win - last
    X = np.column_stack([
        rel[:, -10:-1],  # the last 9 log changes to now
        rel[:, -5:].mean(1), rel[:, -10:].mean(1), rel.mean(1), np.median(rel, 1),
        win[:, -5:].std(1), win.std(1), rel.min(1), rel.max(1),
    ])  # fmt: skip
    return X, idx


def learnability(series: list[np.ndarray], seed: int) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingRegressor

    feats = [_features(y) for y in series]
    fold = np.random.default_rng(seed).permutation(len(series)) % 2
    out: dict[str, Any] = {}
    for h in HORIZONS:
        X, target, last, actual, f_of, smooth = [], [], [], [], [], []
        for i, (y, (F, idx)) in enumerate(zip(series, feats, strict=True)):
            ok = idx + h < len(y)
            lv = np.log(y + EPS)
            X.append(F[ok])
            target.append(lv[idx[ok] + h] - lv[idx[ok]])
            last.append(y[idx[ok]])
            actual.append(y[idx[ok] + h])
            f_of.append(np.full(int(ok.sum()), fold[i]))
            smooth.append(np.stack([_ewma(y)[idx[ok]], _harmonic(y)[idx[ok]]], axis=1))
        Xa, ta, la, aa, fa = (np.concatenate(v) for v in (X, target, last, actual, f_of))
        sm = np.concatenate(smooth)
        pred = np.empty(len(ta))
        for f in (0, 1):
            m = HistGradientBoostingRegressor(
                loss="absolute_error", max_iter=200, learning_rate=0.05, min_samples_leaf=50,
                random_state=seed,
            )  # fmt: skip
            m.fit(Xa[fa != f], ta[fa != f])
            pred[fa == f] = m.predict(Xa[fa == f])
        fc = np.exp(pred + np.log(la + EPS)) - EPS
        mae = float(np.abs(fc - aa).mean())
        best = min(float(np.abs(b - aa).mean()) for b in (la, sm[:, 0], sm[:, 1]))
        out[f"learnable_skill_h{h}"] = round(1.0 - mae / float(np.abs(la - aa).mean()), 3)
        out[f"learnable_skill_vs_best_baseline_h{h}"] = round(1.0 - mae / best, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--pensieve", default=str(PENSIEVE), help="trace,split,t_s,mbps CSV (gz)")
    p.add_argument("--nodes", type=int, default=20)
    p.add_argument("--links", type=int, default=2)
    p.add_argument("--interval", type=float, default=10.0, help="simulator sample interval (s)")
    p.add_argument("--steps", type=int, default=2000, help="simulated intervals")
    p.add_argument("--incident-rate", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--models", default="classic,tcp", help="simulator throughput models")
    p.add_argument("--quick", action="store_true", help="no learnability fits, 500 steps")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    if args.quick:
        args.steps = min(args.steps, 500)
    learn = not args.quick
    t0 = time.perf_counter()
    res: dict[str, Any] = {}
    data = load_pensieve(Path(args.pensieve))
    for split in ("train", "test"):
        res[f"pensieve/{split}"] = signature(data[split], learn, args.seed)
        print(f"pensieve/{split} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    for model in args.models.split(","):
        series = simulate(model, args.nodes, args.links, args.interval, args.steps, args.seed,
                          args.incident_rate)  # fmt: skip
        res[f"simulator/{model}"] = signature(series, learn, args.seed)
        print(f"simulator/{model} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    keys = list(next(iter(res.values())).keys())
    names = list(res)
    print(f"{'':30}" + "".join(f"{n:>20}" for n in names))
    for k in keys:
        print(f"{k:30}" + "".join(f"{res[n].get(k, float('nan')):>20}" for n in names))
    doc = {
        "command": "python bench/bench_throughput_shape.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "simulator": {
            "nodes": args.nodes,
            "links": args.links,
            "interval_s": args.interval,
            "steps": args.steps,
            "incident_rate": args.incident_rate,
            "seed": args.seed,
        },  # fmt: skip
        "results": res,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
