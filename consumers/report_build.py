"""The pipeline report as one JSON-ready dict, computed from :class:`Inputs` (no I/O).

Incident figures come from :func:`models.evaluation.evaluate` (once for all alerts together,
the *pipeline*, and once per detector, by the alerts' ``source``); the per-record decisions
for its false-positive rate are "the node had an open alert" (:mod:`consumers.report_metrics`).
Forecast and compression sections appear when the predictions topic carries forecasts or
recommendations; otherwise they say why they are not available. No figure is ever made up:
a section without data has ``"available": false`` and a reason.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import numpy as np

from consumers.report_inputs import Inputs
from consumers.report_metrics import (
    LinkSeries,
    alert_spans,
    compression_summary,
    forecast_accuracy,
    recall_matrix,
    record_flags,
)
from models.evaluation import evaluate
from stream.records import IncidentLabel

PIPELINE = "pipeline"


def _iso(t: float | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t, dt.UTC).isoformat()


def label_delays(
    labels: list[IncidentLabel], alerts: list[Any], pre_s: float, post_s: float
) -> dict[str, float | None]:
    """Per label: detection delay in seconds (``None`` if missed), by the same matching rule."""
    by_node: dict[str, list[Any]] = defaultdict(list)
    for a in alerts:
        by_node[a.node_id].append(a)
    out: dict[str, float | None] = {}
    for lab in labels:
        ev = evaluate([lab], alerts=by_node.get(lab.node_id, []), pre_s=pre_s, post_s=post_s)
        out[lab.incident_id] = ev.overall["delay_median_s"]
    return out


def detection_section(
    inp: Inputs, alerts: list[Any], warmup_until: dt.datetime | None, pre_s: float, post_s: float
) -> dict[str, Any]:
    """models.evaluation figures + recall matrix + per-label delays for ``alerts``."""
    spans = alert_spans(alerts)
    records = zip(
        inp.node.tolist(),
        (dt.datetime.fromtimestamp(x, dt.UTC) for x in inp.t.tolist()),
        strict=True,
    )
    flags = record_flags(records, spans) if len(inp.t) else None
    ev = evaluate(
        inp.labels,
        alerts=alerts,
        records=flags,
        warmup_until=warmup_until,
        pre_s=pre_s,
        post_s=post_s,
    )
    out = ev.to_dict()
    out["matrix"] = recall_matrix(inp.labels, ev.missed, warmup_until)
    delays = label_delays(inp.labels, alerts, pre_s, post_s)
    counted = {
        lab.incident_id for lab in inp.labels if warmup_until is None or lab.start >= warmup_until
    }
    out["delays"] = {k: v for k, v in delays.items() if k in counted}
    out["alerts"] = len(alerts)
    out["model_versions"] = sorted(
        {f"{k}={v}" for a in alerts for k, v in a.model_versions.items()}
    )
    return out


def forecast_section(inp: Inputs) -> dict[str, Any]:
    """Accuracy per forecast kind (``*_forecast`` predictions) against the telemetry."""
    kinds: dict[str, list[Any]] = defaultdict(list)
    reported: dict[str, dict[str, Any]] = {}
    for p in inp.predictions:
        if p.kind.endswith("_forecast"):
            kinds[p.kind].append(p)
        elif p.kind.endswith("_accuracy"):  # the consumer's own running figures: last per horizon
            reported.setdefault(p.kind, {})[str(p.horizon)] = p.extra
    if not kinds:
        return {
            "available": False,
            "reason": "not available yet: no forecasts on the predictions topic "
            "(consumers.bandwidth publishes kind=bandwidth_forecast)",
        }
    out: dict[str, Any] = {"available": True, "kinds": {}}
    for kind, preds in sorted(kinds.items()):
        target = preds[0].target or "throughput_mbps"
        if target not in inp.metrics:
            out["kinds"][kind] = {
                "available": False,
                "reason": f"target {target!r} not in the telemetry kept",
            }
            continue
        series: dict[tuple[str, str | None], LinkSeries] = {}
        y = inp.metrics[target]
        idx: dict[tuple[str, str | None], list[int]] = defaultdict(list)
        for i, key in enumerate(zip(inp.node.tolist(), inp.peer.tolist(), strict=True)):
            idx[key].append(i)
        for key, rows in idx.items():
            r = np.array(rows)
            ok = np.isfinite(y[r])
            series[key] = LinkSeries(inp.t[r][ok], y[r][ok])
        acc = forecast_accuracy(preds, series)
        times = [p.event_time.timestamp() for p in preds]
        out["kinds"][kind] = {
            "available": acc["scored"] > 0,
            "target": target,
            "forecasts": len(preds),
            "links": len({(p.node_id, p.peer_id) for p in preds}),
            "model_versions": sorted({p.model_version for p in preds}),
            "first_forecast": _iso(min(times)),
            "consumer_reported": reported.get(kind.replace("_forecast", "_accuracy"), {}),
            **acc,
        }
        if not acc["scored"]:
            out["kinds"][kind]["reason"] = "no forecast could be matched with an actual value"
    return out


def compression_section(inp: Inputs) -> dict[str, Any]:
    recs = [p for p in inp.predictions if p.kind.startswith("compression")]
    if not recs:
        return {
            "available": False,
            "reason": "not available yet: no compression recommendations on the predictions "
            "topic (consumers.compression)",
        }
    out = compression_summary(recs)
    out["model_versions"] = sorted({p.model_version for p in recs})
    out["kinds"] = sorted({p.kind for p in recs})
    out["available"] = True
    if not out["with_regret"]:
        out["regret_reason"] = (
            "not available yet: the recommendations carry neither extra['regret'] nor "
            "extra['best_time_s'] (the best action's expected time)"
        )
    return out


def build_report(
    inp: Inputs, *, warmup_s: float = 900.0, pre_s: float = 0.0, post_s: float = 60.0
) -> dict[str, Any]:
    """The whole report (see the module docstring); ``pairs`` of forecasts are kept for plots."""
    t = inp.t
    first = float(t.min()) if len(t) else None
    last = float(t.max()) if len(t) else None
    if first is None and inp.labels:
        first = min(lab.start.timestamp() for lab in inp.labels)
    warmup_until = (
        dt.datetime.fromtimestamp(first + warmup_s, dt.UTC)
        if first is not None and warmup_s
        else None
    )
    kinds: dict[str, int] = defaultdict(int)
    for p in inp.predictions:
        kinds[p.kind] += 1
    sources = sorted({a.source for a in inp.alerts})
    report: dict[str, Any] = {
        "inputs": {
            "source": inp.source,
            "telemetry": int(len(t)),
            "nodes": len(set(inp.node.tolist())),
            "labels": len(inp.labels),
            "alerts": len(inp.alerts),
            "alert_sources": sources,
            "predictions": dict(sorted(kinds.items())),
            "dead_letters": inp.dead_letters,
            "undecodable": inp.undecodable,
            "event_time": {"first": _iso(first), "last": _iso(last)},
        },
        "settings": {
            "warmup_s": warmup_s,
            "warmup_until": warmup_until.isoformat() if warmup_until else None,
            "pre_s": pre_s,
            "post_s": post_s,
            "fpr_definition": "share of normal telemetry records (outside labelled windows "
            "widened by pre_s/post_s, after the warm-up) whose node had an open alert",
        },
    }
    if not inp.labels:
        report["detection"] = {
            "available": False,
            "reason": "no labels (ground truth) to score against",
        }
    elif not inp.alerts:
        report["detection"] = {
            "available": False,
            "reason": "not available yet: no alerts on the alerts topic "
            "(consumers.reliability / consumers.consensus publish them)",
        }
    else:
        det: dict[str, Any] = {"available": True}
        det[PIPELINE] = detection_section(inp, inp.alerts, warmup_until, pre_s, post_s)
        for s in sources:
            own = [a for a in inp.alerts if a.source == s]
            det[s] = detection_section(inp, own, warmup_until, pre_s, post_s)
        report["detection"] = det
    report["forecast"] = forecast_section(inp)
    report["compression"] = compression_section(inp)
    report["headline"] = headline(report)
    return report


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The few figures quoted in the README and closing notes."""
    out: dict[str, Any] = {}
    det = report["detection"]
    if det.get("available"):
        o = det[PIPELINE]["overall"]
        for k in (
            "incidents",
            "detected",
            "recall",
            "precision",
            "fpr",
            "delay_median_s",
            "delay_p90_s",
        ):
            out[k] = o.get(k)
    fc = report["forecast"]
    for kind, f in (fc.get("kinds") or {}).items():
        if f.get("available"):
            for h, row in f["horizons"].items():
                out[f"{kind}_h{h}"] = {
                    k: row.get(k)
                    for k in (
                        "n",
                        "mae",
                        "mape",
                        "mae_persistence",
                        "mae_ewma",
                        "skill",
                        "coverage",
                    )
                }
    comp = report["compression"]
    if comp.get("available") and comp.get("regret_mean") is not None:
        out["compression_regret_mean"] = comp["regret_mean"]
    return out
