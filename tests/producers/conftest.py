"""Fixtures of the producer tests: simulated streams, run in-process (no Kafka, no files)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pytest

from producers.encode import RecordEncoder, as_columns
from producers.fleet import Fleet, FleetConfig
from stream.records import IncidentLabel


@dataclass
class Stream:
    """A simulated stream: its records (as dicts and as columns), labels and fleet."""

    config: FleetConfig
    fleet: Fleet
    records: list[dict]
    cols: dict[str, np.ndarray]
    labels: list[IncidentLabel]
    t: np.ndarray = field(init=False)  # event time of each record, epoch seconds
    by_node: dict[str, np.ndarray] = field(init=False)  # node -> its rows, in time order
    key: np.ndarray = field(init=False)  # tick * n_links + link: the row in a stream without gaps

    def __post_init__(self) -> None:
        self.t = np.array([ts.timestamp() for ts in self.cols["timestamp"]])
        nodes = self.cols["node_id"]
        self.by_node = {n: np.flatnonzero(nodes == n) for n in np.unique(nodes)}
        topo = self.fleet.topology
        link_of = {
            (topo.node_ids[n], topo.link_peer_id[i]): i
            for i, n in enumerate(topo.link_node.tolist())
        }
        link = np.array(
            [link_of[k] for k in zip(nodes.tolist(), self.cols["peer_id"].tolist(), strict=True)]
        )
        offset = self.t - self.config.start.timestamp() - self.fleet.phase_s[topo.link_node[link]]
        tick = np.rint(offset / self.config.interval_s).astype(np.int64)
        self.key = tick * topo.n_links + link

    def rows(
        self, node_id: str, start: dt.datetime | float, end: dt.datetime | float
    ) -> np.ndarray:
        """Rows of ``node_id`` with ``start <= event time <= end``."""
        lo = start.timestamp() if isinstance(start, dt.datetime) else start
        hi = end.timestamp() if isinstance(end, dt.datetime) else end
        idx = self.by_node[node_id]
        t = self.t[idx]
        return idx[np.searchsorted(t, lo, "left") : np.searchsorted(t, hi, "right")]


def simulate(config: FleetConfig, ticks: int) -> Stream:
    fleet = Fleet(config)
    enc = RecordEncoder(fleet.topology)
    records: list[dict] = []
    labels: list[IncidentLabel] = []
    for _ in range(ticks):
        sample = fleet.step()
        records += enc.records(sample)
        labels += sample.labels
    return Stream(config, fleet, records, as_columns(records), labels)


@pytest.fixture(name="simulate", scope="session")
def simulate_fixture():
    """``simulate(config, ticks) -> Stream``."""
    return simulate


@pytest.fixture(scope="session")
def week() -> Stream:
    """24 nodes, 8 days at 5-minute samples, no incidents (cycles, link types, correlations)."""
    return simulate(FleetConfig(nodes=24, seed=11, interval_s=300.0, incident_rate=0.0), 8 * 288)


INCIDENTS = FleetConfig(nodes=20, seed=5, interval_s=10.0, incident_rate=1.0)
INCIDENT_TICKS = 10 * 360


@pytest.fixture(scope="session")
def incidents() -> Stream:
    """20 nodes, 10 h at 10 s samples, about one incident per node-hour (signatures)."""
    return simulate(INCIDENTS, INCIDENT_TICKS)


@pytest.fixture(scope="session")
def twin() -> Stream:
    """The ``incidents`` stream's twin: same seed and options, no incidents.

    Row ``incidents.key[i]`` of the twin is the same link and sample as row ``i`` of
    ``incidents``: what differs between the two is what the incidents did.
    """
    return simulate(dataclasses.replace(INCIDENTS, incident_rate=0.0), INCIDENT_TICKS)
