"""Encoding the bandwidth consumer's forecasts: hand-assembled JSON against Prediction records
(not a test).

    python bench/bench_forecast_encoding.py [--records 3000] [--reps 7]

The consumer publishes one record per link record and horizon. It builds them with
``consumers.bandwidth.encode_forecasts`` (byte for byte what ``encode(Prediction(...))`` writes,
tested in ``tests/consumers/test_bandwidth.py``); what it did before, and what a user would
write, is a :class:`stream.records.Prediction` per forecast, its numbers rounded with
``round(x, 3)``, encoded by msgspec. Both run on the same ``--records`` records x 3 horizons
(random values and ensemble weights, 20 nodes), interleaved ``--reps`` times; prints the median
microseconds per link record of each and the ratio, and checks the bytes are equal.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from consumers.bandwidth import encode_forecasts
from stream.records import Prediction, encode

HORIZONS = (1, 5, 15)
MEMBERS = ("lstm", "persistence", "ewma", "harmonic")


def as_records(recs: list[Any], arrays: list[np.ndarray]) -> list[tuple[bytes, bytes]]:
    """A Prediction per record and horizon, encoded (the consumer's code until 2026-12-08)."""
    value, lower, upper, weights, versions = arrays
    v, lo, up = value.tolist(), lower.tolist(), upper.tolist()
    rounded = weights.round(3)
    w, lead = rounded.tolist(), rounded.argmax(axis=2).tolist()
    ver = versions.tolist()
    out = []
    for i, r in enumerate(recs):
        version = f"bandwidth-lstm-v{ver[i]}"
        for j, h in enumerate(HORIZONS):
            p = Prediction(
                kind="bandwidth_forecast", node_id=r.node_id, peer_id=r.peer_id,
                event_time=r.timestamp, model_version=version, target="throughput_mbps",
                horizon=h, value=round(v[i][j], 3), lower=round(lo[i][j], 3),
                upper=round(up[i][j], 3),
                extra={"member": MEMBERS[lead[i][j]],
                       "weights": {m: x for m, x in zip(MEMBERS, w[i][j], strict=True) if x}},
            )  # fmt: skip
            out.append((r.node_id.encode(), encode(p)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=7)
    a = ap.parse_args()
    n, rng = a.records, np.random.default_rng(0)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    recs = [SimpleNamespace(node_id=f"node-{i % 20:03d}", peer_id=f"node-{(i * 7) % 20:03d}",
                            timestamp=t0 + dt.timedelta(seconds=5 * i)) for i in range(n)]  # fmt: skip
    value = rng.lognormal(6, 1, (n, 3))
    weights = rng.dirichlet(np.ones(4), (n, 3))
    weights[::5, :, 0] = 0.0
    arrays = [value, value * 0.8, value * 1.2, weights, np.full(n, 7)]
    times: dict[str, list[float]] = {"Prediction + encode": [], "encode_forecasts": []}
    for _ in range(a.reps):
        t = time.perf_counter()
        old = as_records(recs, arrays)
        times["Prediction + encode"].append(time.perf_counter() - t)
        t = time.perf_counter()
        new = encode_forecasts(recs, HORIZONS, MEMBERS, *arrays)
        times["encode_forecasts"].append(time.perf_counter() - t)
    assert new == old, "the bytes differ"
    med = {k: statistics.median(v) / n * 1e6 for k, v in times.items()}
    for k, us in med.items():
        print(f"{k:>20}: {us:6.2f} us per link record (3 forecasts)")
    print(f"ratio: {med['Prediction + encode'] / med['encode_forecasts']:.2f}x; bytes equal")


if __name__ == "__main__":
    main()
