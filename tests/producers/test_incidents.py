"""Injected incidents: labels consistent with the records, each category's signature.

Most checks compare the ``incidents`` stream with its ``twin`` (same seed, no incidents): the
two share their latent state and continuous noise, so a difference between them is exactly
what an incident did. Count fields (errors, retransmits, failures) have their own random
stream and are compared as averages.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
import pytest

from producers.encode import encode_label
from producers.fleet import FleetConfig
from producers.incidents import COOLDOWN_S, WARMUP_S
from stream.records import CATEGORIES, SEVERITIES, IncidentLabel, decode

#: Continuous fields that only an incident on the node (or a crash of a peer) can change.
EXACT = (
    "mem_util",
    "disk_util",
    "cpu_util",
    "consensus_latency_ms",
    "rtt_ms",
    "jitter_ms",
    "packet_loss",
    "hde_compression_ratio",
    "hde_delta_hit_rate",
)
PEER_DEPENDENT = ("throughput_mbps", "congestion_window", "amst_streams", "bytes_tx")


def labels_of(
    s: Any, category: str, severities: tuple[str, ...] = SEVERITIES
) -> list[IncidentLabel]:
    out = [
        x
        for x in s.labels
        if x.category == category and x.severity in severities and x.end.timestamp() <= s.t.max()
    ]
    assert out, f"no {category} {severities} incident in the fixture"
    return out


def during(s: Any, lab: IncidentLabel, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """Rows of the label's node in the [lo, hi] share of the incident's duration."""
    a, b = lab.start.timestamp(), lab.end.timestamp()
    return s.rows(lab.node_id, a + lo * (b - a), a + hi * (b - a))


def vs(s: Any, twin: Any, field: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values with incidents, values of the twin) of ``field`` at ``rows``."""
    return s.cols[field][rows].astype(float), twin.cols[field][s.key[rows]].astype(float)


def peer_down(s: Any) -> np.ndarray:
    """Rows whose peer is (or, within a sample interval, may be) down in a crash."""
    down = np.zeros(len(s.t), dtype=bool)
    dt_s = s.config.interval_s  # nodes sample at different offsets within an interval
    for lab in (x for x in s.labels if x.category == "crash"):
        start = lab.start.timestamp()
        node_rows = s.by_node[lab.node_id]
        after = node_rows[s.t[node_rows] > start]
        restart = s.t[after[0]] if len(after) else np.inf
        down |= (s.cols["peer_id"] == lab.node_id) & (s.t > start - dt_s) & (s.t < restart + dt_s)
    return down


def test_labels_are_well_formed_and_never_overlap(incidents: Any):
    labs = incidents.labels
    assert [x.incident_id for x in labs] == [f"syn-5-{i:06d}" for i in range(len(labs))]
    assert {x.category for x in labs} == set(CATEGORIES)
    assert {x.severity for x in labs} == set(SEVERITIES)
    nodes = set(incidents.fleet.topology.node_ids)
    by_node = collections.defaultdict(list)
    for x in labs:
        assert x.node_id in nodes and x.start < x.end and x.start.tzinfo is not None
        assert decode(encode_label(x), IncidentLabel) == x
        by_node[x.node_id].append(x)
        assert (x.peer_id is not None) == (
            x.category == "network_failure" and x.description.count(",") == 1
        )
    for seq in by_node.values():
        for a, b in zip(seq, seq[1:], strict=False):
            assert (b.start - a.end).total_seconds() >= COOLDOWN_S


def test_label_bounds_are_sample_times_of_the_node(incidents: Any):
    for lab in incidents.labels:
        if lab.end.timestamp() > incidents.t.max():
            continue
        times = incidents.t[incidents.by_node[lab.node_id]]
        assert lab.end.timestamp() in times
        assert (lab.start.timestamp() in times) == (lab.category != "crash")


