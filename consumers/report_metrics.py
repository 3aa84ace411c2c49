"""Figures of the pipeline report that :mod:`models.evaluation` does not compute (pure, no I/O).

* :func:`alert_spans` / :func:`record_flags`: alert incidents as event-time spans per node, and
  per telemetry record whether its node had an open alert then (the per-record decisions
  ``models.evaluation.evaluate`` needs for the false-positive rate when a detector publishes
  alerts only);
* :func:`recall_matrix`: recall per category x severity from an evaluation's missed list;
* :func:`forecast_accuracy`: forecasts from the predictions topic joined with the actual
  values of the telemetry, scored with :class:`models.forecast.accuracy.AccuracyTracker`
  against persistence and EWMA computed here from the same telemetry;
* :func:`compression_summary`: regret of the compression policy's recommendations, when they
  carry it.

Examples
--------
>>> import datetime as dt
>>> t0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
>>> at = lambda s: t0 + dt.timedelta(seconds=s)
>>> alerts = [dict(incident_id="x", node_id="a", status="open", event_time=at(10), opened_at=at(10),
...                source="rel", score=0.9, threshold=0.8),
...           dict(incident_id="x", node_id="a", status="resolved", event_time=at(30),
...                opened_at=at(10), source="rel", score=0.1, threshold=0.8)]
>>> spans = alert_spans(alerts)
>>> spans["a"]
[(1767571210.0, 1767571230.0)]
>>> [f.flagged for f in record_flags([("a", at(s)) for s in (0, 10, 20, 30, 40)], spans)]
[False, True, True, True, False]
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from models.evaluation import RecordFlag
from models.forecast.accuracy import AccuracyTracker
from models.forecast.baselines import EWMABaseline
from stream.records import CATEGORIES, SEVERITIES, IncidentLabel

Spans = dict[str, list[tuple[float, float]]]


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _ts(v: Any) -> float:
    return (v if isinstance(v, dt.datetime) else dt.datetime.fromisoformat(str(v))).timestamp()


def alert_spans(alerts: Iterable[Any]) -> Spans:
    """Node -> sorted ``(opened, last alert)`` event-time spans (epoch s) of alert incidents."""
    by_id: dict[str, list[Any]] = {}
    for a in alerts:
        iid = _get(a, "incident_id")
        t = _ts(_get(a, "event_time"))
        opened = _ts(_get(a, "opened_at") or _get(a, "event_time"))
        span = by_id.get(iid)
        if span is None:
            by_id[iid] = [_get(a, "node_id"), opened, t]
        else:
            span[1], span[2] = min(span[1], opened), max(span[2], t)
    spans: Spans = defaultdict(list)
    for node, lo, hi in by_id.values():
        spans[node].append((lo, hi))
    for v in spans.values():
        v.sort()
    return dict(spans)


def record_flags(records: Iterable[tuple[str, dt.datetime]], spans: Spans) -> list[RecordFlag]:
    """A :class:`RecordFlag` per ``(node_id, event_time)``: flagged inside an alert span."""
    starts = {n: [s[0] for s in v] for n, v in spans.items()}
    out = []
    for node, t in records:
        x = t.timestamp()
        flagged = False
        v = spans.get(node)
        if v:
            j = bisect.bisect_right(starts[node], x) - 1
            while j >= 0 and not flagged:
                flagged = v[j][0] <= x <= v[j][1]
                j -= 1
                if j >= 0 and x - v[j][0] > 86400.0:  # spans are short; stop looking back
                    break
        out.append(RecordFlag(node, t, flagged))
    return out


def recall_matrix(
    labels: Sequence[IncidentLabel], missed: Iterable[Mapping[str, Any]], warmup_until: Any = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{category: {severity: {"incidents", "detected", "recall"}}}`` from an evaluation."""
    missed_ids = {m["incident_id"] for m in missed}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for c in CATEGORIES:
        out[c] = {}
        for s in SEVERITIES:
            labs = [
                x
                for x in labels
                if x.category == c
                and x.severity == s
                and (warmup_until is None or x.start >= warmup_until)
            ]
            found = sum(x.incident_id not in missed_ids for x in labs)
            out[c][s] = {
                "incidents": len(labs),
                "detected": found,
                "recall": round(found / len(labs), 4) if labs else None,
            }
    return out


class LinkSeries:
    """One link's observations of a target metric, in event-time order."""

    __slots__ = ("t", "y", "index", "interval")

    def __init__(self, t: np.ndarray, y: np.ndarray) -> None:
        order = np.argsort(t, kind="stable")
        self.t, self.y = t[order], y[order]
        self.index = {float(x): i for i, x in enumerate(self.t.tolist())}
        gaps = np.diff(self.t)
        gaps = gaps[gaps > 0]
        self.interval = float(np.median(gaps)) if len(gaps) else math.nan


