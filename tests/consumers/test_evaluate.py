"""``consumers.evaluate`` on a hand-made case whose figures are worked out by hand below."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest

from consumers.evaluate import main
from stream.kafka import make_admin, make_producer
from stream.records import Alert, IncidentLabel, Prediction, encode
from stream.settings import Settings
from stream.topics import ensure_topics

T0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


def at(s: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=s)


def label(iid: str, node: str, cat: str, sev: str, start: float, end: float) -> IncidentLabel:
    return IncidentLabel(
        incident_id=iid, node_id=node, category=cat, severity=sev, start=at(start), end=at(end)
    )  # type: ignore[arg-type]


def alerts(iid: str, node: str, source: str, opened: float, last: float) -> list[Alert]:
    common = dict(incident_id=iid, node_id=node, severity="high", threshold=0.8, source=source)
    return [
        Alert(
            alert_id=f"{iid}-o",
            status="open",
            score=0.9,
            event_time=at(opened),
            opened_at=at(opened),
            **common,
        ),  # type: ignore[arg-type]
        Alert(
            alert_id=f"{iid}-r",
            status="resolved",
            score=0.1,
            event_time=at(last),
            opened_at=at(opened),
            **common,
        ),  # type: ignore[arg-type]
    ]


LABELS = [
    label("L1", "a", "crash", "high", 100, 200),
    label("L2", "b", "disk_full", "low", 100, 300),
    label("L3", "c", "memory_leak", "critical", 400, 500),
    label("L4", "a", "network_failure", "medium", 1000, 1100),  # missed
]
ALERTS = [
    *alerts("X1", "a", "rel", 130, 160),  # detects L1 after 30 s
    *alerts("X2", "b", "rel", 350, 380),  # detects L2 after 250 s (within end + 60 s)
    *alerts("X3", "d", "rel", 700, 720),  # a false alarm
    *alerts("Y1", "c", "cons", 390, 450),  # open before L3 starts: delay 0
]
THROUGHPUT = [100, 100, 100, 200, 200, 200]  # link a -> p at t = 0, 10, ..., 50


def telemetry() -> list[bytes]:
    out = []
    for k in range(121):  # every node every 10 s for 1200 s: 484 records
        for node in "abcd":
            rec = {"timestamp": at(10 * k).isoformat(), "node_id": node, "peer_id": "p"}
            rec["mem_util"] = 50.0
            if node == "a" and k < len(THROUGHPUT):
                rec["throughput_mbps"] = THROUGHPUT[k]
            out.append(json.dumps(rec).encode())
    return out


def forecasts() -> list[Prediction]:
    # h=1 forecasts made at k=1..4 (actuals 100, 200, 200, 200): errors 10, 20, 0, 10
    # and one at k=5, whose actual never comes (unmatched)
    out = [
        Prediction(
            kind="bandwidth_forecast",
            node_id="a",
            peer_id="p",
            event_time=at(10 * k),
            model_version="bw-v1",
            target="throughput_mbps",
            horizon=1,
            value=v,
            lower=v - 15,
            upper=v + 15,
        )
        for k, v in ((1, 110.0), (2, 180.0), (3, 200.0), (4, 210.0), (5, 300.0))
    ]
    return out


def check(report: dict) -> None:
    det = report["detection"]
    o = det["pipeline"]["overall"]
    assert (o["incidents"], o["detected"], o["recall"]) == (4, 3, 0.75)
    assert (o["alert_incidents"], o["precision"]) == (4, 0.75)
    assert (o["delay_median_s"], o["delay_max_s"]) == (30.0, 250.0)
    # normal records: 484 minus 78 inside the windows [start, end + 60 s]; flagged: d 700..720
    # (3), b 370 and 380 (2, after L2's window), c 390 (1, before L3's start)
    assert (o["normal_records"], o["flagged_normal_records"], o["fpr"]) == (406, 6, 0.0148)
    assert det["pipeline"]["delays"] == {"L1": 30.0, "L2": 250.0, "L3": 0.0, "L4": None}
    m = det["pipeline"]["matrix"]
    assert m["crash"]["high"] == {"incidents": 1, "detected": 1, "recall": 1.0}
    assert m["network_failure"]["medium"]["recall"] == 0.0
    assert m["crash"]["low"]["recall"] is None
    rel, cons = det["rel"]["overall"], det["cons"]["overall"]
    assert (rel["detected"], rel["precision"], cons["detected"], cons["precision"]) == (
        2,
        0.6667,
        1,
        1.0,
    )
    f = report["forecast"]["kinds"]["bandwidth_forecast"]
    h1 = f["horizons"]["1"]
    assert (f["scored"], f["unmatched"]) == (4, 1)
    # persistence errors 0, 100, 0, 0; EWMA(0.3) levels 100, 100, 130, 151 -> 0, 100, 70, 49
    assert (h1["n"], h1["mae"], h1["mae_persistence"], h1["mae_ewma"]) == (4, 10.0, 25.0, 54.75)
    assert (h1["mape"], h1["skill"], h1["coverage"]) == (0.0625, 0.6, 0.75)
    assert report["compression"]["available"] is False
    assert report["compression"]["reason"].startswith("not available yet")
    assert report["headline"]["recall"] == 0.75


def write_jsonl(path: Path, items: list) -> str:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else encode(x)) + b"\n" for x in items))
    return str(path)


def test_hand_made_case_from_files(tmp_path: Path):
    args = ["--warmup-s", "0", "--out", str(tmp_path / "out")]
    args += ["--labels", write_jsonl(tmp_path / "l.jsonl", LABELS)]
    args += ["--alerts", write_jsonl(tmp_path / "a.jsonl", ALERTS)]
    args += ["--telemetry", write_jsonl(tmp_path / "t.jsonl", telemetry())]
    args += ["--predictions", write_jsonl(tmp_path / "p.jsonl", forecasts())]
    assert main(args) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    check(report)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "recall 75.0% (3/4), precision 75.0%, false-positive rate 1.5%" in md
    assert "| 1 | 4 | 10.00 | 25.00 | 54.75 | 6.2% |" in md
    assert "not available yet: no compression recommendations" in md
    plots = report["plots"]
    assert len(plots["timelines"]) == 4
    for key in ("recall_pipeline", "delays_rel", "forecast_bandwidth_forecast"):
        assert (tmp_path / "out" / plots[key]).read_bytes()[:4] == b"\x89PNG"
    assert all((tmp_path / "out" / p).is_file() for p in plots["timelines"])


def test_nothing_yet_but_labels(tmp_path: Path):
    args = ["--out", str(tmp_path), "--no-plots"]
    assert main([*args, "--labels", write_jsonl(tmp_path / "l.jsonl", LABELS)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    for part in ("detection", "forecast", "compression"):
        assert report[part]["available"] is False
        assert report[part]["reason"].startswith("not available yet")
    assert report["headline"] == {}
    assert "No figures yet" in (tmp_path / "report.md").read_text()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_hand_made_case_from_the_topics(kafka_bootstrap: str, tmp_path: Path):
    settings = Settings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"ev-{uuid.uuid4().hex[:10]}."
    )
    ensure_topics(settings, partitions=2)
    try:
        with make_producer(settings) as producer:
            for name, items in (
                ("labels", LABELS),
                ("alerts", ALERTS + ALERTS[:2]),  # at-least-once duplicates are dropped
                ("telemetry", telemetry()),
                ("predictions", forecasts()),
            ):
                for x in items:
                    value = x if isinstance(x, bytes) else encode(x)
                    producer.produce(settings.topic(name), value, b"k")
            producer.flush(30)
        args = ["--warmup-s", "0", "--no-plots", "--out", str(tmp_path), "--idle-timeout", "2"]
        args += ["--bootstrap-servers", kafka_bootstrap, "--topic-prefix", settings.topic_prefix]
        assert main(args) == 0
        check(json.loads((tmp_path / "report.json").read_text()))
    finally:
        with make_admin(settings) as admin:
            admin.delete_topics(
                [t for t in admin.list_topics() if t.startswith(settings.topic_prefix)]
            )


def test_compression_regret_when_the_recommendations_carry_it():
    from consumers.report_metrics import compression_summary

    def rec(action: str, **extra: float) -> Prediction:
        return Prediction(
            kind="compression_choice",
            node_id="a",
            peer_id="p",
            event_time=T0,
            model_version="c-v1",
            value=0.2,
            extra={"action": action, "gain_vs_none": 0.5, **extra},
        )

    recs = [rec("lz4", expected_time_s=2.0, best_time_s=1.6), rec("zstd-3", regret=0.0)]
    s = compression_summary([*recs, rec("lz4")])
    assert s["chosen"] == {"lz4": 2, "zstd-3": 1}
    assert (s["with_regret"], s["regret_mean"], s["regret_max"], s["optimal_share"]) == (
        2,
        0.125,
        0.25,
        0.5,
    )
    assert (s["expected_gain_vs_best_fixed_mean"], s["expected_gain_vs_none_mean"]) == (0.2, 0.5)


def test_doctests():
    import doctest

    from consumers import report_metrics

    result = doctest.testmod(report_metrics)
    assert result.attempted > 0 and result.failed == 0
