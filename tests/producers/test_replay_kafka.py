"""``producers.replay`` on the real local broker: per-node order, spacing, labels, dead letters."""

from __future__ import annotations

import collections
import datetime as dt
import time
import uuid
from pathlib import Path

import orjson
import pytest

from producers.replay import main
from stream.kafka import Message, make_admin, make_consumer
from stream.records import DeadLetter, IncidentLabel, decode, encode
from stream.settings import Settings

T0 = dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC)
NODES = ("n-001", "n-002", "n-003")


def record(node: str, t: float, seq: int) -> bytes:
    ts = (T0 + dt.timedelta(seconds=t)).isoformat().replace("+00:00", "Z")
    return orjson.dumps({"timestamp": ts, "node_id": node, "rtt_ms": 10.0 + seq, "bytes_tx": seq})


def write_recording(path: Path, ticks: int, step_s: float) -> list[bytes]:
    """Three nodes, one record each per tick (phases 0, 0.1, 0.2 s), file order by tick."""
    lines = [
        record(node, k * step_s + 0.1 * i, k) for k in range(ticks) for i, node in enumerate(NODES)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


@pytest.fixture
def settings(kafka_bootstrap: str):
    s = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=f"replay-{uuid.uuid4().hex[:10]}.")
    yield s
    with make_admin(s) as admin:
        admin.delete_topics([t for t in admin.list_topics() if t.startswith(s.topic_prefix)])


def read(settings: Settings, name: str, n: int, timeout: float = 30.0) -> list[Message]:
    consumer = make_consumer(
        settings, [settings.topic(name)], group_id=f"r-{uuid.uuid4().hex}", from_beginning=True
    )
    got: list[Message] = []
    try:
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            got += consumer.poll_batch(500, 200)
        got += consumer.poll_batch(500, 500)  # nothing more than expected
    finally:
        consumer.close()
    return got


def args(settings: Settings, *extra: str, backend: str = "kafka-python") -> list[str]:
    return [
        *extra,
        "--bootstrap-servers",
        settings.bootstrap_servers,
        "--topic-prefix",
        settings.topic_prefix,
        "--backend",
        backend,
        "--progress-interval",
        "0",
    ]


def by_node(msgs: list[Message]) -> dict[bytes, list[Message]]:
    out: dict[bytes, list[Message]] = collections.defaultdict(list)
    for m in sorted(msgs, key=lambda m: (m.partition, m.offset)):
        out[m.key].append(m)  # type: ignore[index]
    return out


@pytest.mark.integration
@pytest.mark.timeout(90)
@pytest.mark.parametrize("speed", [1.0, 4.0])
def test_spacing_follows_event_time_at_speed(settings: Settings, tmp_path: Path, speed: float):
    rec = tmp_path / "rec.jsonl"
    lines = write_recording(rec, ticks=9, step_s=0.25)  # 2 s of event time
    t0 = time.time()
    assert main(args(settings, str(rec), "--speed", str(speed), backend="confluent")) == 0
    wall = time.time() - t0
    msgs = read(settings, "telemetry", len(lines))
    assert len(msgs) == len(lines)
    first = min(m.timestamp_ms for m in msgs)
    for node, seq in by_node(msgs).items():
        assert [m.value for m in seq] == [x for x in lines if node in x]
        for m in seq:  # each record sent at (its event time - first event time) / speed
            t = (orjson.loads(m.value)["timestamp"], m.timestamp_ms)
            event_s = (dt.datetime.fromisoformat(t[0]) - T0).total_seconds()
            assert abs((t[1] - first) / 1000 - event_s / speed) < 0.08, (node, event_s)
    assert wall >= 2.2 / speed - 0.1


