"""Benchmark of the LSTM models: inference latency, micro-batch retrain time, and records/s of
the bandwidth consumer's handler with background retraining on versus off.

    python bench/bench_lstm.py --recording .cache/lstm/bw-s2-i1.jsonl --out reports/lstm/bench.json
    python bench/bench_lstm.py --figures reports/lstm          # PNGs from the offline reports
    python bench/bench_lstm.py --oracle --recording .cache/lstm/bw-s2-i1.jsonl   # noise floor

Timings on a shared 2-core machine are noisy: every figure is the median of several runs.
The throughput runs feed the same recording through ``consumers.bandwidth.BandwidthProcessor``
(decode -> forecast -> Prediction records -> JSON bytes), i.e. the consumer minus Kafka.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consumers import bandwidth  # noqa: E402
from models.forecast import tfrt  # noqa: E402
from stream.records import encode  # noqa: E402
from stream.schema import decode_telemetry_lines  # noqa: E402
from stream.settings import Settings  # noqa: E402


def median_ms(fn, reps: int) -> float:
    fn()  # warm-up (tracing)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return round(statistics.median(times), 2)


def bench_inference(reps: int) -> dict:
    from models.autoencoder.model import LSTMAutoencoder
    from models.forecast.lstm import LSTMForecaster

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 30, 8)).astype(np.float32)
    y = rng.standard_normal((2000, 3))
    f = LSTMForecaster(window=30, units=32, epochs=1).fit(x, y)
    batch = x[:1000]
    xs = f.x_scaler_.transform(batch)
    ae = LSTMAutoencoder(window=30, n_features=3, units=16, epochs=1).fit(x[:2000, :, :3])
    return {
        "forecaster_predict_1000_ms": median_ms(lambda: f.predict(batch), reps),
        "forecaster_tf_function_only_1000_ms": median_ms(lambda: f._infer(xs).numpy(), reps),
        "forecaster_keras_model_predict_1000_ms": median_ms(
            lambda: f.net_.predict(xs, batch_size=1000, verbose=0), max(3, reps // 4)
        ),
        "autoencoder_score_1000_ms": median_ms(lambda: ae.score(x[:1000, :, :3]), reps),
    }


def bench_retrain(reps: int) -> dict:
    from models.autoencoder.model import LSTMAutoencoder
    from models.forecast.lstm import LSTMForecaster

    rng = np.random.default_rng(1)
    x = rng.standard_normal((16384, 30, 8)).astype(np.float32)
    y = rng.standard_normal((16384, 3))
    f = LSTMForecaster(window=30, units=32, epochs=1).fit(x[:512], y[:512])
    ae = LSTMAutoencoder(window=30, n_features=3, units=16, epochs=1).fit(x[:512, :, :3])
    return {
        "forecaster_retrain_16384x1epoch_ms": median_ms(lambda: f.fit(x, y, epochs=1), reps),
        "autoencoder_retrain_8192x1epoch_ms": median_ms(
            lambda: ae.fit(x[:8192, :, :3], epochs=1), reps
        ),
    }


def bench_throughput(recording: str, records: int, retrain: bool, batch: int) -> dict:
    args = bandwidth.build_parser().parse_args(
        ["--retrain-every", "30000"] if retrain else ["--no-retrain"]
    )
    app = bandwidth.BandwidthProcessor(Settings(), args, None)
    raw: list[bytes] = []
    with open(recording, "rb") as fh:
        for i, line in enumerate(fh):
            if i >= records:
                break
            raw.append(line)
    chunks = [b"".join(raw[i : i + batch]) for i in range(0, len(raw), batch)]
    n = t_steady = n_steady = 0
    start = None
    for chunk in chunks:
        t0 = time.perf_counter()
        recs = decode_telemetry_lines(chunk)
        out = [encode(p) for p in app.predictions(recs)]
        dt = time.perf_counter() - t0
        n += len(recs)
        if app.forecaster.ready and start is None:
            start = n  # time the steady state only: after the warm-up fit
            continue
        if start is not None:
            t_steady += dt
            n_steady += len(recs)
        del out
    app.forecaster.finish()
    return {
        "retraining": retrain,
        "records_timed": n_steady,
        "records_per_s": round(n_steady / t_steady, 1) if t_steady else None,
        "retrains": len(app.forecaster.retrains_),
        "retrain_seconds_median": round(
            statistics.median([r["seconds"] for r in app.forecaster.retrains_]), 2
        )
        if app.forecaster.retrains_
        else None,
    }


def _fraction(text: str) -> float:
    hit, total = text.split("/")
    return int(hit) / int(total) if int(total) else 0.0


def make_figures(folder: Path) -> list[Path]:
    """Small PNGs from the offline reports in ``folder`` (bandwidth-seed*.json, consensus-seed*.json)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    bw = sorted(folder.glob("bandwidth-seed?.json"))
    if bw:
        fig, axes = plt.subplots(1, len(bw), figsize=(4 * len(bw), 3), squeeze=False)
        for ax, path in zip(axes[0], bw, strict=True):
            doc = json.loads(path.read_text())
            acc = doc.get("bandwidth", doc)["accuracy"]  # --summary nests it; old --report did not
            hs = sorted(acc, key=int)
            x = np.arange(len(hs))
            for i, (key, label) in enumerate(
                (("mae", "LSTM"), ("mae_ewma", "EWMA"), ("mae_persistence", "persistence"))
            ):
                ax.bar(x + (i - 1) * 0.27, [acc[h][key] for h in hs], 0.27, label=label)
            ax.set_xticks(x, [f"h={h}" for h in hs])
            ax.set_title(f"{path.stem}: MAE (Mbit/s)", fontsize=9)
            ax.legend(fontsize=7)
        fig.tight_layout()
        out.append(folder / "bandwidth-mae.png")
        fig.savefig(out[-1], dpi=80)
        plt.close(fig)
    cons = sorted(folder.glob("consensus-seed?.json"))
    if cons:
        fig, ax = plt.subplots(figsize=(5, 3))
        sevs = ("low", "medium", "high", "critical")
        for i, path in enumerate(cons):
            doc = json.loads(path.read_text())
            by = doc.get("consensus", doc)["evaluation"]["recall_by_severity"]
            frac = [_fraction(by[s]) if s in by else 0.0 for s in sevs]
            ax.bar(np.arange(4) + (i - 1) * 0.27, frac, 0.27, label=path.stem)
        ax.set_xticks(np.arange(4), sevs)
        ax.set_ylim(0, 1.05)
        ax.set_title("consensus AE: incident recall by severity (k=4)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        out.append(folder / "consensus-recall.png")
        fig.savefig(out[-1], dpi=80)
        plt.close(fig)
    return out


def oracle_bound(recording: str, horizon: int = 5, half: int = 10, warmup: int = 600) -> dict:
    """MAE of a *non-causal* smoother (mean of the ``half`` values before and after each target,
    not the target itself) against the EWMA(0.3) forecast ``horizon`` steps ahead: how much of the
    EWMA's error is noise that no forecaster can remove."""
    import msgspec

    class Row(msgspec.Struct):
        node_id: str
        peer_id: str
        throughput_mbps: float

    series: dict[tuple[str, str], list[float]] = {}
    for r in msgspec.json.Decoder(Row).decode_lines(Path(recording).read_bytes()):
        series.setdefault((r.node_id, r.peer_id), []).append(r.throughput_mbps)
    e_or, e_ew = [], []
    for v in series.values():
        x = np.array(v)
        if len(x) < warmup + 4 * half:
            continue
        c = np.convolve(x, np.ones(2 * half + 1), "same")
        smooth = (c - x) / (2 * half)
        ew = np.empty_like(x)
        ew[0] = x[0]
        for i in range(1, len(x)):
            ew[i] = 0.3 * x[i] + 0.7 * ew[i - 1]
        t = np.arange(warmup + half, len(x) - half)
        e_or.append(np.abs(smooth[t] - x[t]))
        e_ew.append(np.abs(ew[t - horizon] - x[t]))
    a, b = float(np.concatenate(e_or).mean()), float(np.concatenate(e_ew).mean())
    return {"oracle_mae": round(a, 3), "ewma_mae": round(b, 3), "ratio": round(a / b, 3)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recording", help="synthetic JSONL (python -m producers.synthetic --output)")
    p.add_argument("--figures", metavar="DIR", help="only draw figures from the reports in DIR")
    p.add_argument("--oracle", action="store_true", help="only the non-causal bound on --recording")
    p.add_argument("--records", type=int, default=300000)
    p.add_argument("--batch", type=int, default=5000)
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--rounds", type=int, default=2, help="throughput runs per setting (median)")
    p.add_argument("--out", help="write the JSON results here")
    a = p.parse_args()
    if a.figures:
        print("\n".join(str(f) for f in make_figures(Path(a.figures))))
        return 0
    if not a.recording:
        p.error("--recording is required")
    if a.oracle:
        print(json.dumps(oracle_bound(a.recording)))
        return 0
    tfrt.configure_threads(2, 1)
    res: dict = {"threads": {"intra_op": 2, "inter_op": 1}}
    res["inference"] = bench_inference(a.reps)
    print(json.dumps(res["inference"]), flush=True)
    res["retrain"] = bench_retrain(3)
    print(json.dumps(res["retrain"]), flush=True)
    runs = {True: [], False: []}
    for _ in range(a.rounds):
        for on in (False, True):
            r = bench_throughput(a.recording, a.records, on, a.batch)
            print(json.dumps(r), flush=True)
            runs[on].append(r)
    off = statistics.median(r["records_per_s"] for r in runs[False])
    on = statistics.median(r["records_per_s"] for r in runs[True])
    res["throughput"] = {
        "records_per_s_retrain_off": off,
        "records_per_s_retrain_on": on,
        "cost_of_retraining": round(1 - on / off, 3),
        "runs": runs[False] + runs[True],
    }
    print(json.dumps(res["throughput"], indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