def forecast_accuracy(
    forecasts: Sequence[Any],
    series: Mapping[tuple[str, str | None], LinkSeries],
    *,
    ewma_alpha: float = 0.3,
    mape_floor: float = 1.0,
) -> dict[str, Any]:
    """MAE/MAPE per horizon of ``forecasts`` vs persistence and EWMA, with interval coverage.

    A forecast made at the link's observation ``event_time`` for ``horizon`` steps ahead is
    scored against the observation ``horizon`` steps later, if it came about ``horizon``
    intervals later (within half an interval, like the consumer's own scoring); persistence
    is the observation at ``event_time``, EWMA the smoothed series up to it.

    Returns ``{"horizons": {h: figures}, "scored", "unmatched", "pairs"}``; ``pairs`` holds
    ``(link, horizon, target time, actual, forecast, lower, upper)`` for plots.
    """
    horizons = sorted({int(_get(f, "horizon")) for f in forecasts})
    acc = AccuracyTracker(horizons, mape_floor=mape_floor)
    ewma: dict[tuple[str, str | None], np.ndarray] = {}
    cols: dict[int, list[list[float]]] = {h: [] for h in horizons}
    pairs: list[tuple[Any, int, float, float, float, float, float]] = []
    unmatched = 0
    for f in forecasts:
        link = (_get(f, "node_id"), _get(f, "peer_id"))
        s = series.get(link)
        h = int(_get(f, "horizon"))
        i = s.index.get(_ts(_get(f, "event_time"))) if s is not None else None
        if s is None or i is None or i + h >= len(s.t):
            unmatched += 1
            continue
        if abs(s.t[i + h] - s.t[i] - h * s.interval) > 0.5 * s.interval:
            unmatched += 1  # a gap (e.g. the node was down): not the value forecast
            continue
        if link not in ewma:
            e = EWMABaseline(ewma_alpha)
            ewma[link] = e.update(np.zeros(len(s.y), dtype=np.intp), s.y)
        value = float(_get(f, "value"))
        lo, hi = _get(f, "lower"), _get(f, "upper")
        lo = value if lo is None else float(lo)
        hi = value if hi is None else float(hi)
        actual = float(s.y[i + h])
        cols[h].append([actual, value, float(s.y[i]), float(ewma[link][i]), lo, hi])
        pairs.append((link, h, float(s.t[i + h]), actual, value, lo, hi))
    for h, rows in cols.items():
        if rows:
            a = np.array(rows)
            acc.update(
                h,
                a[:, 0],
                model=a[:, 1],
                persistence=a[:, 2],
                ewma=a[:, 3],
                lower=a[:, 4],
                upper=a[:, 5],
            )
    figures = {str(h): {k: _round(v) for k, v in row.items()} for h, row in acc.summary().items()}
    return {
        "horizons": figures,
        "scored": sum(len(r) for r in cols.values()),
        "unmatched": unmatched,
        "ewma_alpha": ewma_alpha,
        "mape_floor": mape_floor,
        "pairs": pairs,
    }


def compression_summary(recs: Sequence[Any]) -> dict[str, Any]:
    """Codec recommendations: what was chosen, the expected gains, and regret when known.

    Regret (chosen time / best time - 1) needs ``extra["regret"]`` or ``extra["best_time_s"]``
    with ``extra["expected_time_s"]``; the gains are the policy's own expectations: ``value``
    (over the best single fixed codec) and ``extra["gain_vs_none"]``.
    """
    regrets: list[float] = []
    gains: list[float] = []
    gains_none: list[float] = []
    chosen: dict[str, int] = defaultdict(int)
    for p in recs:
        extra = _get(p, "extra") or {}
        r = extra.get("regret")
        best, mine = extra.get("best_time_s"), extra.get("expected_time_s")
        if r is None and _finite(best) and _finite(mine) and best > 0:
            r = mine / best - 1.0
        if _finite(r):
            regrets.append(float(r))
        if _finite(v := _get(p, "value")):
            gains.append(float(v))
        if _finite(g := extra.get("gain_vs_none")):
            gains_none.append(float(g))
        name = extra.get("action") or extra.get("codec") or _get(p, "target") or "?"
        chosen[str(name)] += 1
    out: dict[str, Any] = {
        "recommendations": len(recs),
        "links": len({(_get(p, "node_id"), _get(p, "peer_id")) for p in recs}),
        "chosen": dict(sorted(chosen.items(), key=lambda kv: -kv[1])),
        "expected_gain_vs_best_fixed_mean": _round(float(np.mean(gains))) if gains else None,
        "expected_gain_vs_none_mean": _round(float(np.mean(gains_none))) if gains_none else None,
        "with_regret": len(regrets),
    }
    if regrets:
        r = np.array(regrets)
        out |= {
            "regret_mean": _round(float(r.mean())),
            "regret_p90": _round(float(np.quantile(r, 0.9))),
            "regret_max": _round(float(r.max())),
            "optimal_share": _round(float(np.mean(r <= 1e-9))),
        }
    return out


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _round(v: Any, digits: int = 4) -> Any:
    if isinstance(v, float):
        return None if not math.isfinite(v) else round(v, digits)
    return v
