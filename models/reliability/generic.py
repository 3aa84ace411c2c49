"""Generic metrics: every numeric field of a record that the tuned feature table does not know.

:data:`~models.reliability.features.METRICS` holds the metrics whose transform, scope and
floor were tuned on the DWCP simulator. Every *other* numeric value a record carries becomes a
generic feature with one rule for all, so the detector uses whatever a source sends:

* **which**: the DWCP numeric fields outside the table under their own names, and every
  metric of the record's ``extra`` map as ``extra.NAME``. A field that measures what a tuned
  field measures already (``bytes_tx``/``bytes_rx``/``amst_*`` and throughput, the
  error-budget burn and the failure rate, ``uptime_pct`` and ``uptime_s``:
  :data:`~models.reliability.features.COVERED_BY`) counts only in records without that
  field, so the same evidence is not counted twice. ``uptime_s`` itself is left out: it is a
  clock, read by the ``restart`` feature;
* **counters become per-second rates** (feature ``NAME_per_s``), per series (``node_id``,
  ``peer_id``) from its previous sample, ``dt`` seconds of event time earlier. A ``delta``
  field (the schema's counter kind: the amount since the previous sample, e.g. ``bytes_tx``)
  gives ``v / dt``. A ``cumulative`` one (an extra metric named ``*_total``) gives
  ``(v - prev) / dt``; when ``v < prev`` the counter was reset (its process restarted and
  counted from 0 again), and the rate is ``v / dt``, as Prometheus' ``rate()`` assumes: never
  negative. The first sample of a series and a sample not later than the previous one have
  no rate yet (z = 0);
* **transform** ``asinh(v)``: defined for every finite value (negative values are fine where
  a field allows them), close to linear near 0 and logarithmic for large magnitudes, so no
  log offset can be wrong;
* the z-score against the series' own baseline (scope ``link``: per ``(node_id, peer_id)``,
  which is per node for records without a peer) divides by at least :data:`GENERIC_FLOOR`.

Examples
--------
>>> fields = generic_fields(("rtt_ms", "throughput_mbps"), {"bytes_tx": "throughput_mbps"})
>>> [f for f in fields if f[0] in ("bytes_tx", "hde_delta_hit_rate", "rtt_ms", "uptime_s")]
[('bytes_tx', 'bytes_tx_per_s', 'delta', 'throughput_mbps'), ('hde_delta_hit_rate', 'hde_delta_hit_rate', '', '')]
>>> [n for n, _, _ in generic_values({"bytes_tx": 9, "throughput_mbps": 1.0}.get, fields)]
[]
>>> [n for n, _, _ in generic_values({"bytes_tx": 9, "extra": {"m": 1}}.get, fields)]
['bytes_tx_per_s', 'extra.m']
>>> counter_rate(None, 10.0, 5.0, "cumulative"), counter_rate((0.0, 100.0), 10.0, 150.0, "cumulative")
(None, 5.0)
>>> counter_rate((0.0, 100.0), 10.0, 30.0, "cumulative"), counter_rate((0.0, 7.0), 10.0, 500.0, "delta")
(3.0, 50.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from stream.schema import EXTRA_FIELD, FIELDS, extra_counter

__all__ = ["GENERIC_FLOOR", "SKIP", "generic_fields", "counter_rate", "generic_values", "transform"]

#: Smallest standard deviation (asinh units) a generic z-score divides by: about 5% of a
#: large value's magnitude, or 0.05 absolute near 0 (min-max normalised data).
GENERIC_FLOOR = 0.05
#: Numeric fields that are not generic features (``uptime_s``: read by ``restart``).
SKIP = frozenset({"uptime_s"})
RATE_SUFFIX = "_per_s"
_PREFIX = EXTRA_FIELD + "."


def generic_fields(
    core: tuple[str, ...], covered_by: Mapping[str, str] | None = None
) -> tuple[tuple[str, str, str, str], ...]:
    """``(field, feature name, counter kind, covering field)`` of every schema field outside
    ``core``; a field in ``covered_by`` is used only in records without its covering field."""
    out = []
    cover = covered_by or {}
    for spec in FIELDS:
        if spec.numeric and spec.name not in core and spec.name not in SKIP:
            name = spec.name + RATE_SUFFIX if spec.counter else spec.name
            out.append((spec.name, name, spec.counter, cover.get(spec.name, "")))
    return tuple(out)


def generic_values(
    get: Callable[[str], Any], fields: tuple[tuple[str, str, str, str], ...]
) -> Iterator[tuple[str, float, str]]:
    """``(feature name, value, counter kind)`` of the generic fields present in a record."""
    for field, name, counter, covering in fields:
        v = get(field)
        if v is not None and not (covering and get(covering) is not None):
            yield name, float(v), counter
    extra = get(EXTRA_FIELD)
    if extra:
        for key, v in extra.items():
            counter = extra_counter(key)
            yield _PREFIX + key + (RATE_SUFFIX if counter else ""), float(v), counter


def counter_rate(
    prev: tuple[float, float] | None, t: float, v: float, counter: str
) -> float | None:
    """Per-second rate of a counter sample ``v`` at ``t`` given the series' ``(t, v)`` before.

    ``None`` when there is no earlier sample or ``t`` is not later than it.
    """
    if prev is None:
        return None
    dt = t - prev[0]
    if not dt > 0.0:
        return None
    if counter == "delta":
        return max(v, 0.0) / dt
    increase = v - prev[1]
    return (increase if increase >= 0.0 else max(v, 0.0)) / dt


def transform(v: float) -> float:
    """``asinh(v)``: any finite value, log-like for large magnitudes.

    >>> transform(0.0), round(transform(-1e300), 1), round(transform(1e6), 2)
    (0.0, -691.5, 14.51)
    """
    return math.asinh(v)


def untransform(x: float) -> float:
    """Inverse of :func:`transform` (for baselines in raw units); saturates, never raises."""
    try:
        return math.sinh(x)
    except OverflowError:
        return math.copysign(1.7976931348623157e308, x)


def epoch(ts: Any) -> float | None:
    """Event time in epoch seconds (a datetime, or a number already)."""
    if ts is None:
        return None
    if isinstance(ts, int | float):
        return float(ts)
    return float(ts.timestamp())
