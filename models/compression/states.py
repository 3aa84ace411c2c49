"""Link states: the telemetry fields the compression choice depends on, and the policy's features.

A *state* is one row of a float array with the columns :data:`STATE_FIELDS` (telemetry names
and units, see :mod:`stream.schema`). :func:`state_matrix` builds it from telemetry records;
fields a record lacks take the neutral :data:`DEFAULTS`, and a record without a throughput
cannot be decided (its row is masked out). :func:`features` is the fixed transform the policy
network sees (logs of the scale-free quantities).

Examples
--------
>>> rec = {"node_id": "n-001", "throughput_mbps": 800.0, "rtt_ms": 90.0, "packet_loss": 1e-4,
...        "amst_streams": 16, "cpu_util": 35.0, "hde_compression_ratio": 2.2}
>>> states, ok = state_matrix([rec, {"node_id": "n-002", "rtt_ms": 3.0}])
>>> ok.tolist(), states[0].tolist()
([True, False], [800.0, 90.0, 0.0001, 16.0, 35.0, 2.2, 0.0])
>>> [round(float(v), 3) for v in features(states[:1])[0]]
[2.903, 1.954, -4.0, 4.0, 0.35, -0.431, 0.788, 0.0]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["DEFAULTS", "FEATURE_NAMES", "STATE_FIELDS", "features", "state_matrix"]

#: Columns of a state, in order.
STATE_FIELDS: tuple[str, ...] = (
    "throughput_mbps",
    "rtt_ms",
    "packet_loss",
    "amst_streams",
    "cpu_util",
    "hde_compression_ratio",
    "hde_delta_hit_rate",
)

#: Values used when a record lacks a field (``throughput_mbps`` has none: required).
DEFAULTS: dict[str, float] = {
    "rtt_ms": 1.0,
    "packet_loss": 0.0,
    "amst_streams": 1.0,
    "cpu_util": 50.0,
    "hde_compression_ratio": 1.0,
    "hde_delta_hit_rate": 0.0,
}

#: Names of the columns :func:`features` returns.
FEATURE_NAMES: tuple[str, ...] = (
    "log10_throughput_mbps",
    "log10_rtt_ms",
    "log10_packet_loss",
    "log2_streams",
    "cpu_frac",
    "log_cpu_headroom",
    "log_hde_ratio",
    "delta_hit_rate",
)


def state_matrix(records: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """States of telemetry records (``Telemetry`` structs or mappings) and a usable-row mask.

    Returns ``(states, ok)``: ``states`` has shape ``(n, len(STATE_FIELDS))``; ``ok[i]`` is
    False where record ``i`` has no ``throughput_mbps`` (its row holds NaN there).
    """
    rows: list[list[float]] = []
    for rec in records:
        get = rec.get if isinstance(rec, Mapping) else lambda k, r=rec: getattr(r, k, None)
        row = []
        for name in STATE_FIELDS:
            v = get(name)
            row.append(float(v) if v is not None else DEFAULTS.get(name, np.nan))
        rows.append(row)
    states = np.array(rows, dtype=np.float64).reshape(len(rows), len(STATE_FIELDS))
    ok = np.asarray(np.isfinite(states).all(axis=1))
    return states, ok


def features(states: np.ndarray) -> np.ndarray:
    """The policy's input features (float32, shape ``(n, len(FEATURE_NAMES))``) of ``states``."""
    s = np.asarray(states, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != len(STATE_FIELDS):
        raise ValueError(f"states must have shape (n, {len(STATE_FIELDS)}), got {s.shape}")
    tput, rtt, loss, streams, cpu, ratio, hit = s.T
    cpu_frac = np.clip(cpu, 0.0, 100.0) / 100.0
    out = np.stack(
        [
            np.log10(np.maximum(tput, 0.01)),
            np.log10(np.maximum(rtt, 0.01)),
            np.log10(np.clip(loss, 0.0, 1.0) + 1e-7),
            np.log2(np.maximum(streams, 1.0)),
            cpu_frac,
            np.log(np.maximum(1.0 - cpu_frac, 0.01)),
            np.log(np.maximum(ratio, 1.0)),
            np.clip(hit, 0.0, 1.0),
        ],
        axis=1,
    )
    return out.astype(np.float32)
