"""``consumers.compression``: recommendations on change, checkpoints, and a run on the real broker."""

from __future__ import annotations

import argparse
import io
import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from consumers.compression import (
    KIND,
    CompressionConsumer,
    CompressionProcessor,
    build_parser,
    build_selector,
    main,
)
from models.compression.policy import CompressionPolicy
from models.compression.portable import Dense, PortablePolicy
from models.compression.selector import LinkSelector
from models.compression.states import features
from models.compression.transfer import TransferModel
from producers.compression_states import fleet_states
from producers.encode import RecordEncoder
from producers.fleet import Fleet, FleetConfig
from stream.checkpoint import CheckpointStore
from stream.errors import CheckpointError
from stream.kafka import make_consumer, make_producer
from stream.records import Prediction, decode
from stream.schema import decode_telemetry
from stream.settings import Settings
from stream.topics import ensure_topics

TEACHER = TransferModel()


def centroid_policy() -> CompressionPolicy:
    """A small policy without TensorFlow: nearest centroid of each action's features."""
    states = fleet_states(seed=2, nodes=12, hours=2.0, interval_s=300.0)
    x, best = features(states), TEACHER.best(states)
    c = np.array(
        [x[best == k].mean(axis=0) if (best == k).any() else np.full(8, 1e3) for k in range(6)]
    )
    doc = PortablePolicy(
        actions=TEACHER.table.actions,
        mean=np.zeros(8),
        std=np.ones(8),
        layers=[Dense(c.T, -0.5 * (c**2).sum(axis=1), "softmax")],
        version="centroids",
        metadata={"best_fixed": "zstd-3"},
    )
    return CompressionPolicy.from_portable(doc, TEACHER)


def fleet_records(
    steps: int, *, nodes: int = 4, seed: int = 5, skip: int = 0
) -> tuple[list[bytes], list[bytes]]:
    fleet = Fleet(FleetConfig(nodes=nodes, seed=seed, interval_s=60.0, incident_rate=0.0))
    enc = RecordEncoder(fleet.topology)
    keys: list[bytes] = []
    values: list[bytes] = []
    for i in range(skip + steps):
        sample = fleet.step()
        if i >= skip:
            keys += enc.keys(sample)
            values += enc.encode(enc.records(sample))
    return keys, values


def test_handler_publishes_a_prediction_per_link_when_its_choice_changes():
    consumer = CompressionConsumer(LinkSelector(centroid_policy(), train=False), "p.predictions")
    _, values = fleet_records(1)
    batch = [(None, decode_telemetry(v)) for v in values]
    no_tput = decode_telemetry(b'{"timestamp":"2026-01-05T00:00:00Z","node_id":"n-009","rtt_ms":3}')
    out = consumer.handle([*batch, (None, no_tput)])
    assert len(out) == len(values) == 16 and consumer.skipped == 1
    preds = [decode(o.value, Prediction) for o in out]
    assert {o.topic for o in out} == {"p.predictions"}
    assert [o.key for o in out] == [p.node_id.encode() for p in preds]
    p = preds[0]
    assert p.kind == KIND and p.model_version == "centroids" and p.peer_id
    assert set(p.extra) >= {
        "codec",
        "level",
        "confidence",
        "expected_time_s",
        "baseline",
        "model_version",
    }
    assert p.extra["codec"] in ("none", "lz4", "zstd") and 0 < p.extra["confidence"] <= 1
    assert p.extra["baseline"] == "zstd-3" and p.extra["previous"] is None
    assert p.value == pytest.approx(1 - p.extra["expected_time_s"] / p.extra["baseline_time_s"])
    assert p.extra["regret"] == pytest.approx(
        p.extra["expected_time_s"] / p.extra["best_time_s"] - 1
    )
    assert p.extra["regret"] >= 0 and p.extra["best_action"] in TEACHER.names
    assert consumer.handle(batch) == []  # the same states again: nothing changed


def centroid_state(links: dict[str, str]) -> tuple[str, dict[str, str]]:
    """A processor state: the centroid policy's JSON and each link's current choice."""
    return centroid_policy().to_portable().to_json(), links


def test_state_round_trip_restores_the_policy_and_links_without_training():
    args = build_parser().parse_args(["--no-train"])
    links = {"n-001>n-002": "zstd-3", "n-001>edge-1": "none"}
    proc = CompressionProcessor(Settings(), args, centroid_state(links))
    text, saved = proc.state()
    assert saved == links and PortablePolicy.from_json(text).version == "centroids"
    again = CompressionProcessor(Settings(), args, proc.state())
    assert again.selector.current == proc.selector.current == {"n-001>n-002": 3, "n-001>edge-1": 0}
    assert again.model_version == "centroids" and again.selector.train is False


