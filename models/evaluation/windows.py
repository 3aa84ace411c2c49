"""Window-level evaluation of a window scorer (the consensus autoencoder) against labels.

Examples
--------
>>> labels = [{"node_id": "a", "start": "2026-01-05T00:01:40+00:00",
...            "end": "2026-01-05T00:03:20+00:00", "category": "consensus_degradation",
...            "severity": "low"}]
>>> t0 = 1767571200.0
>>> scored = [("a", t0 + s, 0.0, 100 <= s <= 200) for s in range(0, 600, 10)]
>>> ev = evaluate_windows(scored, [], labels, window_s=50.0, after=t0)
>>> ev["recall_windows"], ev["fpr_windows"]
(1.0, 0.0)
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from stream.records import Alert


def evaluate_windows(
    scored: list[tuple[Any, float, float, bool]],
    alerts: list[Alert],
    labels: list[dict[str, Any]],
    window_s: float,
    after: float,
) -> dict[str, Any]:
    """Recall of labelled consensus incidents (an ``open`` alert between start and end +
    ``window_s``) and FPR of normal windows (no incident of any kind overlapping the window).
    Only incidents starting and windows ending after ``after`` (the warm-up) count."""
    spans: dict[Any, list[tuple[float, float, str]]] = {}
    for lab in labels:
        t0 = dt.datetime.fromisoformat(lab["start"]).timestamp()
        t1 = dt.datetime.fromisoformat(lab["end"]).timestamp()
        spans.setdefault(lab["node_id"], []).append((t0, t1, lab["category"]))
    normal = fp = pos = tp = 0
    for node, ts, _score, flagged in scored:
        if ts < after:
            continue
        hit = [c for t0, t1, c in spans.get(node, ()) if t0 - 5 <= ts and ts - window_s <= t1 + 5]
        if not hit:
            normal += 1
            fp += flagged
        elif all(c == "consensus_degradation" for c in hit):
            inside = [1 for t0, t1, _c in spans[node] if t0 <= ts <= t1]
            if inside:
                pos += 1
                tp += flagged
    opens = [(a.node_id, a.event_time.timestamp()) for a in alerts if a.status == "open"]
    incidents = [
        lab
        for lab in labels
        if lab["category"] == "consensus_degradation"
        and dt.datetime.fromisoformat(lab["start"]).timestamp() >= after
    ]
    by_sev: dict[str, list[int]] = {}
    detected = 0
    for lab in incidents:
        t0 = dt.datetime.fromisoformat(lab["start"]).timestamp()
        t1 = dt.datetime.fromisoformat(lab["end"]).timestamp() + window_s
        ok = any(n == lab["node_id"] and t0 <= t <= t1 for n, t in opens)
        detected += ok
        by_sev.setdefault(lab["severity"], [0, 0])
        by_sev[lab["severity"]][0] += ok
        by_sev[lab["severity"]][1] += 1
    spans_all = [(n, t0, t1) for n, v in spans.items() for t0, t1, _c in v]
    false_opens = sum(
        not any(n == m and t0 - 5 <= t <= t1 + window_s for m, t0, t1 in spans_all)
        for n, t in opens
    )
    return {
        "incidents": len(incidents),
        "detected": detected,
        "recall_incidents": round(detected / len(incidents), 4) if incidents else None,
        "recall_by_severity": {k: f"{v[0]}/{v[1]}" for k, v in sorted(by_sev.items())},
        "normal_windows": normal,
        "fpr_windows": round(fp / normal, 4) if normal else None,
        "incident_windows": pos,
        "recall_windows": round(tp / pos, 4) if pos else None,
        "alerts_open": len(opens),
        "false_alert_opens": false_opens,
    }
