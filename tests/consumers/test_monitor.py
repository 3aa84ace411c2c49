"""consumers.monitor: rates, lag and event-time lag of what flows through the topics."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import orjson
import pytest

from consumers import monitor
from stream.kafka import make_admin, make_producer
from stream.records import Alert, encode
from stream.settings import Settings
from stream.topics import ensure_topics


def alert(when: dt.datetime) -> Alert:
    return Alert(
        alert_id="a1", incident_id="i1", node_id="n-1", status="open", severity="high",
        score=0.99, threshold=0.9, event_time=when, opened_at=when, source="reliability",
    )  # fmt: skip


def test_event_time_lag_is_the_wall_clock_minus_the_newest_event_time_per_topic() -> None:
    t = monitor.Tally()
    now = dt.datetime.now(dt.UTC)
    for age in (30.0, 10.0, 20.0):  # out of order: the newest counts
        stamp = (now - dt.timedelta(seconds=age)).isoformat()
        t.add("telemetry", b"n-1", orjson.dumps({"timestamp": stamp, "node_id": "n-1"}))
    t.add("telemetry", b"n-1", b"{not json")  # ignored, not a crash
    t.add("alerts", b"n-1", encode(alert(now - dt.timedelta(seconds=25))))
    lag = t.summary()["event_time_lag_s"]
    assert lag["telemetry"] == pytest.approx(10.0, abs=1.0)
    assert lag["alerts"] == pytest.approx(25.0, abs=1.0)
    assert "predictions" not in lag
    assert " | event-time lag telemetry 10." in t.line(time.monotonic())


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_the_monitor_shows_group_lag_and_event_time_lag(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    s = Settings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"t-{uuid.uuid4().hex[:12]}.", partitions=2
    )
    ensure_topics(s)
    try:
        newest = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=120)
        with make_producer(s) as p:
            for i in range(50):
                stamp = (newest - dt.timedelta(seconds=49 - i)).isoformat()
                value = orjson.dumps({"timestamp": stamp, "node_id": f"n-{i % 5}"})
                p.produce(s.topic("telemetry"), value, f"n-{i % 5}".encode())
            p.flush(30)
        rc = monitor.main(
            ["--bootstrap-servers", kafka_bootstrap, "--topic-prefix", s.topic_prefix,
             "--from-beginning", "--max-seconds", "6", "--json", "--lag", "ingest"]
        )  # fmt: skip
        assert rc == 0
        out, err = capsys.readouterr()
        summary = json.loads(out)
        assert summary["messages"]["telemetry"] == 50
        assert summary["lag_records"] == {"ingest": 50}  # a group that never committed
        assert 119 < summary["event_time_lag_s"]["telemetry"] < 140
        assert "| lag ingest 50" in err and "| event-time lag telemetry 1" in err
    finally:
        with make_admin(s) as admin:
            admin.delete_topics([t for t in admin.list_topics() if t.startswith(s.topic_prefix)])
