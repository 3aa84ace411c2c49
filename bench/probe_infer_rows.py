"""What one XLA inference shape costs and saves, per network (not a test).

    python bench/probe_infer_rows.py [--reps 5]

``models.forecast.tfrt.Inference`` compiles one input shape per network and
``infer_padded`` pads or cuts every batch to it (``INFER_ROWS``: 256 rows for the bandwidth
forecaster, 64 for the consensus autoencoder). Until 2026-12-08 a batch was padded to a power of
two from 64 to 1,024 rows: five shapes, five compiles per network at a process's start. This
builds both networks at their consumers' default sizes (forecaster: window 30 x 8 features,
LSTM 32; autoencoder: window 30 x 3, LSTM 16) and prints, per shape from 64 to 1,024 rows: the
process CPU of its compile, and the median microseconds per row of ``--reps`` rounds of 4,096
rows at steady state; then whether a row's output is bit for bit the same in every shape.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from models.autoencoder.model import LSTMAutoencoder
from models.forecast.lstm import LSTMForecaster
from models.forecast.tfrt import Inference
from models.forecast.windows import FEATURES

SIZES = (64, 128, 256, 512, 1024)


def probe(name: str, net: object, window: int, n_features: int, reps: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1024, window, n_features)).astype(np.float32)
    compile_cpu, per_row, outputs = {}, {}, {}
    for size in SIZES:
        fn = Inference(net, window, n_features, rows=size)
        cpu = time.process_time()
        outputs[size] = fn(x[:size]).numpy()
        compile_cpu[size] = round(time.process_time() - cpu, 2)
        rounds = []
        for _ in range(reps):
            t = time.perf_counter()
            for _ in range(4096 // size):
                fn(x[:size]).numpy()
            rounds.append((time.perf_counter() - t) / 4096 * 1e6)
        per_row[size] = round(statistics.median(rounds), 2)
    same = all(np.array_equal(outputs[s], outputs[1024][:s]) for s in SIZES)
    print(f"{name}: compile CPU s {compile_cpu}")
    print(f"{name}: us per row {per_row}")
    print(f"{name}: a row's output the same in every shape: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    f = LSTMForecaster(window=30, horizons=(1, 5, 15), units=32)
    f._build()
    probe("forecaster", f.net_, 30, len(FEATURES), a.reps)
    ae = LSTMAutoencoder(window=30, n_features=3, units=16)
    ae._build()
    probe("autoencoder", ae.net_, 30, 3, a.reps)


if __name__ == "__main__":
    main()