def test_a_bad_starting_policy_is_a_clear_error(tmp_path: Path):
    bad = tmp_path / "p.json"
    bad.write_text('{"format": "other"}')
    args = build_parser().parse_args(["--starting-policy", str(bad)])
    with pytest.raises(CheckpointError, match="p.json"):
        build_selector(args, None, io.StringIO())


SMALL_BOOTSTRAP = ["--bootstrap-fleets", "1", "--bootstrap-nodes", "8", "--bootstrap-hours", "2"]


def test_first_start_without_a_starting_policy_trains_on_the_fleet():
    flags = ["--starting-policy", "", *SMALL_BOOTSTRAP, "--bootstrap-epochs", "1"]
    args = build_parser().parse_args(flags)
    out = io.StringIO()
    sel = build_selector(args, None, out)
    assert "training on simulated fleet states" in out.getvalue() and sel.current == {}
    assert sel.policy.version.startswith("compression-")


def test_first_start_uses_the_shipped_starting_policy_without_training(tmp_path: Path):
    from consumers.compression import STARTING_POLICY

    shipped = PortablePolicy.from_json(STARTING_POLICY.read_text())
    assert STARTING_POLICY.stat().st_size < 512 * 1024  # a small file, fit for git
    args = build_parser().parse_args([])
    out = io.StringIO()
    sel = build_selector(args, None, out)
    assert f"starting from {shipped.version}" in out.getvalue()
    assert "training" not in out.getvalue() and sel.policy.version == shipped.version


def test_export_policy_writes_a_policy_a_consumer_starts_from(tmp_path: Path):
    exported = tmp_path / "policy.json"
    assert main(["--export-policy", str(exported), *SMALL_BOOTSTRAP, "--bootstrap-epochs", "1"]) == 0
    args = build_parser().parse_args(["--starting-policy", str(exported)])
    out = io.StringIO()
    sel = build_selector(args, None, out)
    assert f"starting from {sel.policy.version}" in out.getvalue()
    assert json.loads(exported.read_text())["version"] == sel.policy.version


def test_parser_knows_the_flags():
    args = build_parser().parse_args(
        ["--min-improvement", "0", "--train-every", "100", "--from-beginning"]
    )
    assert (
        isinstance(args, argparse.Namespace)
        and args.min_improvement == 0
        and args.train_every == 100
    )


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_consumer_on_the_real_broker_publishes_learns_and_restores(
    kafka_bootstrap: str, tmp_path: Path, group_id: str
):
    prefix = f"t-{uuid.uuid4().hex[:12]}."
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix, partitions=2)
    ensure_topics(settings)
    state = tmp_path / "state"
    store = CheckpointStore(state, f"compression-{group_id}")
    store.save(
        {"processor": "compression", "format": 1, "model_version": "centroids", "state": centroid_state({})}
    )
    flags = [
        "--bootstrap-servers",
        kafka_bootstrap,
        "--topic-prefix",
        prefix,
        "--group-id",
        group_id,
    ]
    flags += [
        "--state-dir",
        str(state),
        "--from-beginning",
        "--idle-timeout",
        "4",
        "--interval",
        "1",
    ]
    flags += ["--train-every", "200", "--batch-size", "400", "--checkpoint-interval", "0"]

    def produce(keys: list[bytes], values: list[bytes]) -> None:
        with make_producer(settings) as producer:
            for k, v in zip(keys, values, strict=True):
                producer.produce(settings.topic("telemetry"), v, k)
            producer.produce(settings.topic("telemetry"), b"{not json", b"n-001")
            producer.flush(30)

    def predictions(n_min: int) -> list[Prediction]:
        consumer = make_consumer(
            settings,
            [settings.topic("predictions")],
            group_id=f"r-{uuid.uuid4().hex}",
            from_beginning=True,
        )
        got = []
        try:
            for _ in range(40):
                got += consumer.poll_batch(1000, 250)
                if len(got) >= n_min and not consumer.poll_batch(1000, 250):
                    break
        finally:
            consumer.close()
        return [decode(m.value, Prediction) for m in got]

    keys, values = fleet_records(30)  # 4 nodes x 4 links x 30 samples
    produce(keys, values)
    assert main(flags) == 0
    first = predictions(16)
    assert len({(p.node_id, p.peer_id) for p in first}) == 16  # every link got a recommendation
    assert all(p.kind == KIND and p.extra["model_version"] == p.model_version for p in first)
    text, links = store.load()[0]["state"]
    saved = json.loads(text)
    assert saved["metadata"]["updates"] >= 1  # learnt from the stream in micro-batches
    assert saved["version"] != "centroids" and len(links) == 16

    # restart: the checkpoint is restored, links already recommended are not re-published
    keys, values = fleet_records(2, skip=30)
    produce(keys, values)
    assert main([*flags, "--no-train"]) == 0
    second = predictions(len(first))
    new = second[len(first) :]
    assert len(second) >= len(first) and len(new) < 16
    assert all(p.model_version == saved["version"] for p in new)
