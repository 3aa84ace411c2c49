"""The simulated fleet: determinism, schema validity, topology, cycles and correlations."""

from __future__ import annotations

import collections
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from producers.encode import FIELD_NAMES, RecordEncoder
from producers.fleet import Fleet, FleetConfig
from producers.topology import build_topology
from stream.schema import FIELDS, decode_telemetry_lines


def encoded(config: FleetConfig, ticks: int) -> bytes:
    fleet = Fleet(config)
    enc = RecordEncoder(fleet.topology)
    out = []
    for _ in range(ticks):
        out += enc.encode(enc.records(fleet.step()))
    return b"\n".join(out)


def test_same_seed_same_bytes_other_seed_other_bytes():
    cfg = FleetConfig(nodes=10, seed=3, incident_rate=5.0)
    a, b = encoded(cfg, 300), encoded(cfg, 300)
    assert a == b
    assert encoded(FleetConfig(nodes=10, seed=4, incident_rate=5.0), 300) != a


def test_every_record_has_every_field_and_validates(incidents: Any):
    assert all(list(r) == list(FIELD_NAMES) for r in incidents.records[:5000])
    assert all(None not in r.values() for r in incidents.records)
    lines = b"".join(v + b"\n" for v in RecordEncoder.encode(incidents.records))
    decoded = decode_telemetry_lines(lines)  # raises on the first invalid value
    assert len(decoded) == len(incidents.records)
    for spec in FIELDS:
        if spec.numeric:
            col = incidents.cols[spec.name].astype(float)
            assert np.isfinite(col).all(), spec.name
            assert spec.min <= col.min() and col.max() <= spec.max, spec.name


def test_timestamps_are_utc_z_and_start_at_start():
    line = encoded(FleetConfig(nodes=3, seed=1, start=dt.datetime(2026, 3, 1, tzinfo=dt.UTC)), 1)
    first = decode_telemetry_lines(line + b"\n")[0]
    assert b'"timestamp":"2026-03-01T00:00:0' in line and b'Z","region"' in line
    assert (
        dt.timedelta(0)
        <= first.timestamp - dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
        < dt.timedelta(seconds=5)
    )


def test_per_node_event_time_order(incidents: Any):
    last: dict[str, dt.datetime] = {}
    per_tick = collections.Counter()
    for r in incidents.records:
        prev = last.get(r["node_id"])
        assert prev is None or prev <= r["timestamp"], r["node_id"]
        last[r["node_id"]] = r["timestamp"]
        per_tick[(r["node_id"], r["timestamp"])] += 1
    assert set(per_tick.values()) == {
        incidents.config.links_per_node
    }  # all links of a node per sample


def test_topology_link_types_follow_geography():
    topo = build_topology(50, np.random.default_rng(0))
    region = dict(zip(topo.node_ids, topo.node_region_name, strict=True))
    az = dict(zip(topo.node_ids, topo.node_az, strict=True))
    assert topo.n_links == 200
    for i, peer in enumerate(topo.link_peer_id):
        node = topo.node_ids[topo.link_node[i]]
        kind = topo.link_type_name[i]
        assert peer != node
        if kind == "edge":
            assert peer.startswith(f"edge-{region[node]}-")
        else:
            expect = (
                "dc" if az[peer] == az[node] else "metro" if region[peer] == region[node] else "wan"
            )
            assert kind == expect
    for n in range(topo.n_nodes):  # distinct peers
        assert len({topo.link_peer_id[i] for i in topo.links_of(n)}) == topo.links_per_node
    assert collections.Counter(topo.link_type_name).keys() == {"dc", "metro", "wan", "edge"}


def test_categorical_fields_are_fixed_per_link(week: Any):
    seen: dict[tuple[str, str], tuple] = {}
    for r in week.records:
        cat = (
            r["region"],
            r["az"],
            r["link_type"],
            r["dwcp_mode"],
            r["network_tier"],
            r["transport_type"],
        )
        assert seen.setdefault((r["node_id"], r["peer_id"]), cat) == cat
    allowed = {
        "dc": {"datacenter"},
        "metro": {"datacenter", "hybrid"},
        "wan": {"internet", "hybrid"},
        "edge": {"internet"},
    }
    for cat in seen.values():
        assert cat[3] in allowed[cat[2]]
        assert cat[2] != "edge" or (cat[4], cat[5]) in {("tier3", "quic"), ("tier3", "tcp")}


