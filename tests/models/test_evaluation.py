"""models.evaluation: recall, precision, FPR, delays, rendering."""

from __future__ import annotations

import datetime as dt
import json

from models.evaluation import RecordFlag, evaluate
from stream.records import Alert, IncidentLabel

T0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


def at(s: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=s)


def label(i: str, node: str, cat: str, sev: str, start: float, end: float) -> IncidentLabel:
    return IncidentLabel(
        incident_id=i, node_id=node, category=cat, severity=sev, start=at(start), end=at(end)
    )  # type: ignore[arg-type]


def alert(
    inc: str, node: str, status: str, t: float, opened: float, cat: str | None = None
) -> Alert:
    return Alert(
        alert_id=f"{inc}-{status}-{t}",
        incident_id=inc,
        node_id=node,
        status=status,
        severity="high",  # type: ignore[arg-type]
        score=0.999,
        threshold=0.99,
        event_time=at(t),
        opened_at=at(opened),
        source="t",
        category=cat,
    )  # type: ignore[arg-type]


LABELS = [
    label("l1", "a", "crash", "high", 100, 200),
    label("l2", "b", "disk_full", "low", 100, 400),
    label("l3", "c", "memory_leak", "critical", 1000, 1200),
]


def test_alert_level_recall_precision_delay() -> None:
    alerts = [
        alert("i1", "a", "open", 110, 110, "crash"),
        alert("i1", "a", "resolved", 260, 110, "crash"),
        alert("i2", "c", "open", 900, 900, "memory_leak"),  # open before l3 starts: delay 0
        alert("i2", "c", "update", 1100, 900, "memory_leak"),
        alert("i3", "b", "open", 5000, 5000),  # nothing there: false alert
    ]
    ev = evaluate(LABELS, alerts=alerts, post_s=60)
    assert ev.overall["recall"] == round(2 / 3, 4)
    assert ev.categories["crash"]["delay_median_s"] == 10.0
    assert ev.categories["memory_leak"]["delay_median_s"] == 0.0
    assert ev.categories["disk_full"]["recall"] == 0.0
    assert ev.overall["precision"] == round(2 / 3, 4)
    assert ev.overall["category_accuracy"] == 1.0
    assert ev.severities["low"]["detected"] == 0
    assert [m["incident_id"] for m in ev.missed] == ["l2"]


def test_record_level_fpr_ignores_the_margin_and_warmup() -> None:
    recs = [RecordFlag("a", at(s), True) for s in (50, 150, 230, 300)] + [
        RecordFlag("a", at(s), False) for s in (400, 500)
    ]
    ev = evaluate(LABELS, records=recs, post_s=60)
    # 150 inside l1, 230 in the 60 s margin (neither), 50 and 300 flagged normal, 400/500 clean
    assert ev.overall["normal_records"] == 4 and ev.overall["flagged_normal_records"] == 2
    assert ev.overall["fpr"] == 0.5 and ev.categories["crash"]["recall"] == 1.0
    late = evaluate(LABELS, records=recs, post_s=60, warmup_until=at(120))
    assert late.overall["incidents"] == 1 and late.overall["normal_records"] == 3


def test_rendering() -> None:
    ev = evaluate(
        LABELS,
        alerts=[alert("i1", "a", "open", 110, 110, "crash")],
        records=[RecordFlag("z", at(1), False)],
    )
    doc = json.loads(ev.to_json())
    assert doc["overall"]["incidents"] == 3 and "crash" in doc["categories"]
    md = ev.to_markdown("T")
    assert md.startswith("## T") and "| crash | 1 | 100.0% |" in md and "Missed incidents" in md
