"""Train and measure the compression policy: agreement, regret, gain, size, training time, speed.

1. Draws the training states (fleets with seeds ``--train-seeds``) and the held-out states
   (other fleets, ``--test-seeds``) from the simulator, labels both with the transfer-time
   model built on the measured codec table (``models/compression/codecs.json``).
2. Trains :class:`models.compression.policy.CompressionPolicy` with its defaults, timed
   (the TensorFlow import is inside the timing).
3. On the held-out states: agreement with the best action, regret where it disagrees, and
   the expected transfer-time gain over the best single fixed codec (and what the exact
   argmin of the model would gain: the ceiling).
4. Model size: the portable JSON export and the Keras ``.keras`` file (saved to a temporary
   directory); the largest |numpy forward pass - Keras| on held-out states.
5. Decisions per second in this process (median of ``--repeats``): the numpy forward pass on
   batches of 1000 states and on single states, and the exact transfer-model argmin on
   batches of 1000, with one BLAS thread (one process per core); then the numpy forward pass
   with OpenBLAS's default threads (on a busy 2-core host its threads fight: slower) and Keras
   (TensorFlow, 2 intra-op threads) on batches of 1000.

Usage::

    python bench/bench_compression.py                 # prints a summary and the JSON
    python bench/bench_compression.py --output bench/results/compression.json

Timings on a shared 2-core machine are noisy: rates are medians; compare ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script without an install
from models.compression.evaluate import evaluate  # noqa: E402
from models.compression.policy import CompressionPolicy  # noqa: E402
from models.compression.states import features  # noqa: E402
from models.compression.transfer import TransferModel  # noqa: E402
from producers.compression_states import TEST_SEEDS, TRAIN_SEEDS, fleet_states  # noqa: E402


def rate(fn: Callable[[], Any], decisions: int, repeats: int, min_s: float = 0.2) -> float:
    """Median decisions/s of ``fn`` (each call makes ``decisions``), over ``repeats`` timings."""
    rates = []
    for _ in range(repeats):
        calls, t0 = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_s:
                break
        rates.append(calls * decisions / elapsed)
    return statistics.median(rates)


def run(args: argparse.Namespace) -> dict[str, Any]:
    teacher = TransferModel()
    draw = {"nodes": args.nodes, "hours": args.hours, "interval_s": args.interval}
    train = np.concatenate([fleet_states(s, **draw) for s in args.train_seeds])
    test = np.concatenate([fleet_states(s, **draw) for s in args.test_seeds])
    policy = CompressionPolicy(teacher, seed=args.seed).fit(train)
    times = teacher.times(test)
    chosen = policy.predict(test)
    ev = evaluate(times, chosen, teacher.names)
    exact = evaluate(times, times.argmin(axis=1), teacher.names)
    portable = policy.to_portable()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.keras"
        policy.model_.save(path)
        keras_bytes = path.stat().st_size
    sample = test[:: max(1, len(test) // 20000)]
    diff = float(np.abs(policy.keras_predict_proba(sample) - policy.predict_proba(sample)).max())

    batch = test[:1000]
    one = test[:1]
    x = features(batch)
    model = policy.model_
    with threadpool_limits(1):  # one BLAS thread: what one consumer process should use
        speed = {
            "numpy_batch1000": rate(lambda: portable.predict(batch), 1000, args.repeats),
            "numpy_single": rate(lambda: portable.predict(one), 1, args.repeats),
            "exact_model_batch1000": rate(lambda: teacher.best(batch), 1000, args.repeats),
        }
    speed["numpy_batch1000_blas_default_threads"] = rate(
        lambda: portable.predict(batch), 1000, args.repeats
    )
    speed["keras_batch1000"] = rate(
        lambda: np.asarray(model(x, training=False)), 1000, args.repeats
    )
    return {
        "date": dt.datetime.now(dt.UTC).date().isoformat(),
        "command": "python bench/bench_compression.py " + " ".join(sys.argv[1:]),
        "host": {"cpu_count": __import__("os").cpu_count(), "python": platform.python_version()},
        "codec_table": {"digest": teacher.table.digest, **teacher.table.source},
        "train_states": len(train),
        "test_states": len(test),
        "train_seeds": list(args.train_seeds),
        "test_seeds": list(args.test_seeds),
        "model_version": policy.version,
        "hidden": list(policy.hidden),
        "prediction_baseline": policy.best_fixed_,
        "params": portable.n_params,
        "fit_seconds": round(policy.fit_seconds_, 2),
        "portable_json_bytes": len(portable.to_json().encode()),
        "keras_file_bytes": keras_bytes,
        "max_abs_diff_numpy_vs_keras": diff,
        "policy": ev.as_dict(),
        "exact_model": exact.as_dict(),
        "decisions_per_s": {k: round(v) for k, v in speed.items()},
    }


def summary(r: dict[str, Any]) -> str:
    ev, ex = r["policy"], r["exact_model"]
    d = r["decisions_per_s"]
    return "\n".join(
        [
            f"states: train {r['train_states']:,d} (fleets {r['train_seeds']}), "
            f"held-out {r['test_states']:,d} (fleets {r['test_seeds']})",
            f"training: {r['fit_seconds']:.1f} s; model {r['params']:,d} weights, "
            f"portable JSON {r['portable_json_bytes'] / 1024:.1f} KiB, "
            f".keras {r['keras_file_bytes'] / 1024:.1f} KiB; |numpy - keras| <= "
            f"{r['max_abs_diff_numpy_vs_keras']:.1e}",
            f"agreement: {ev['agreement']:.2%} ({ev['disagreements']:,d} disagreements); "
            f"regret where it disagrees: mean {ev['regret_mean']:.2%}, worst {ev['regret_max']:.1%}; "
            f"over all states {ev['regret_total']:.4%} extra time",
            f"gain over the best fixed codec ({ev['best_fixed']}): {ev['gain_total']:.2%} of total "
            f"time (exact model: {ex['gain_total']:.2%}); mean per-state gain over "
            f"{ev['best_fixed_mean']}: {ev['gain_mean']:.2%} (exact: {ex['gain_mean']:.2%})",
            "fixed codecs, total time / best: "
            + ", ".join(f"{k} {v:.3f}" for k, v in ev["fixed_totals"].items()),
            f"decisions/s (1 BLAS thread): numpy forward, batches of 1000 "
            f"{d['numpy_batch1000']:,d}, single states {d['numpy_single']:,d}; exact model "
            f"argmin, batches of 1000 {d['exact_model_batch1000']:,d}",
            f"decisions/s (default threads): numpy forward, batches of 1000 "
            f"{d['numpy_batch1000_blas_default_threads']:,d}; Keras (TF, 2 threads), batches of "
            f"1000 {d['keras_batch1000']:,d}",
        ]
    )


def _seeds(text: str) -> tuple[int, ...]:
    return tuple(int(s) for s in text.split(","))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-seeds", type=_seeds, default=TRAIN_SEEDS, help="default 1,2,3,4")
    p.add_argument("--test-seeds", type=_seeds, default=TEST_SEEDS, help="default 1001,1002")
    p.add_argument("--nodes", type=int, default=100, help="nodes per fleet (default 100)")
    p.add_argument("--hours", type=float, default=24.0, help="event time per fleet (default 24)")
    p.add_argument("--interval", type=float, default=300.0, help="seconds between states")
    p.add_argument("--seed", type=int, default=0, help="policy seed")
    p.add_argument("--repeats", type=int, default=7, help="timings per speed figure")
    p.add_argument("--output", type=Path, help="also write the JSON here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = run(args)
    print(summary(result))
    text = json.dumps(result, indent=1)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
