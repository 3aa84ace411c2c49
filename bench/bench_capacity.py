"""Whole-pipeline capacity: the highest event rate every model keeps up with (not a test).

One command, on the local broker (started here if it is not running, and stopped again)::

    python bench/bench_capacity.py [--rates 500,1000,2000,5000,10000] [--seconds 60] [--json]

**The deployment** is the one the README recommends and ``scripts/demo.sh`` runs: one process
for every model (``python -m consumers run reliability consensus bandwidth compression``: one
poll and one validation per record), live settings (background first fits and retrains), the
demo's shortened LSTM warm-ups (``--warmup-windows 3000``). ``--deployment split`` runs two
processes instead (reliability alone, and the three TensorFlow models together: a group each),
``--deployment separate`` one process per consumer. Every rate starts from the **same warm
state**: the pipeline first learns ``--warm-records`` records of the same fleet from a file
(``--with-state``, fits inline), and each rate run restores a copy of that state, so no rate
pays for first fits.

**Each rate**: fresh topics (6 partitions), the consumers started, and once each reports ready
on its metrics port (``/readyz``: state restored, partitions assigned; ``ready_s``, seconds
from launch; at most ``--settle`` seconds are waited, until 2026-12-08 a fixed 8 s, after
which the consumers were often still joining and the first seconds' records waited for them),
1 s later ``producers.synthetic`` at that fixed rate for ``--seconds``
(20 nodes x 4 links, 5 s of event time between a link's samples, sped up to the rate: the
fleet's event time continues where the warm state stopped). Every second the benchmark reads
the topic's end offsets and each group's committed offsets (lag = produced - committed). After
the producer stops it waits up to ``--drain`` seconds for the lag to reach zero (an aligned
consumer holds the newest records until its partitions have been idle ``--align-idle-ms``,
5 s by default, so a lag that falls to 0 within a few seconds is normal).

A rate is **sustained** (:func:`verdict`) when the producer achieved at least 95% of it and
the lag stayed bounded: at most 5 s of input behind when the producer stopped, growing by at
most 5% of the rate per second over the second half of the run (least-squares slope), and
back to 0 within 10 s of the producer's end. Each consumer process also writes its
``--summary``; the result keeps its loop figures (``loops``), with the seconds the reliability
loop spent installing forest refits at their swap points (``forest_waited_s``).

**Latency** (method): every record's Kafka timestamp is its produce time (CreateTime). For an
alert or a prediction about event time ``e``, latency = its own Kafka timestamp minus the
earliest produce time of any telemetry record with event time >= ``e``: from the moment the
data that decides it existed on the broker to the moment the answer did. It includes the
consumer's deliberate event-time holds (late-record allowance, tick steps). Alerts: ``open``
events; predictions: every bandwidth forecast and compression recommendation (or a sample of
``--max-latency-samples``). Answers about the input's last 25 s of event time (the
consumers' ``--allowed-lateness`` of 15 s and two 5-s ticks: a node's tick is complete once its
next one arrives) are left out and counted (``left_out_at_the_end``): with no later record to
move the watermark, they wait for every partition to go idle after the producer stops
(``--align-idle-ms``, 5 s), which a live stream never does.

**Side by side, in the same run**, on the highest rate's topic (a backlog; the first
``--backlog-records`` records): a raw confluent-kafka consume, the bare river
MinMaxScaler + HalfSpaceTrees loop on pre-decoded records, a minimal Quix Streams app doing HST
scoring and producing alerts (``bench/quix_hst_app.py``, in its own environment
``.cache/bench/quix-venv``, created here with uv; never a project dependency),
``consumers.reliability`` alone, two ``consumers.reliability`` processes in one group (each
member's records and their skew) and the whole pipeline process, all from the warm state
(rates from the group's committed offsets until ``--backlog-records`` are committed; and,
timed as the Quix app is, from each process's first record to its stop, from its
``--summary``: ``rate_from_first_record``); the records and distinct keys (nodes) per
partition; records/s and the ratios.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script without an install
import msgspec  # noqa: E402

from stream.kafka import make_admin, make_consumer  # noqa: E402
from stream.schema import NUMERIC_FIELDS, decode_telemetry  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.topics import ensure_topics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "capacity.json"
QUIX_VENV = ROOT / ".cache" / "bench" / "quix-venv"
QUIX_VERSION = "3.28.1"
PROCESSORS = ("reliability", "consensus", "bandwidth", "compression")
NODES, LINKS, INTERVAL, SEED = 20, 4, 5.0, 3
LATENESS_S = 15.0  # the consumers' --allowed-lateness (default)
FLEET = f"{NODES} nodes x {LINKS} links, {INTERVAL:g} s, seed {SEED}"
#: A sustained rate leaves at most this many seconds of input unread when production stops
#: and drains within MAX_DRAIN_S (an aligned consumer holds its newest records until its
#: partitions have been idle --align-idle-ms, 5 s, after the last one).
MAX_LAG_S, MAX_DRAIN_S = 5.0, 10.0
GROUP = "bench-capacity"  # one name for the warm run and every rate run: the same checkpoints


class _Stamp(msgspec.Struct):
    timestamp: str | None = None  # telemetry


class _Event(msgspec.Struct):
    event_time: str
    status: str = ""
    kind: str = ""


_stamp = msgspec.json.Decoder(_Stamp).decode
_event = msgspec.json.Decoder(_Event).decode


def _iso_ms(text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _env() -> dict[str, str]:
    return {**os.environ, "DWCP_BACKEND": "confluent", "TF_CPP_MIN_LOG_LEVEL": "2"}


DEPLOYMENTS = ("one", "split", "separate")


def _run_tail(names: tuple[str, ...]) -> list[str]:
    """``consumers run NAMES`` with the demo's shortened LSTM warm-ups."""
    warm = [f for n in names if n in ("bandwidth", "consensus")
            for f in (f"--{n}.warmup-windows", "3000")]  # fmt: skip
    return ["consumers", "run", *names, *warm]


