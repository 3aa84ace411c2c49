"""Evaluate detections against ground-truth incident labels (pure; any detector).

Inputs
------
* ``labels``: :class:`stream.records.IncidentLabel` (the synthetic fleet's ground truth, or
  recorded incidents): node, category, severity and the event-time window ``[start, end]``.
* ``alerts``: :class:`stream.records.Alert` records (or dicts with the same keys). Alerts are
  grouped into incidents by ``incident_id``; an incident spans ``opened_at`` .. its last
  alert's ``event_time``.
* ``records``: per-record decisions, :class:`RecordFlag` ``(node_id, event_time, flagged)``
  (e.g. ``score >= threshold``), for the false-positive rate on normal records.

Either or both may be given. Label windows are widened by ``pre_s`` before and ``post_s``
after (the system needs a moment to settle after an incident ends); records inside a widened
window are neither incident nor normal records for the false-positive rate.

Metrics
-------
* **recall** per category and per severity: share of labels detected. A label is detected
  by an alert incident on the same node that overlaps its widened window (or, without
  alerts, by a flagged record of the node inside it).
* **detection delay**: event time from the label's ``start`` to the first detection (an
  incident already open at ``start`` counts as delay 0). Median, p90, max.
* **precision**: share of alert incidents that overlap any label of their node; per
  predicted category too, and how often the predicted category is the labelled one.
* **false-positive rate**: flagged normal records / normal records.

Examples
--------
>>> import datetime as dt
>>> from stream.records import IncidentLabel
>>> t0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
>>> at = lambda s: t0 + dt.timedelta(seconds=s)
>>> labels = [IncidentLabel(incident_id="i1", node_id="a", category="crash", severity="high",
...                         start=at(100), end=at(200)),
...           IncidentLabel(incident_id="i2", node_id="b", category="disk_full", severity="low",
...                         start=at(100), end=at(300))]
>>> flags = [RecordFlag(n, at(s), n == "a" and 110 <= s <= 150 or s == 500)
...          for s in range(0, 600, 5) for n in ("a", "b")]
>>> ev = evaluate(labels, records=flags, post_s=0)
>>> ev.overall["recall"], ev.overall["fpr"], ev.categories["crash"]["delay_median_s"]
(0.5, 0.0112, 10.0)
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from stream.records import CATEGORIES, SEVERITIES, IncidentLabel

__all__ = ["RecordFlag", "Evaluation", "evaluate", "to_markdown"]


class RecordFlag(NamedTuple):
    """One record's decision: was ``node_id``'s record at ``event_time`` flagged?"""

    node_id: str
    event_time: dt.datetime
    flagged: bool


@dataclass
class _Incident:
    node_id: str
    opened_at: dt.datetime
    last: dt.datetime
    category: str | None


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def _time(v: Any) -> dt.datetime:
    return v if isinstance(v, dt.datetime) else dt.datetime.fromisoformat(str(v))


def _incidents(alerts: Iterable[Any]) -> list[_Incident]:
    by_id: dict[str, _Incident] = {}
    for a in alerts:
        iid, t = _get(a, "incident_id"), _time(_get(a, "event_time"))
        inc = by_id.get(iid)
        if inc is None:
            opened = _time(_get(a, "opened_at") or t)
            inc = by_id[iid] = _Incident(_get(a, "node_id"), opened, t, None)
        inc.last = max(inc.last, t)
        inc.category = _get(a, "category") or inc.category
    return list(by_id.values())


def _stats(delays: Sequence[float]) -> dict[str, float | None]:
    if not delays:
        return {"delay_median_s": None, "delay_p90_s": None, "delay_max_s": None}
    d = sorted(delays)
    p90 = d[min(len(d) - 1, int(0.9 * (len(d) - 1) + 0.5))]
    return {
        "delay_median_s": round(statistics.median(d), 1),
        "delay_p90_s": round(p90, 1),
        "delay_max_s": round(d[-1], 1),
    }


@dataclass
class Evaluation:
    """The result of :func:`evaluate`: plain dicts, ready for JSON (see :meth:`to_dict`)."""

    overall: dict[str, Any]
    categories: dict[str, dict[str, Any]]
    severities: dict[str, dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    missed: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Everything as one JSON-ready dict."""
        return {
            "overall": self.overall,
            "categories": self.categories,
            "severities": self.severities,
            "config": self.config,
            "missed": self.missed,
        }

    def to_json(self) -> str:
        """Indented JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=str)

    def to_markdown(self, title: str = "Evaluation") -> str:
        """A Markdown report (see :func:`to_markdown`)."""
        return to_markdown(self, title)


def evaluate(
    labels: Iterable[IncidentLabel],
    *,
    alerts: Iterable[Any] | None = None,
    records: Iterable[RecordFlag] | None = None,
    warmup_until: dt.datetime | None = None,
    pre_s: float = 0.0,
    post_s: float = 60.0,
) -> Evaluation:
    """Score ``alerts`` and/or per-record ``records`` against ``labels`` (see module doc).

    Labels that start before ``warmup_until``, and records and alert incidents before it,
    are left out of the scores (the early labels' windows still count as not normal).
    """
    # Every label marks its window as "not normal"; only labels after the warm-up are scored.
    labs = sorted(labels, key=lambda lab: lab.start)
    if warmup_until is not None:
        early = [lab for lab in labs if lab.start < warmup_until]
        labs = [lab for lab in labs if lab.start >= warmup_until]
    else:
        early = []
    pre, post = dt.timedelta(seconds=pre_s), dt.timedelta(seconds=post_s)
    windows: dict[str, list[tuple[dt.datetime, dt.datetime, int]]] = defaultdict(list)
    for i, lab in enumerate(labs):
        windows[lab.node_id].append((lab.start - pre, lab.end + post, i))
    for lab in early:
        windows[lab.node_id].append((lab.start - pre, lab.end + post, -1))
    for w in windows.values():
        w.sort()
    detected: list[dt.datetime | None] = [None] * len(labs)

    def hit(i: int, t: dt.datetime) -> None:
        if i < 0:
            return
        t = max(t, labs[i].start)
        if detected[i] is None or t < detected[i]:  # type: ignore[operator]
            detected[i] = t

    incidents: list[_Incident] = []
    matched_inc = correct_cat = with_cat = 0
    cat_alerts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    if alerts is not None:
        incidents = [
            inc
            for inc in _incidents(alerts)
            if warmup_until is None or inc.opened_at >= warmup_until
        ]
        for inc in incidents:
            found = [
                i
                for lo, hi, i in windows.get(inc.node_id, ())
                if inc.opened_at <= hi and inc.last >= lo
            ]
            for i in found:
                hit(i, inc.opened_at)
            found = [i for i in found if i >= 0] or found
            key = inc.category or "none"
            cat_alerts[key][1] += 1
            if found:
                matched_inc += 1
                cat_alerts[key][0] += 1
                if inc.category is not None:
                    with_cat += 1
                    correct_cat += any(i >= 0 and labs[i].category == inc.category for i in found)

    normal = flagged_normal = 0
    inside = flagged_inside = 0
    if records is not None:
        starts = {n: [w[0] for w in ws] for n, ws in windows.items()}
        for node, t, flagged in records:
            if warmup_until is not None and t < warmup_until:
                continue
            ws = windows.get(node)
            idx = None
            if ws:
                j = bisect.bisect_right(starts[node], t) - 1
                while j >= 0:
                    lo, hi, i = ws[j]
                    if lo <= t <= hi:
                        idx = i
                        break
                    j -= 1
                    if j >= 0 and (t - ws[j][0]).total_seconds() > 86400:
                        break
            if idx is None:
                normal += 1
                flagged_normal += bool(flagged)
            else:
                inside += 1
                if flagged:
                    flagged_inside += 1
                    if alerts is None:
                        hit(idx, t)

    def group(keyf: Any, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for key in keys:
            idx = [i for i, lab in enumerate(labs) if keyf(lab) == key]
            found = [i for i in idx if detected[i] is not None]
            delays = [(detected[i] - labs[i].start).total_seconds() for i in found]  # type: ignore[operator]
            row: dict[str, Any] = {
                "incidents": len(idx),
                "detected": len(found),
                "recall": round(len(found) / len(idx), 4) if idx else None,
                **_stats(delays),
            }
            if keyf is _category and alerts is not None:
                tp, n = cat_alerts.get(key, [0, 0])
                row["alerts"] = n
                row["precision"] = round(tp / n, 4) if n else None
            out[key] = row
        return out

    delays_all = [
        (d - lab.start).total_seconds()
        for d, lab in zip(detected, labs, strict=True)
        if d is not None
    ]
    overall: dict[str, Any] = {
        "incidents": len(labs),
        "detected": len(delays_all),
        "recall": round(len(delays_all) / len(labs), 4) if labs else None,
        **_stats(delays_all),
    }
    if alerts is not None:
        overall["alert_incidents"] = len(incidents)
        overall["precision"] = round(matched_inc / len(incidents), 4) if incidents else None
        overall["category_accuracy"] = round(correct_cat / with_cat, 4) if with_cat else None
    if records is not None:
        overall["normal_records"] = normal
        overall["flagged_normal_records"] = flagged_normal
        overall["fpr"] = round(flagged_normal / normal, 4) if normal else None
        overall["incident_records"] = inside
        overall["record_recall"] = round(flagged_inside / inside, 4) if inside else None
    missed = [
        {
            "incident_id": lab.incident_id,
            "node_id": lab.node_id,
            "category": lab.category,
            "severity": lab.severity,
            "start": lab.start.isoformat(),
            "description": lab.description,
        }
        for d, lab in zip(detected, labs, strict=True)
        if d is None
    ]
    return Evaluation(
        overall=overall,
        categories=group(_category, CATEGORIES),
        severities=group(_severity, SEVERITIES),
        config={
            "pre_s": pre_s,
            "post_s": post_s,
            "warmup_until": warmup_until.isoformat() if warmup_until else None,
        },
        missed=missed,
    )


def _category(lab: IncidentLabel) -> str:
    return lab.category


def _severity(lab: IncidentLabel) -> str:
    return lab.severity


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    if pct:
        return f"{100 * v:.1f}%"
    return f"{v:g}" if isinstance(v, float) else str(v)


def to_markdown(ev: Evaluation, title: str = "Evaluation") -> str:
    """Render an :class:`Evaluation` as Markdown tables (overall, per category, per severity)."""
    o = ev.overall
    lines = [f"## {title}", ""]
    lines.append(
        f"Incidents {o['incidents']}, detected {o['detected']} (recall {_fmt(o['recall'], True)}); "
        f"median delay {_fmt(o['delay_median_s'])} s, p90 {_fmt(o['delay_p90_s'])} s."
    )
    if "fpr" in o:
        lines.append(
            f"False-positive rate on normal records: {_fmt(o['fpr'], True)} "
            f"({o['flagged_normal_records']:,} of {o['normal_records']:,}); "
            f"share of incident records flagged: {_fmt(o['record_recall'], True)}."
        )
    if "precision" in o:
        lines.append(
            f"Alert incidents {o['alert_incidents']}, precision {_fmt(o['precision'], True)}, "
            f"probable category right {_fmt(o['category_accuracy'], True)} of the time."
        )
    fpr = _fmt(o.get("fpr"), True)
    lines += [
        "",
        "| category | incidents | recall | FPR (all normal records) | precision of alerts with this category | median delay s | p90 delay s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cat, r in ev.categories.items():
        lines.append(
            f"| {cat} | {r['incidents']} | {_fmt(r['recall'], True)} | {fpr} | "
            f"{_fmt(r.get('precision'), True)} | {_fmt(r['delay_median_s'])} | {_fmt(r['delay_p90_s'])} |"
        )
    lines += [
        "",
        "| severity | incidents | recall | median delay s | p90 delay s |",
        "|---|---:|---:|---:|---:|",
    ]
    for sev, r in ev.severities.items():
        lines.append(
            f"| {sev} | {r['incidents']} | {_fmt(r['recall'], True)} | "
            f"{_fmt(r['delay_median_s'])} | {_fmt(r['delay_p90_s'])} |"
        )
    if ev.missed:
        lines += ["", "Missed incidents:", ""]
        lines += [
            f"- {m['incident_id']} {m['category']}/{m['severity']} on {m['node_id']} at {m['start']}: {m['description']}"
            for m in ev.missed[:30]
        ]
    return "\n".join(lines) + "\n"