def test_records_outside_labels_are_untouched(incidents: Any, twin: Any):
    """Every deviation from the twin lies inside a label's [start, end] on the label's node."""
    s, n_links = incidents, incidents.fleet.topology.n_links
    inside = np.zeros(len(s.t), dtype=bool)
    for lab in s.labels:
        inside[s.rows(lab.node_id, lab.start, lab.end)] = True
    for f in EXACT:
        a, b = vs(s, twin, f, np.flatnonzero(~inside))
        assert np.array_equal(a, b), f
    # link metrics that also depend on the peer being up: exclude links to crashed peers
    down = peer_down(s)
    rows = np.flatnonzero(~inside & ~down)
    for f in PEER_DEPENDENT:
        a, b = vs(s, twin, f, rows)
        assert np.array_equal(a, b), f
    assert len(rows) > 0.6 * n_links * len(np.unique(s.key // n_links))
    a, b = vs(s, twin, "throughput_mbps", np.flatnonzero(down & ~inside))
    assert np.mean(a < 0.05 * b + 0.01) > 0.7  # traffic to a crashed peer stops (window is wider)


def test_memory_leak_ramps_then_errors(incidents: Any, twin: Any):
    s = incidents
    for lab in labels_of(s, "memory_leak", ("high", "critical")):
        ramp, tail = during(s, lab, 0.0, 0.6), during(s, lab, 0.9)
        mem, mem0 = vs(s, twin, "mem_util", ramp)
        assert np.corrcoef(s.t[ramp], mem - mem0)[0, 1] > 0.9, lab  # a ramp, not a step
        mem, mem0 = vs(s, twin, "mem_util", tail)
        assert mem.mean() > 88 and mem.mean() > mem0.mean() + 20, lab
        err, err0 = vs(s, twin, "error_count", tail)
        assert err.mean() > err0.mean() + 5, lab
        fail, fail0 = vs(s, twin, "failure_rate", tail)
        assert fail.mean() > fail0.mean() + 0.002, lab
        cons, cons0 = vs(s, twin, "consensus_latency_ms", tail)
        assert np.all(cons > cons0), lab  # GC pauses


def test_low_memory_leak_is_subtle(incidents: Any, twin: Any):
    for lab in labels_of(incidents, "memory_leak", ("low",)):
        mem, mem0 = vs(incidents, twin, "mem_util", during(incidents, lab, 0.9))
        assert 4 < (mem - mem0).mean() < 13 and mem.max() < 90, lab
        err, err0 = vs(incidents, twin, "error_count", during(incidents, lab))
        assert err.mean() < err0.mean() + 1.5, lab


def test_disk_full_reaches_100_then_errors(incidents: Any, twin: Any):
    s = incidents
    for lab in labels_of(s, "disk_full", ("high", "critical")):
        rows = during(s, lab)
        disk, disk0 = vs(s, twin, "disk_util", rows)
        assert disk.max() == 100.0 and disk[0] < 100.0 and np.all(disk >= disk0), lab
        full = rows[disk == 100.0]
        for f, margin in (("error_count", 50), ("failure_rate", 0.1), ("consensus_latency_ms", 30)):
            a, b = vs(s, twin, f, full)
            assert a.mean() > b.mean() + margin, (lab, f)
    for lab in labels_of(s, "disk_full", ("low",)):
        disk, disk0 = vs(s, twin, "disk_util", during(s, lab))
        assert (disk - disk0).max() > 15 and disk.max() < 95, lab  # climbs, no errors yet


def test_crash_is_silence_then_restart(incidents: Any, twin: Any):
    s, dt_s = incidents, incidents.config.interval_s
    for lab in labels_of(s, "crash"):
        start, end = lab.start.timestamp(), lab.end.timestamp()
        before, rows = s.rows(lab.node_id, start - 600, start - 1e-6), during(s, lab)
        back = s.t[rows[0]]
        assert len(s.rows(lab.node_id, start, back - 1e-6)) == 0, lab  # silent
        assert back - start >= 30.0 - dt_s and s.t[before[-1]] == pytest.approx(start - dt_s)
        up = s.cols["uptime_s"][rows]
        assert 0 < up[0] < dt_s < 600 < s.cols["uptime_s"][before[-1]], lab  # uptime reset
        assert (
            np.all(np.diff(up) >= 0)
            and up[-1] < WARMUP_S
            and end - back == pytest.approx(up[-1] - up[0])
        )
        assert s.cols["uptime_pct"][rows].max() < 100.0
        first = rows[: 2 * s.config.links_per_node]  # warm-up: busy CPU, little traffic
        cpu, cpu0 = vs(s, twin, "cpu_util", first)
        assert np.all(cpu > cpu0 + 10), lab
        tput, tput0 = vs(s, twin, "throughput_mbps", first)
        assert np.all(tput < 0.5 * tput0 + 0.01), lab
        after = s.rows(lab.node_id, end + 1e-6, end + 300)
        cpu, cpu0 = vs(s, twin, "cpu_util", after)
        assert np.array_equal(cpu, cpu0)  # warm-up over when the label ends


def _affected_links(lab: IncidentLabel) -> list[str]:
    peers = lab.description.split(" on links to ")[1].split(", ")
    assert lab.peer_id is None or peers == [lab.peer_id]
    return peers


@pytest.mark.parametrize("severity", SEVERITIES)
def test_network_failure_spikes_loss_rtt_retransmits_and_collapses_throughput(
    incidents: Any, twin: Any, severity: str
):
    s = incidents
    n_links = {"low": 1, "medium": (1, 2), "high": 2, "critical": s.config.links_per_node}[severity]
    pdown = peer_down(s)
    for lab in labels_of(s, "network_failure", (severity,)):
        rows = during(s, lab, 0.1)
        peers = _affected_links(lab)
        assert len(peers) in (n_links if isinstance(n_links, tuple) else (n_links,)), lab
        rtt, rtt0 = vs(s, twin, "rtt_ms", rows)
        assert set(s.cols["peer_id"][rows][rtt != rtt0]) == set(peers), lab  # only those links
        for peer in peers:
            d = rows[
                (s.cols["peer_id"][rows] == peer) & ~pdown[rows]
            ]  # a crashed peer sends nothing
            if len(d) == 0:
                continue
            loss, loss0 = vs(s, twin, "packet_loss", d)
            rtt, rtt0 = vs(s, twin, "rtt_ms", d)
            jit, jit0 = vs(s, twin, "jitter_ms", d)
            tput, tput0 = vs(s, twin, "throughput_mbps", d)
            rtx, rtx0 = vs(s, twin, "retransmits", d)
            sent, sent0 = vs(s, twin, "bytes_tx", d)
            if severity == "low":  # subtle: a little loss, a slightly slower link
                assert np.all((loss - loss0 > 0.002) & (loss - loss0 < 0.01)), lab
                assert np.all(rtt / rtt0 < 1.6) and np.all(tput / tput0 > 0.6), lab
                continue
            assert np.all(loss - loss0 > 0.007) and np.all(rtt > 1.3 * rtt0 - 0.001), lab
            assert np.all(jit > 1.4 * jit0 - 0.001), lab  # values are rounded to 1 us
            # retransmits per byte sent (with throughput collapsed, fewer bytes are sent at all),
            # rising with the loss (less so on a link that was congested anyway)
            factor = max(
                min(3 if severity == "medium" else 10, 0.5 * loss.mean() / loss0.mean()), 1.2
            )
            assert rtx.sum() / sent.sum() > factor * rtx0.sum() / sent0.sum(), lab
            if severity in ("high", "critical"):
                assert np.all(tput < 0.5 * tput0 + 0.01) and np.all(loss > 0.03), lab  # collapse


@pytest.mark.parametrize(
    ("severity", "factor"), [("low", 1.2), ("medium", 1.8), ("high", 3.5), ("critical", 8.0)]
)
def test_consensus_degradation_raises_consensus_latency(
    incidents: Any, twin: Any, severity: str, factor: float
):
    for lab in labels_of(incidents, "consensus_degradation", (severity,)):
        cons, cons0 = vs(incidents, twin, "consensus_latency_ms", during(incidents, lab, 0.3, 0.8))
        ratio = np.median(cons / cons0)
        assert ratio > factor, (lab, ratio)
        if severity == "low":  # hard to tell from a busy hour
            assert ratio < 2.2, (lab, ratio)


def test_incident_rate_and_categories_options(simulate: Any):
    assert (
        simulate(FleetConfig(nodes=10, seed=1, interval_s=60.0, incident_rate=0.0), 24 * 60).labels
        == []
    )
    some = simulate(
        FleetConfig(nodes=10, seed=1, interval_s=60.0, incident_rate=0.1), 24 * 60
    ).labels
    many = simulate(
        FleetConfig(nodes=10, seed=1, interval_s=60.0, incident_rate=1.0), 24 * 60
    ).labels
    assert 10 <= len(some) < len(many)
    only = simulate(
        FleetConfig(
            nodes=10, seed=1, interval_s=60.0, incident_rate=1.0, categories=("crash", "disk_full")
        ),
        12 * 60,
    ).labels
    assert only and {x.category for x in only} <= {"crash", "disk_full"}
    with pytest.raises(ValueError, match="unknown incident categories"):
        simulate(FleetConfig(nodes=2, categories=("oom",)), 1)