def _deployment(mode: str) -> list[tuple[str, list[str]]]:
    """(group, argv tail) of each consumer process of the deployment ``mode``."""
    warm = ["--warmup-windows", "3000"]
    if mode == "separate":
        return [
            (f"{GROUP}-{n}", [f"consumers.{n}", *(warm if n in ("bandwidth", "consensus") else [])])
            for n in PROCESSORS
        ]
    if mode == "split":
        rest = tuple(n for n in PROCESSORS if n != "reliability")
        return [(f"{GROUP}-reliability", ["consumers.reliability"]),
                (f"{GROUP}-models", _run_tail(rest))]  # fmt: skip
    return [(GROUP, _run_tail(PROCESSORS))]


#: Each consumer's flags for fitting inline (the warm-up run: its state must be fitted).
INLINE = {
    "reliability": ["--param", "background=false"],
    "consensus": ["--sync-retrain"],
    "bandwidth": ["--sync-retrain"],
    "compression": ["--sync-train"],
}


def _fleet(*more: str) -> list[str]:
    """``producers.synthetic`` for the benchmark's fleet, with ``more`` flags."""
    return [sys.executable, "-m", "producers.synthetic", "--nodes", str(NODES), "--links",
            str(LINKS), "--interval", str(INTERVAL), "--seed", str(SEED), "--incident-rate", "1",
            "--progress-interval", "0", *more]  # fmt: skip


def _inline(tail: list[str]) -> list[str]:
    """The inline-fit flags for a deployment process (``--<name>.`` prefixed in one process)."""
    if tail[0] != "consumers":
        return INLINE[tail[0].removeprefix("consumers.")]
    names = [n for n in tail[2:] if n in INLINE]
    return [f"--{n}.{f[2:]}" if f.startswith("--") else f for n in names for f in INLINE[n]]


def _producer_argv(settings: Settings, rate: float, seconds: float, start: str) -> list[str]:
    speedup = rate / (NODES * LINKS / INTERVAL)
    return _fleet("--start", start, "--rate", str(rate), "--speedup", f"{speedup:.3f}",
                  "--duration", str(seconds), "--topic-prefix", settings.topic_prefix,
                  "--backend", "confluent")  # fmt: skip