@pytest.mark.integration
@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend", ["kafka-python", "confluent"])
def test_node_order_labels_and_dead_letters(
    settings: Settings, tmp_path: Path, backend: str, capsys: pytest.CaptureFixture[str]
):
    rec = tmp_path / "rec.jsonl"
    lines = write_recording(rec, ticks=200, step_s=10.0)
    # n-002 reports one sample late (out of event-time order) and two rows are bad
    late = record("n-002", 5.0, 999)
    bad = [b'{"timestamp": "2026-01-05T10:00:00Z", "node_id": "n-001", "rtt_ms": -1}', b"{oops"]
    text = lines[:30] + [late] + lines[30:60] + [bad[0]] + lines[60:] + [bad[1]]
    rec.write_bytes(b"\n".join(text) + b"\n")
    label = IncidentLabel(
        incident_id="i-1",
        node_id="n-003",
        category="disk_full",
        severity="high",
        start=T0 + dt.timedelta(seconds=500),
        end=T0 + dt.timedelta(seconds=900),
    )
    labels_file = tmp_path / "rec.labels.jsonl"
    labels_file.write_bytes(b'{"oops": 1}\n' + encode(label) + b"\n")
    assert main(args(settings, str(rec), "--speed", "max", backend=backend)) == 0
    err = capsys.readouterr().err
    assert f"{rec}:62: bad row: rtt_ms: -1 is below the minimum 0 ms" in err
    assert f"{rec}:{len(text)}: bad row: not valid JSON" in err
    assert f"{labels_file}:1: bad row" in err

    good = [x for x in text if x not in bad]
    msgs = read(settings, "telemetry", len(good))
    assert sorted(m.value for m in msgs) == sorted(good)
    for node, seq in by_node(msgs).items():  # per-node file order, the late sample included
        assert [m.value for m in seq] == [x for x in good if b'"' + node + b'"' in x]
    (lab,) = read(settings, "labels", 1)
    assert lab.key == b"n-003" and decode(lab.value, IncidentLabel) == label
    letters = [decode(m.value, DeadLetter) for m in read(settings, "dead-letter", 3)]
    where = sorted((d.source_topic, d.offset) for d in letters)
    assert where == sorted(
        [(f"file:{rec}", 62), (f"file:{rec}", len(text)), (f"file:{labels_file}", 1)]
    )
    assert {d.original for d in letters} >= set(bad)
    assert all(d.consumer == "producers.replay" and d.partition == -1 for d in letters)


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_csv_with_bad_rows_reaches_the_topics(settings: Settings, tmp_path: Path):
    csv = tmp_path / "legacy.csv"
    csv.write_text(
        "time,host,latency,loss_pct,comment\n"
        "1767607200,h1,12.5,1,ok\n"
        "1767607201,h1,fast,1,bad latency\n"
        "1767607202,h1,13.0,,loss missing: fine\n"
        "1767607203,,13.5,2,no host\n"
        "1767607204,h1,14.0,3,ok\n"
    )
    extra = ["--timestamp-column", "time", "--column", "node_id=host"]
    extra += ["--column", "rtt_ms=latency", "--column", "packet_loss=loss_pct*0.01"]
    assert main(args(settings, str(csv), "--speed", "max", *extra)) == 0
    msgs = read(settings, "telemetry", 3)
    recs = [orjson.loads(m.value) for m in sorted(msgs, key=lambda m: m.offset)]
    assert [r["rtt_ms"] for r in recs] == [12.5, 13.0, 14.0]
    assert [r.get("packet_loss") for r in recs] == [0.01, None, 0.03]
    letters = sorted(
        (decode(m.value, DeadLetter) for m in read(settings, "dead-letter", 2)),
        key=lambda d: d.offset,
    )
    assert [d.offset for d in letters] == [3, 5]
    assert letters[0].original == b"1767607201,h1,fast,1,bad latency"
    assert letters[0].errors[0].field == "rtt_ms"
    assert letters[1].errors[0].field == "node_id"


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_replay_serves_its_counts_while_it_runs(settings: Settings, tmp_path: Path):
    import socket
    import threading
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    rec = tmp_path / "rec.jsonl"
    lines = write_recording(rec, ticks=16, step_s=0.25)  # 4 s of event time at speed 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc: list[int] = []
    argv = args(settings, str(rec), "--speed", "1", "--metrics-port", str(port),
                "--metrics-host", "127.0.0.1", backend="confluent")  # fmt: skip
    t = threading.Thread(target=lambda: rc.append(main(argv)), daemon=True)
    t.start()
    seen: list[float] = []
    while t.is_alive():
        time.sleep(0.5)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
                text = r.read().decode()
        except OSError:
            continue  # not serving yet, or just stopped
        seen += [
            smp.value
            for fam in text_string_to_metric_families(text)
            for smp in fam.samples
            if smp.name == "dwcp_records_produced_total"
            and smp.labels["topic"] == settings.topic("telemetry")
        ]
    t.join()
    assert rc == [0]
    assert seen and seen == sorted(seen) and 0 < seen[-1] <= len(lines), seen
    assert len(set(seen)) >= 2, f"the counter did not move while the replay ran: {seen}"