def test_link_types_differ_in_rtt_and_throughput(week: Any):
    c = week.cols
    med = {
        t: (
            np.median(c["rtt_ms"][c["link_type"] == t]),
            np.median(c["throughput_mbps"][c["link_type"] == t]),
        )
        for t in ("dc", "metro", "wan", "edge")
    }
    assert 0.2 <= med["dc"][0] <= 1.0
    assert 1.0 <= med["metro"][0] <= 5.0
    assert 30.0 <= med["wan"][0] <= 150.0
    assert 10.0 <= med["edge"][0] <= 60.0
    assert med["dc"][1] > med["metro"][1] > med["wan"][1] > med["edge"][1]
    assert med["edge"][1] < 500.0 < med["dc"][1]


def _local(week: Any, region: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    offset = {"us-east": -5, "eu-west": 0, "ap-south": 5.5, "us-west": -8}[region]
    m = week.cols["region"] == region
    local = [t + dt.timedelta(hours=offset) for t in week.cols["timestamp"][m]]
    return m, np.array([t.hour for t in local]), np.array([t.weekday() for t in local])


@pytest.mark.parametrize("region", ["us-east", "eu-west", "ap-south"])
def test_diurnal_and_weekly_cycles(week: Any, region: str):
    m, hour, weekday = _local(week, region)
    workday = weekday < 5
    for field, factor in (("throughput_mbps", 1.5), ("cpu_util", 1.3)):
        x = week.cols[field][m]
        by_hour = np.array([x[workday & (hour == h)].mean() for h in range(24)])
        assert 12 <= int(np.argmax(by_hour)) <= 19, (field, by_hour.round(1))  # afternoon peak
        assert 0 <= int(np.argmin(by_hour)) <= 7, (field, by_hour.round(1))  # early-morning trough
        assert by_hour.max() > factor * by_hour.min()
        assert x[~workday].mean() < 0.9 * x[workday].mean()  # quieter weekend


def _per_link(week: Any) -> list[np.ndarray]:
    key = np.char.add(week.cols["node_id"].astype(str), week.cols["peer_id"].astype(str))
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(np.r_[-1, np.unique(key[order], return_inverse=True)[1], -1]))
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def test_congested_samples_show_the_congestion_signature(week: Any):
    """On each link, the 2% highest-RTT samples against the middle half of its samples."""
    c = week.cols
    hour = np.array([t.hour for t in c["timestamp"]])
    ratios = collections.defaultdict(list)
    for idx in _per_link(week):
        rtt = c["rtt_ms"][idx]
        hi = rtt > np.quantile(rtt, 0.98)
        mid = (rtt > np.quantile(rtt, 0.25)) & (rtt < np.quantile(rtt, 0.75))
        for f in (
            "jitter_ms",
            "packet_loss",
            "retransmits",
            "queue_depth",
            "congestion_window",
            "throughput_mbps",
        ):
            x = c[f][idx].astype(float)
            if f == "throughput_mbps":  # against the same link at the same hour (diurnal demand)
                h = hour[idx]
                x = x / np.array([np.median(x[h == k]) for k in range(24)])[h]
            ratios[f].append(x[hi].mean() / max(x[mid].mean(), 1e-12))
    med = {f: float(np.median(v)) for f, v in ratios.items()}
    assert med["jitter_ms"] > 3 and med["packet_loss"] > 5 and med["retransmits"] > 5, med
    assert med["queue_depth"] > 10, med
    assert med["congestion_window"] < 0.8 and med["throughput_mbps"] < 0.85, med


def test_congestion_causes_the_signature():
    """Same seed twice; a cross-traffic burst on one link of one twin only."""
    cfg = FleetConfig(nodes=12, seed=2, incident_rate=0.0)
    a, b = Fleet(cfg), Fleet(cfg)
    for _ in range(100):
        a.step(), b.step()
    link = int(np.flatnonzero(np.array(a.topology.link_type_name) == "wan")[0])
    b.burst[link] += 0.9
    sa, sb = a.step(), b.step()
    va, vb = {k: v[link] for k, v in sa.values.items()}, {k: v[link] for k, v in sb.values.items()}
    for f in ("rtt_ms", "jitter_ms", "packet_loss", "retransmits", "queue_depth", "failure_rate"):
        assert vb[f] > va[f], f
    for f in ("throughput_mbps", "congestion_window", "bytes_tx"):
        assert vb[f] < va[f], f
    other = np.arange(len(sa.links)) != link
    assert np.array_equal(sa.values["throughput_mbps"][other], sb.values["throughput_mbps"][other])


