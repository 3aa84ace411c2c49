"""Prometheus metrics and health endpoints: units, a consumer scraped over HTTP, and a real
Prometheus server scraping a running consumer (Debian's ``prometheus``, installed by
``scripts/test.sh`` when missing)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream.app import App, Processor
from stream.metrics import Health, Metrics, MetricsServer, reason_class
from stream.records import FieldError
from stream.settings import Settings

N_GOOD = 3000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of an exposition."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class Slow(Processor):
    """Counts records and sleeps per batch, so the consumer stays behind for a few seconds."""

    name, outputs = "slow", ()

    def __init__(self, settings: Any, args: Any, state: Any) -> None:
        self.n = 0

    def handle(self, batch: list[Any]) -> list[Any]:
        self.n += len(batch)
        time.sleep(0.15)
        return []

    def state(self, final: bool = False) -> Any:
        return self.n


# -- units -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("errors", "cls"),
    [
        ([FieldError(field="", reason="record is 90000 bytes, over the limit of 65536")], "too_large"),
        ([FieldError(field="", reason="not valid JSON: unexpected character")], "not_json"),
        ([FieldError(field="node_id", reason="required field is missing or null")], "missing_field"),
        ([FieldError(field="rtt_ms", reason="-4 is below the minimum 0 ms")], "bad_value"),
        ([FieldError(field="timestamp", reason="event time 3600 s ahead of its partition")],
         "timestamp_ahead"),
        ([FieldError(field="", reason="empty value (zero bytes)")], "empty_value"),
        ([FieldError(field="", reason="null value (a tombstone): ...")], "null_value"),
        ([FieldError(field="node_id", reason="given 2 times ('a', 'b'): which one is meant is unknown")],
         "duplicate_field"),
        ([FieldError(field="node_id", reason="the Kafka key 'n-1' is not the record's node_id 'n-2'")],
         "wrong_key"),
        ([], "other"),
    ],
)
def test_dead_letter_reasons_fall_into_a_few_classes(errors: list[FieldError], cls: str) -> None:
    assert reason_class(errors) == cls


def test_health_turns_unready_and_not_live_with_the_reason() -> None:
    h = Health(liveness_timeout_s=0.05)
    assert h.ready() == (False, "restoring state")
    h.restored = True
    assert h.ready() == (False, "no partition assigned yet")
    h.beat(assigned=True)
    assert h.ready() == (True, "ok") and h.live()[0]
    time.sleep(0.1)
    ok, why = h.live()
    assert not ok and "has not completed an iteration" in why


def test_lag_of_a_revoked_partition_disappears() -> None:
    m = Metrics(process=False)
    m.set_lag({("t", 0): 5, ("t", 1): 7})
    m.set_lag({("t", 1): 2})
    got = samples(m.exposition().decode())
    assert got[("dwcp_consumer_lag_records", (("partition", "1"), ("topic", "t")))] == 2
    assert ("dwcp_consumer_lag_records", (("partition", "0"), ("topic", "t"))) not in got
    assert got[("dwcp_assigned_partitions", ())] == 1


def test_a_taken_metrics_port_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(Exception, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            MetricsServer(Metrics(process=False), Health(), "127.0.0.1", port)


def test_the_endpoints_answer_and_unknown_paths_are_404() -> None:
    m, h = Metrics(), Health()
    server = MetricsServer(m, h, "127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{server.port}"
        code, text = get(base + "/metrics")
        assert code == 200 and "process_resident_memory_bytes" in text
        assert get(base + "/readyz") == (503, "restoring state\n")
        assert get(base + "/healthz")[0] == 200
        assert get(base + "/nope")[0] == 404
    finally:
        server.close()


# -- a consumer on the real broker ---------------------------------------------------------------
def _fill(settings: Settings, produce: Any, make_telemetry: Any) -> None:
    records: list[tuple[bytes, bytes]] = [
        (f"n-{i % 9:03d}".encode(), make_telemetry(f"n-{i % 9:03d}", i)) for i in range(N_GOOD)
    ]
    records += [(b"n-bad", b"{not json"), (b"n-bad", b'{"timestamp": "2026-01-05T10:00:00Z"}')]
    produce(settings, settings.topic("telemetry"), records)


def _start(
    settings: Settings, tmp_path: Path, port: int, *extra: str
) -> tuple[App, threading.Thread]:
    env = {
        "DWCP_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "DWCP_BACKEND": settings.backend,
        "DWCP_TOPIC_PREFIX": settings.topic_prefix,
        "DWCP_METRICS_PORT": str(port),
        "DWCP_METRICS_HOST": "127.0.0.1",
        "DWCP_POLL_TIMEOUT_MS": "200",
    }
    app = App(
        [Slow],
        ["--from-beginning", "--idle-timeout", "3", "--batch-size", "100",
         "--state-dir", str(tmp_path / "state"), "--interval", "60", *extra],
        environ=env,
    )  # fmt: skip
    t = threading.Thread(target=app.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    return app, t


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_running_consumer_serves_records_lag_and_health(
    pipeline: Settings, produce_records: Any, make_telemetry: Any, tmp_path: Path
) -> None:
    _fill(pipeline, produce_records, make_telemetry)
    port = free_port()
    app, t = _start(pipeline, tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    topic = pipeline.topic("telemetry")
    lags: list[float] = []
    ready = []
    last: dict[Any, float] = {}
    while t.is_alive():
        try:
            code, text = get(base + "/metrics")
            ready.append(get(base + "/readyz")[0])
            health = get(base + "/healthz")[0]
        except OSError:  # the server closes as the run ends, a moment before the thread does
            t.join(timeout=15)
            if t.is_alive():
                raise
            break
        assert code == 200 and health == 200
        last = samples(text)
        if any(n == "dwcp_consumer_lag_records" for n, _l in last):
            lags.append(sum(v for (n, _l), v in last.items() if n == "dwcp_consumer_lag_records"))
        time.sleep(0.3)
    t.join()
    assert app.processors[0].n == N_GOOD
    assert last, "never scraped"
    assert lags and max(lags) > 0, f"the consumer was behind but lag never showed: {lags}"
    assert 200 in ready
    # the last 15 s of event time are held for order, uncommitted, so they count as lag until
    # they are handed on at the idle stop: the final figures
    last = samples(app.metrics.exposition().decode())
    assert sum(v for (n, _l), v in last.items() if n == "dwcp_consumer_lag_records") == 0
    consumed = last[("dwcp_records_consumed_total", (("topic", topic),))]
    assert consumed == N_GOOD + 2
    assert last[("dwcp_dead_letters_total", (("reason", "not_json"),))] == 1
    assert last[("dwcp_dead_letters_total", (("reason", "missing_field"),))] == 1
    assert last[("dwcp_records_produced_total", (("topic", pipeline.topic("dead-letter")),))] == 2
    assert last[("dwcp_batch_duration_seconds_count", ())] >= N_GOOD / 100
    assert last[("dwcp_commit_duration_seconds_count", ())] >= N_GOOD / 100
    assert last[("dwcp_event_time_watermark_seconds", ())] > 1.7e9  # a 2026 event time
    assert ("dwcp_model_info", (("processor", "slow"), ("version", "none"))) in last


# -- a real Prometheus -------------------------------------------------------------------------
@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A real Prometheus server scraping 127.0.0.1:<target port> every second:
    ``(its base URL, the target port to serve metrics on)``."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "the prometheus binary is missing: scripts/test.sh installs Debian's package "
            "(apt-get install prometheus); run it, or install it by hand",
            pytrace=False,
        )
    target, web = free_port(), free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
        "scrape_configs:\n  - job_name: dwcp\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
    )
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{web}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{web}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if get(base + "/-/ready")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prometheus did not start:\n{(tmp_path / 'prometheus.log').read_text()}")
            time.sleep(0.2)
        yield base, target
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def query_range(base: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": "1s"})
    code, text = get(f"{base}/api/v1/query_range?{q}")
    assert code == 200, text
    doc = json.loads(text)
    assert doc["status"] == "success", doc
    return list(doc["data"]["result"])


def query(base: str, expr: str) -> list[dict[str, Any]]:
    code, text = get(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    assert code == 200, text
    return list(json.loads(text)["data"]["result"])


def wait_for(what: str, check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.mark.integration
@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", ["confluent"])
def test_prometheus_scrapes_a_consumer_and_sees_lag_and_records_move(
    prometheus: tuple[str, int],
    pipeline: Settings,
    produce_records: Any,
    make_telemetry: Any,
    tmp_path: Path,
) -> None:
    base, port = prometheus
    topic = pipeline.topic("telemetry")
    # --no-align: every record is handed on (and committed) as it comes
    app, t = _start(pipeline, tmp_path, port, "--no-align", "--idle-timeout", "150")
    try:
        wait_for("prometheus to scrape the consumer", lambda: query(base, 'up{job="dwcp"} == 1'))
        started = time.time()
        _fill(pipeline, produce_records, make_telemetry)
        expr = f'dwcp_records_consumed_total{{topic="{topic}"}}'
        wait_for(
            "prometheus to see every record consumed",
            lambda: [float(r["value"][1]) for r in query(base, expr)] == [N_GOOD + 2],
        )
        time.sleep(2.5)  # two more scrapes: the lag after the last commit
        ended = time.time()
        dead = query(base, 'sum(dwcp_dead_letters_total{reason=~"not_json|missing_field"})')
        assert [float(r["value"][1]) for r in dead] == [2]
    finally:
        assert app.loop is not None
        app.loop.stop()
        t.join(30)
    assert app.processors[0].n == N_GOOD
    values = [float(v) for _t, v in query_range(base, expr, started, ended)[0]["values"]]
    assert len(set(values)) >= 3, f"the record counter did not move between scrapes: {values}"
    assert values == sorted(values) and values[-1] == N_GOOD + 2
    lag = query_range(base, "sum(dwcp_consumer_lag_records)", started, ended)
    assert lag, "prometheus has no dwcp_consumer_lag_records series"
    lags = [float(v) for _t, v in lag[0]["values"]]
    assert max(lags) > 0 and lags[-1] == 0, f"lag should rise, then fall to 0: {lags}"