def warm_state(state: Path, records: int, mode: str, log: Path) -> tuple[str, float]:
    """Learn ``records`` of the fleet from a file into ``state``; return the event time the
    rate runs continue from, and the seconds it took."""
    rec = state.parent / "warm.jsonl"
    subprocess.run(_fleet("--rate", "0", "--count", str(records), "--output", str(rec)),
                   check=True, env=_env(), stdout=subprocess.DEVNULL)  # fmt: skip
    t0 = time.monotonic()
    for group, tail in _deployment(mode):
        with log.open("ab") as out:
            subprocess.run([sys.executable, "-m", *tail, *_inline(tail), "--from-file", str(rec),
                            "--with-state", "--state-dir", str(state), "--group-id", group,
                            "--output-dir", str(state.parent / "warm-out"), "--interval", "10"],
                           check=True, env=_env(), stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    last = rec.read_bytes().rstrip().rsplit(b"\n", 1)[-1]
    end_ms = _iso_ms(_stamp(last).timestamp or "") + int(INTERVAL * 1000)
    from datetime import UTC, datetime

    start = datetime.fromtimestamp(end_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return start, time.monotonic() - t0


def verdict(
    rate: float,
    achieved: float,
    end_lag: dict[str, int | None],
    slopes: dict[str, float],
    drain_s: float | None,
) -> bool:
    """Whether a rate was sustained (see the module docstring): the producer reached 95% of
    it and every group's lag stayed bounded: at most ``MAX_LAG_S`` seconds of input behind when
    the producer stopped, growing by at most 5% of the rate per second over the second half,
    and back to 0 within ``MAX_DRAIN_S`` seconds."""
    return (
        achieved >= 0.95 * rate
        and all(v is not None and v <= MAX_LAG_S * rate for v in end_lag.values())
        and all(v <= 0.05 * rate for v in slopes.values())
        and drain_s is not None
        and drain_s <= MAX_DRAIN_S
    )


def _slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def _percentiles(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"p50": None, "p99": None, "n": 0}
    xs = sorted(xs)
    return {
        "p50": round(xs[len(xs) // 2], 3),
        "p99": round(xs[min(len(xs) - 1, int(len(xs) * 0.99))], 3),
        "n": len(xs),
    }


def read_topic(settings: Settings, logical: str, limit: int | None = None) -> list[Any]:
    """Every record of a topic (or the first ``limit``), from the beginning, as Messages."""
    topic = settings.topic(logical)
    with make_admin(settings) as admin:
        total = sum(hi - lo for lo, hi in admin.partition_offsets(topic).values())
    want = total if limit is None else min(total, limit)
    out: list[Any] = []
    c = make_consumer(settings, [topic], group_id=f"bench-read-{uuid.uuid4().hex[:8]}",
                      from_beginning=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(out) < want and time.monotonic() < deadline:
            out += c.poll_batch(10_000, 500)
    finally:
        c.close()
    return out[:want]


def latencies(settings: Settings, max_samples: int, steady_from_ms: int) -> dict[str, Any]:
    """Produce-to-alert and produce-to-prediction latency (see the module docstring)."""
    tele = read_topic(settings, "telemetry")
    pairs = sorted(
        (_iso_ms(t), m.timestamp_ms)
        for m in tele
        if m.value and (t := _safe_stamp(m.value)) is not None
    )
    times = [p[0] for p in pairs]
    suffix_min = [0] * len(pairs)  # earliest produce time among records with event time >= e
    low = float("inf")
    for i in range(len(pairs) - 1, -1, -1):
        low = min(low, pairs[i][1])
        suffix_min[i] = int(low)

    # an answer about the input's last allowed lateness and two ticks (a tick is complete
    # once the node's next one arrives) is released only once every partition has gone idle
    # after the producer stopped: there is no later record to move the watermark. The end of
    # a benchmark, not of a live stream: left out of the percentiles, and counted
    tail_from = (times[-1] if times else 0) - (LATENESS_S + 2 * INTERVAL) * 1000
    tail = {"alerts": 0, "predictions": 0}

    def lat(e_ms: int, ts_ms: int, kind: str = "alerts") -> float | None:
        if e_ms > tail_from:
            tail[kind] += 1
            return None
        i = bisect.bisect_left(times, e_ms)
        return None if i >= len(times) else (ts_ms - suffix_min[i]) / 1000

    out: dict[str, Any] = {}
    alerts = read_topic(settings, "alerts")
    al = [(m.timestamp_ms, lat(_iso_ms(e.event_time), m.timestamp_ms))
          for m in alerts if (e := _event(m.value)).status == "open"]  # fmt: skip
    out["alert_open"] = _percentiles([x for _t, x in al if x is not None])
    # the second half of production only: past the start-up (restore, first retrains)
    out["alert_open_steady"] = _percentiles(
        [x for t, x in al if x is not None and t >= steady_from_ms]
    )
    preds = read_topic(settings, "predictions")
    by_kind: dict[str, list[float]] = {}
    step = max(1, len(preds) // max_samples)
    for m in preds[::step]:
        e = _event(m.value)
        x = lat(_iso_ms(e.event_time), m.timestamp_ms, "predictions")
        if x is not None:
            by_kind.setdefault(e.kind, []).append(x)
    out["predictions"] = {k: _percentiles(v) for k, v in sorted(by_kind.items())}
    out["counts"] = {"telemetry": len(tele), "alerts": len(alerts), "predictions_read": len(preds),
                     "left_out_at_the_end": tail}  # fmt: skip
    return out


def _committed(admin: Any, group: str, topic: str) -> int | None:
    """The group's committed records on ``topic``, or None while the broker cannot say
    (a coordinator still loading answers with an error for a moment)."""
    try:
        return sum(admin.group_offsets(group, topic).values())
    except Exception:
        return None


def _safe_stamp(value: bytes) -> str | None:
    try:
        return _stamp(value).timestamp
    except msgspec.DecodeError:
        return None


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(ports: dict[str, int], launched: float, limit: float) -> dict[str, float | None]:
    """Wait until every consumer's ``/readyz`` answers 200 (state restored, partitions
    assigned), at most ``limit`` seconds after ``launched``; seconds from launch to ready per
    group (``None``: not ready in time; the producer starts anyway)."""
    import urllib.error
    import urllib.request

    ready: dict[str, float | None] = dict.fromkeys(ports)
    while time.monotonic() - launched < limit and None in ready.values():
        for group, port in ports.items():
            if ready[group] is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                        ready[group] = round(time.monotonic() - launched, 1)
                except (urllib.error.URLError, OSError):
                    pass
        time.sleep(0.2)
    return ready


def run_rate(
    rate: float, args: argparse.Namespace, warm: Path, start: str, work: Path
) -> dict[str, Any]:
    settings = Settings(topic_prefix=f"cap-{uuid.uuid4().hex[:6]}-{int(rate)}.", partitions=6,
                        backend="confluent")  # fmt: skip
    ensure_topics(settings)
    state = work / f"state-{int(rate)}"
    shutil.copytree(warm, state)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    logs = work / f"rate-{int(rate)}"
    logs.mkdir()
    common = ["--from-beginning", "--state-dir", str(state), "--topic-prefix",
              settings.topic_prefix, "--interval", "10"]  # fmt: skip
    ports: dict[str, int] = {}
    launched = time.monotonic()
    for group, tail in _deployment(args.deployment):
        out = (logs / f"{group}.log").open("wb")
        ports[group] = _free_port()
        p = subprocess.Popen([sys.executable, "-m", *tail, *common, "--group-id", group,
                              "--summary", str(logs / f"{group}.summary.json"),
                              "--metrics-host", "127.0.0.1", "--metrics-port", str(ports[group])],
                             env=_env(), stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        procs.append((group, p))
    samples: list[dict[str, Any]] = []
    topic = settings.topic("telemetry")
    result: dict[str, Any] = {"rate": rate}
    try:
        result["ready_s"] = _wait_ready(ports, launched, args.settle)
        time.sleep(1.0)  # the first fetch is on its way
        t0 = time.monotonic()
        steady_ms = int((time.time() + args.seconds / 2) * 1000)
        producer = subprocess.Popen(_producer_argv(settings, rate, args.seconds, start),
                                    env=_env(), stdout=subprocess.DEVNULL,
                                    stderr=(logs / "producer.log").open("wb"))  # fmt: skip
        drained_at = None
        produced_end: float | None = None
        with make_admin(settings) as admin:
            while True:
                time.sleep(1.0)
                now = time.monotonic() - t0
                produced = sum(hi for _lo, hi in admin.partition_offsets(topic).values())
                committed = {g: _committed(admin, g, topic) for g, _p in procs}
                lag = {g: max(0, produced - c) if c is not None
                       else (samples[-1]["lag"][g] if samples else produced)
                       for g, c in committed.items()}  # fmt: skip
                samples.append({"t": round(now, 1), "produced": produced, "lag": lag})
                if producer.poll() is not None and produced_end is None:
                    produced_end = now
                if produced_end is not None:
                    if all(v == 0 for v in lag.values()):
                        drained_at = now
                        break
                    if now - produced_end > args.drain:
                        break
                if any(p.poll() is not None for _g, p in procs):
                    result["died"] = [g for g, p in procs if p.poll() is not None]
                    break
    finally:
        for _g, p in procs:
            p.send_signal(signal.SIGTERM)
        for _g, p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
    during = [s for s in samples if produced_end is None or s["t"] <= produced_end]
    produced = samples[-1]["produced"] if samples else 0
    moving = [s for s in during if s["produced"] > 0]
    elapsed = (moving[-1]["t"] - moving[0]["t"]) if len(moving) > 1 else 0.0
    first = moving[0]["produced"] if moving else 0
    achieved = (moving[-1]["produced"] - first) / elapsed if elapsed > 0 else 0.0
    half = [s for s in during if s["t"] >= (during[-1]["t"] / 2 if during else 0)]
    slopes = {g: round(_slope([(s["t"], s["lag"][g]) for s in half]), 1) for g, _p in procs}
    end_lag = {g: during[-1]["lag"][g] if during else None for g, _p in procs}
    drain_s = (
        None if drained_at is None or produced_end is None else round(drained_at - produced_end, 1)
    )
    sustained = "died" not in result and verdict(rate, achieved, end_lag, slopes, drain_s)
    result.update(
        {
            "achieved_rate": round(achieved),
            "records": produced,
            "lag_slope_per_s": slopes,
            "lag_at_producer_end": end_lag,
            "max_lag": {g: max(s["lag"][g] for s in samples) for g, _p in procs} if samples else {},
            "drain_s": drain_s,
            "sustained": sustained,
            "lag_over_time": [{"t": s["t"], **s["lag"]} for s in samples[::2]],
        }
    )
    result["latency_s"] = latencies(settings, args.max_latency_samples, steady_ms)
    result["loops"] = {g: _loop_summary(logs / f"{g}.summary.json") for g, _p in procs}
    result["_settings"] = settings
    result["_state"] = state
    return result


def _loop_summary(path: Path) -> dict[str, Any] | None:
    """What a consumer process said of its run (its ``--summary``): the loop's records and
    seconds, and the time the reliability loop spent installing forest refits at their swap
    points (waiting for the worker, or fitting one still queued there)."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None  # killed before it wrote one
    out = dict(doc.get("loop", {}))
    if "reliability" in doc:
        out["forest_waited_s"] = doc["reliability"].get("forest_waited_s")
    return out


def _forest_waits(result: dict[str, Any]) -> list[float | None]:
    """Seconds each process with the reliability loop spent at its forest refits' swap points."""
    return [v.get("forest_waited_s") for v in result.get("loops", {}).values()
            if v is not None and "forest_waited_s" in v]  # fmt: skip


def _broker_up(bootstrap: str) -> bool:
    """Whether something answers on the first bootstrap address (a broker of ours or not)."""
    import socket

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def ensure_quix() -> Path:
    """The benchmark's own environment with Quix Streams and river (uv from scripts/setup.sh)."""
    py = QUIX_VENV / "bin" / "python"
    if py.exists():
        return py
    uv = shutil.which("uv") or str(ROOT / ".cache" / "tools" / "bin" / "uv")
    import river

    subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(QUIX_VENV)], check=True)
    subprocess.run([uv, "pip", "install", "-q", f"quixstreams=={QUIX_VERSION}",
                    f"river=={river.__version__}"], check=True,
                   env={**os.environ, "VIRTUAL_ENV": str(QUIX_VENV)})  # fmt: skip
    return py


def raw_consume(settings: Settings, n: int) -> float:
    c = make_consumer(settings, [settings.topic("telemetry")],
                      group_id=f"bench-raw-{uuid.uuid4().hex[:8]}", from_beginning=True)  # fmt: skip
    got, t = 0, None
    try:
        while got < n:
            b = c.poll_batch(5000, 500)
            if b and t is None:
                t = time.perf_counter()
            got += len(b)
    finally:
        c.close()
    return got / (time.perf_counter() - (t or time.perf_counter()))


def bare_hst(values: list[bytes]) -> float:
    from river.anomaly import HalfSpaceTrees
    from river.preprocessing import MinMaxScaler

    recs = [r for v in values if (r := _decode(v)) is not None]  # pre-decoded, as in the issue
    scaler, hst = MinMaxScaler(), HalfSpaceTrees(n_trees=10, height=8, window_size=250, seed=0)
    t = time.perf_counter()
    for rec in recs:
        x = {k: float(v) for k in NUMERIC_FIELDS if (v := getattr(rec, k)) is not None}
        scaler.learn_one(x)
        x = scaler.transform_one(x)
        hst.score_one(x)
        hst.learn_one(x)
    return len(recs) / (time.perf_counter() - t)


def _decode(v: bytes) -> Any:
    try:
        return decode_telemetry(v)
    except Exception:
        return None


def quix_app(settings: Settings, n: int) -> dict[str, Any]:
    py = ensure_quix()
    got = subprocess.run([str(py), str(ROOT / "bench" / "quix_hst_app.py"), "--broker",
                          settings.bootstrap_servers, "--topic", settings.topic("telemetry"),
                          "--output", settings.topic("telemetry") + ".quix-alerts", "--records",
                          str(n), "--fields", ",".join(NUMERIC_FIELDS)],
                         check=True, capture_output=True, text=True, timeout=600)  # fmt: skip
    doc = json.loads(got.stdout.strip().splitlines()[-1])
    doc["rate"] = round(doc["records"] / doc["seconds"]) if doc["seconds"] else None
    return doc


def _assignment(admin: Any, group: str, topic: str) -> list[list[int]] | None:
    """Each member's partitions of ``topic`` in ``group`` (None while the broker cannot say)."""
    try:
        desc = admin._admin.describe_consumer_groups([group])[group].result(timeout=10)
    except Exception:
        return None
    return [sorted(tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic)
            for m in desc.members]  # fmt: skip


def on_backlog(
    settings: Settings, tail: list[str], state: Path, n: int, limit: float, members: int = 1
) -> dict[str, Any]:
    """Records/s of ``members`` of our processes in one new group on the backlog, each from
    its own copy of ``state``: the group's committed offsets polled every 0.2 s, from their
    first move once every member holds partitions (the records consumed while the group was
    still forming, one member alone, are left out) until ``n`` more records are committed
    (then SIGTERM). Each member's records in that window come from its partitions' offsets;
    its records over the whole run from its ``--summary``."""
    group = f"bench-backlog-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(dir=state.parent))
    topic = settings.topic("telemetry")
    procs = []
    with make_admin(settings) as admin:
        for k in range(members):
            mine = work / f"s{k}"
            shutil.copytree(state, mine)
            # a new group name means new checkpoint folders (<name>-<group>/): the warm ones,
            # whichever deployment's group learned them, under its name
            for d in list(mine.iterdir()):
                name = next((p for p in PROCESSORS if d.name.startswith(f"{p}-")), None)
                if name is not None:
                    d.rename(mine / f"{name}-{group}")
            argv = [sys.executable, "-m", *tail, "--from-beginning", "--state-dir", str(mine),
                    "--topic-prefix", settings.topic_prefix, "--group-id", group, "--interval",
                    "10", "--max-seconds", str(limit), "--summary", str(work / f"m{k}.json")]  # fmt: skip
            out = (work / f"m{k}.log").open("wb")
            procs.append(subprocess.Popen(argv, env=_env(), stdout=out, stderr=subprocess.STDOUT))
        first = last = None
        seen = at_first = 0
        formed_s = 0.0
        t0 = time.monotonic()
        formed: list[list[int]] | None = None  # the members' partitions once all hold some
        base: dict[int, int] = {}
        while any(p.poll() is None for p in procs):
            time.sleep(0.2)
            if formed is None:
                parts = _assignment(admin, group, topic)
                if parts and len(parts) == members and all(parts):
                    try:
                        base = admin.group_offsets(group, topic)
                    except Exception:  # the coordinator cannot say yet: ask again
                        continue
                    formed, seen, formed_s = parts, sum(base.values()), time.monotonic() - t0
                continue
            done = _committed(admin, group, topic) or 0
            if done > seen:
                now = time.monotonic() - t0
                if first is None:
                    first, at_first = now, done
                last, seen = now, done
            if seen - sum(base.values()) >= n:
                break
        window: list[int] | None = None
        if formed is not None:
            try:
                end = admin.group_offsets(group, topic)
                window = [sum(end.get(q, 0) - base.get(q, 0) for q in parts) for parts in formed]
            except Exception:
                window = None
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
    per_member: list[int | None] = []
    own_seconds: list[float | None] = []  # each member's loop from its first record to its stop
    for k in range(members):
        try:
            loop = json.loads((work / f"m{k}.json").read_text())["loop"]
            per_member.append(loop["records"])
            own_seconds.append(loop.get("seconds_from_first_record"))
        except (OSError, ValueError, KeyError):
            per_member.append(None)
            own_seconds.append(None)
    shutil.rmtree(work, ignore_errors=True)
    counted = seen - sum(base.values())
    # between the first and the last move of the committed offsets (the records of the first
    # move were read before it): how fast the group went once formed
    rate = (
        (seen - at_first) / (last - first) if first is not None and last and last > first else 0.0
    )
    # the members' own loops (their --summary): all their records, from each one's first
    # record to its stop, as the Quix app is timed (first record to last)
    known = [(r, t) for r, t in zip(per_member, own_seconds, strict=True) if r and t]
    own = (
        round(sum(r for r, _ in known) / max(t for _, t in known))
        if len(known) == members
        else None
    )
    return {"rate": round(rate), "records": counted, "records_per_member": per_member,
            "rate_from_first_record": own, "seconds_from_first_record_per_member": own_seconds,
            "partitions_per_member": formed, "window_records_per_member": window,
            "group_formed_s": round(formed_s, 1) if formed is not None else None}  # fmt: skip


def partition_spread(settings: Settings, n: int | None = None) -> dict[str, Any]:
    """Records and distinct nodes (keys) per partition of the topic (or its first ``n``
    records read); a partition without records counts 0."""
    recs: dict[int, int] = {}
    keys: dict[int, set[bytes]] = {}
    for m in read_topic(settings, "telemetry", n):
        recs[m.partition] = recs.get(m.partition, 0) + 1
        keys.setdefault(m.partition, set()).add(m.key or b"")
    with make_admin(settings) as admin:
        parts = sorted(admin.partition_offsets(settings.topic("telemetry")))
    counts = [recs.get(p, 0) for p in parts]
    return {
        "records_per_partition": counts,
        "keys_per_partition": [len(keys.get(p, ())) for p in parts],
        "skew_max_over_mean": round(max(counts) / statistics.fmean(counts), 3) if counts else None,
    }


def rejudge(path: Path) -> int:
    doc = json.loads(path.read_text())
    for r in doc["rates"]:
        r["sustained"] = "died" not in r and verdict(
            r["rate"], r["achieved_rate"], r["lag_at_producer_end"], r["lag_slope_per_s"],
            r["drain_s"],
        )  # fmt: skip
        print(f"rate {r['rate']:>7,.0f}/s: sustained {r['sustained']}")
    ok = [r["rate"] for r in doc["rates"] if r["sustained"]]
    doc["highest_sustained_rate"] = max(ok) if ok else None
    doc["rule"] = {"max_lag_s": MAX_LAG_S, "max_drain_s": MAX_DRAIN_S, "max_slope": 0.05}
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"highest sustained rate: {doc['highest_sustained_rate']} events/s")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rates", default="500,1000,2000,5000,10000",
                    help="events/s to try, comma-separated (default %(default)s)")  # fmt: skip
    ap.add_argument("--seconds", type=float, default=60.0, help="production per rate (%(default)s)")
    ap.add_argument("--settle", type=float, default=60.0,
                    help="at most this many seconds for every consumer to report ready "
                         "(/readyz: state restored, partitions assigned) before the producer "
                         "starts (1 s after they are)")  # fmt: skip
    ap.add_argument("--drain", type=float, default=30.0, help="seconds to wait for lag 0 after")
    ap.add_argument("--warm-records", type=int, default=60_000)
    ap.add_argument("--backlog-records", type=int, default=100_000)
    ap.add_argument("--max-latency-samples", type=int, default=20_000)
    ap.add_argument("--deployment", choices=DEPLOYMENTS, default="one",
                    help="one process for every model (the README's, default); split: "
                    "reliability alone and the three TensorFlow models together; separate: "
                    "one process per consumer")  # fmt: skip
    ap.add_argument("--no-side-by-side", action="store_true")
    ap.add_argument("--keep-logs", type=Path, metavar="DIR",
                    help="copy each rate's consumer and producer logs into DIR/rate-N")  # fmt: skip
    ap.add_argument("--json", action="store_true", help=f"also write {RESULTS.name}")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where --json writes")
    ap.add_argument("--rejudge", type=Path, metavar="FILE.json",
                    help="run nothing: apply the sustained rule to a result file's recorded "
                    "figures again (e.g. one written before the rule changed) and rewrite it")  # fmt: skip
    a = ap.parse_args(argv)
    if a.rejudge:
        return rejudge(a.rejudge)
    rates = [float(x) for x in a.rates.split(",")]
    started = False
    if not _broker_up(Settings().bootstrap_servers):
        subprocess.run(["bash", "scripts/kafka-local.sh", "start"], cwd=ROOT, check=True)
        started = True
    doc: dict[str, Any] = {"rule": {"max_lag_s": MAX_LAG_S, "max_drain_s": MAX_DRAIN_S,
                                    "max_slope": 0.05},
                           "cpus": os.cpu_count(), "seconds": a.seconds, "fleet": FLEET,
                           "deployment": {"one": "one process", "split": "two processes",
                                          "separate": "separate"}[a.deployment],
                           "rates": []}  # fmt: skip
    topics: list[Settings] = []
    try:
        with tempfile.TemporaryDirectory(dir=ROOT / ".cache") as tmp:
            work = Path(tmp)
            warm = work / "warm-state"
            warm.mkdir()
            print(f"capacity: learning {a.warm_records:,d} records into the warm state ...",
                  flush=True)  # fmt: skip
            start, warm_s = warm_state(warm, a.warm_records, a.deployment, work / "warm.log")
            doc["warm_s"] = round(warm_s, 1)
            last: dict[str, Any] | None = None
            for rate in rates:
                r = run_rate(rate, a, warm, start, work)
                if a.keep_logs is not None:
                    name = f"rate-{int(rate)}"
                    shutil.copytree(work / name, a.keep_logs / name, dirs_exist_ok=True)
                topics.append(r.pop("_settings"))
                state = r.pop("_state")
                doc["rates"].append(r)
                last = {"settings": topics[-1], "state": state}
                lat = r["latency_s"]
                print(f"rate {rate:>7,.0f}/s: achieved {r['achieved_rate']:>7,d}/s  sustained "
                      f"{r['sustained']!s:5}  lag end {r['lag_at_producer_end']}  slope "
                      f"{r['lag_slope_per_s']}  drain {r['drain_s']} s  open-alert p50/p99 "
                      f"{lat['alert_open']['p50']}/{lat['alert_open']['p99']} s "
                      f"(n={lat['alert_open']['n']}; steady "
                      f"{lat['alert_open_steady']['p50']}/{lat['alert_open_steady']['p99']})  "
                      f"forest wait {_forest_waits(r)} s  ready after {r['ready_s']} s",
                      flush=True)  # fmt: skip
            ok = [r["rate"] for r in doc["rates"] if r["sustained"]]
            doc["highest_sustained_rate"] = max(ok) if ok else None
            if last is not None and not a.no_side_by_side:
                s, n = last["settings"], a.backlog_records
                side: dict[str, Any] = {}
                side["raw_consume"] = round(raw_consume(s, n))
                values = [m.value for m in read_topic(s, "telemetry", n)]
                side["bare_hst_predecoded"] = round(bare_hst(values))
                side["quix_hst_app"] = quix_app(s, n)
                side["reliability_consumer"] = on_backlog(
                    s, ["consumers.reliability"], warm, n, 300
                )
                two = on_backlog(s, ["consumers.reliability"], warm, n, 300, members=2)
                per = [x for x in two["window_records_per_member"] or [] if x]
                two["member_skew_max_over_mean"] = (
                    round(max(per) / statistics.fmean(per), 3) if len(per) == 2 else None
                )
                two["vs_one"] = round(two["rate"] / max(1, side["reliability_consumer"]["rate"]), 3)
                side["reliability_two_members"] = two
                side["pipeline_process"] = on_backlog(s, _deployment("one")[0][1], warm, n, 300)
                if a.deployment == "split":  # its second process alone
                    tail = _deployment("split")[1][1]
                    side["models_process"] = on_backlog(s, tail, warm, n, 300)
                side["partitions"] = partition_spread(s)
                q = side["quix_hst_app"]["rate"] or 1
                rel, pipe = side["reliability_consumer"]["rate"], side["pipeline_process"]["rate"]
                side["ratios"] = {
                    "reliability/bare_hst": round(rel / side["bare_hst_predecoded"], 3),
                    "reliability/quix": round(rel / q, 3),
                    "pipeline/bare_hst": round(pipe / side["bare_hst_predecoded"], 3),
                    "two_members/one": two["vs_one"],
                }  # fmt: skip
                own = side["reliability_consumer"]["rate_from_first_record"]
                if own:  # timed as the Quix app is: from the first record on
                    side["ratios"]["reliability_from_first_record/bare_hst"] = round(
                        own / side["bare_hst_predecoded"], 3
                    )
                    side["ratios"]["reliability_from_first_record/quix"] = round(own / q, 3)
                side["records"] = n
                doc["side_by_side"] = side
                print(json.dumps(side, indent=1), flush=True)
    finally:
        for s in topics:
            with make_admin(s) as admin:
                admin.delete_topics(
                    [t for t in admin.list_topics() if t.startswith(s.topic_prefix)]
                )
        if started:
            subprocess.run(["bash", "scripts/kafka-local.sh", "stop"], cwd=ROOT)
    print(f"\nhighest sustained rate: {doc['highest_sustained_rate']} events/s (target 10,000)")
    if a.json:
        a.out.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
