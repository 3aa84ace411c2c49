"""consumers.alerts: filters, de-duplication, output formats; one run on the real broker."""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid

import pytest

from consumers import alerts as sub
from stream.kafka import Message, make_admin, make_producer
from stream.records import Alert, encode
from stream.settings import Settings
from stream.topics import ensure_topics

T = dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)


def mk(
    i: int, node: str = "n-1", sev: str = "high", cat: str | None = "crash", region: str = "us-east"
) -> Alert:
    return Alert(
        alert_id=f"a{i}",
        incident_id=f"i{i}",
        node_id=node,
        status="open",
        severity=sev,  # type: ignore[arg-type]
        score=0.999,
        threshold=0.995,
        event_time=T,
        opened_at=T,
        source="reliability",
        category=cat,
        region=region,
    )  # type: ignore[arg-type]


def msg(a: Alert) -> tuple[Message, Alert]:
    return Message("dwcp.alerts", 0, 0, a.node_id.encode(), encode(a), 0), a


def test_filters_dedup_and_json() -> None:
    out = io.StringIO()
    keep = sub.AlertFilter(
        min_severity="medium",
        categories=frozenset({"crash", "unknown"}),
        regions=frozenset({"us-east"}),
    )
    printer = sub.AlertPrinter(keep, out, as_json=True)
    batch = [
        mk(1),
        mk(1),
        mk(2, sev="low"),
        mk(3, cat="disk_full"),
        mk(4, cat=None),
        mk(5, region="eu-west"),
    ]
    printer.handle([msg(a) for a in batch])
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [x["alert_id"] for x in lines] == ["a1", "a4"]


def test_decoder_rejects_non_alerts() -> None:
    assert sub.decode_alert(b"{}")[0] is None and sub.decode_alert(encode(mk(1)))[1] == []


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_reads_the_topic_from_the_start(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    s = Settings(
        bootstrap_servers=kafka_bootstrap, topic_prefix=f"t-{uuid.uuid4().hex[:12]}.", partitions=1
    )
    ensure_topics(s)
    try:
        with make_producer(s) as p:
            for a in (mk(1, node="n-1"), mk(2, node="n-2"), mk(1, node="n-1")):
                p.produce(s.topic("alerts"), encode(a), a.node_id.encode())
            p.flush(30)
        out = io.StringIO()
        rc = sub.main(
            [
                "--bootstrap-servers",
                kafka_bootstrap,
                "--topic-prefix",
                s.topic_prefix,
                "--from-beginning",
                "--idle-timeout",
                "3",
                "--node",
                "n-1",
                "--interval",
                "1",
            ],
            out=out,
        )
        assert rc == 0
        assert out.getvalue().count("n-1") == 1 and "n-2" not in out.getvalue()
        # status lines on stderr: rate, read, printed, lag and event-time lag
        lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("alerts:")]
        assert lines, "no status line"
        last = lines[-1]
        assert "read 3  printed 1  lag 0  event-time lag " in last, last
        etl = float(last.split("event-time lag ")[1].split(" s")[0].replace(",", ""))
        age = (dt.datetime.now(dt.UTC) - mk(2).event_time).total_seconds()
        assert abs(etl - age) < 60, (etl, age)
    finally:
        with make_admin(s) as admin:
            admin.delete_topics([t for t in admin.list_topics() if t.startswith(s.topic_prefix)])