def test_available_bandwidth_shifts_regime():
    fleet = Fleet(FleetConfig(nodes=12, seed=9, interval_s=60.0, incident_rate=0.0))
    wan = np.array(fleet.topology.link_type_name) == "wan"
    levels = []
    for _ in range(24 * 60):
        fleet.step()
        levels.append(fleet.regime[wan].copy())
    changes = (np.diff(np.array(levels), axis=0) != 0).sum()
    assert changes >= wan.sum()  # several shifts per WAN link and day on average


# -- throughput_model="tcp" -----------------------------------------------------------------------
def test_the_tcp_model_changes_throughput_and_link_congestion_only():
    """Its randomness has a stream of its own: every node metric is drawn as in classic."""
    runs = {}
    for model in ("classic", "tcp"):
        fleet = Fleet(FleetConfig(nodes=6, seed=5, interval_s=10.0, incident_rate=0.0,
                                  throughput_model=model))  # fmt: skip
        runs[model] = [fleet.step() for _ in range(400)]
    for field in ("cpu_util", "mem_util", "disk_util", "uptime_s", "hde_delta_hit_rate"):
        a = np.array([s.values[field] for s in runs["classic"]])
        b = np.array([s.values[field] for s in runs["tcp"]])
        assert np.array_equal(a, b), field
    a, b = (np.array([s.values["throughput_mbps"] for s in runs[m]]) for m in ("classic", "tcp"))
    assert not np.array_equal(a, b)
    assert 0.5 < np.median(b) / np.median(a) < 2.0  # the same links, the same order of size


def test_a_tcp_sender_falls_at_once_and_climbs_over_an_rtt_dependent_ramp():
    fleet = Fleet(FleetConfig(nodes=40, seed=2, interval_s=10.0, incident_rate=0.0,
                              throughput_model="tcp"))  # fmt: skip
    L = fleet.topology.n_links
    idle = np.zeros(L)
    fleet._tcp(np.full(L, 100.0), idle)
    fleet.tcp_rate[:] = 100.0
    fleet._tcp(np.full(L, 50.0), idle)
    assert np.median(fleet.tcp_rate) == 50.0  # the drop is immediate (a few links backed off)
    fleet.tcp_rate[:] = 50.0
    climb = []
    for _ in range(6):
        fleet._tcp(np.full(L, 100.0), idle)
        climb.append(fleet.tcp_rate.copy())
    climb_ = np.array(climb)
    slow = fleet.tcp_ramp >= 20.0  # long paths (~80 ms and more)
    fast = fleet.tcp_ramp <= 2.0  # datacenter and metro paths
    assert slow.sum() >= 5 and fast.sum() >= 5
    expected = 100.0 - 50.0 * np.exp(-10.0 / fleet.tcp_ramp[slow])
    assert np.median(climb_[0, slow] / expected) == pytest.approx(1.0, abs=0.01)
    assert np.median(climb_[0, slow]) < 80.0 < np.median(climb_[5, slow])  # several samples
    assert np.median(climb_[0, fast]) > 99.0  # a short path is there within one sample


def test_tcp_congestion_episodes_hold_a_plateau_and_end_abruptly():
    fleet = Fleet(FleetConfig(nodes=30, seed=4, interval_s=10.0, incident_rate=0.0,
                              throughput_model="tcp"))  # fmt: skip
    busy = np.ones(fleet.topology.n_links)
    levels = np.array([fleet._episodes(10.0 * k, busy).copy() for k in range(2000)])
    on = levels > 0
    assert 0.02 < on.mean() < 0.5
    steps = np.diff(levels, axis=0)
    assert (steps[on[:-1] & on[1:]] == 0).all()  # constant while it lasts
    ended = on[:-1] & ~on[1:]
    assert ended.sum() >= 10 and (levels[:-1][ended] >= 0.3).all()  # gone in one step
    runs = on[1:] & ~on[:-1]
    assert on.sum() / runs.sum() > 20  # median 10 min: dozens of 10 s samples each


def test_tcp_throughput_is_more_learnable_than_classic():
    """The point of the model: the history says something the last value does not know."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from bench_throughput_shape import signature, simulate

    sig = {
        m: signature(simulate(m, 8, 2, 10.0, 1200, seed=3, incident_rate=0.0), learn=True)
        for m in ("classic", "tcp")
    }
    assert sig["tcp"]["learnable_skill_h1"] > sig["classic"]["learnable_skill_h1"] + 0.05
    assert sig["tcp"]["acf_change_lag1"] < sig["classic"]["acf_change_lag1"] - 0.1
