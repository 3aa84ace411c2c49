"""Incident injection: when incidents start, and what each one does to the fleet.

An :class:`IncidentInjector` decides, sample interval by sample interval, whether an idle node
starts an incident (a Poisson process at ``rate_per_node_h`` incidents per node per hour of
event time; never two at once on one node, and a cool-down after each). Each incident is a
small object that, while active, writes into an :class:`Effects` record: additive or
multiplicative nudges to the fleet's *drivers* (memory, disk, link loss and RTT, consensus
latency, liveness). The fleet turns drivers into metrics, so the secondary symptoms follow
from the same physics as normal operation: memory over ~90% brings GC CPU, errors and failed
transfers; a full disk brings failed writes; extra loss brings retransmits and a smaller
congestion window.

Signatures, with ``low`` subtle and ``critical`` blatant:

* ``memory_leak``: ``mem_util`` ramps up over minutes (low: +6..12 points and no errors;
  high/critical: to 95..100% and then errors, GC CPU, consensus pauses and ``failure_rate``
  rise), then drops back. The leak takes a growing share of the memory that normal use
  leaves free, so it rides on the normal daily swings.
* ``disk_full``: ``disk_util`` climbs the same way (low: to 88..93%; high/critical: to 100%
  and stays there, then errors, ``failure_rate`` and consensus latency rise); the disk is
  cleaned at the end.
* ``crash``: the node sends nothing for a while (30 s .. 30 min), then restarts with
  ``uptime_s`` near 0 and a 3-minute warm-up (high CPU, low memory, throughput ramping up,
  ``uptime_pct`` below 100 for the next hour). Other nodes' links *to* the crashed node carry
  almost nothing and fail transfers meanwhile (those nodes get no label: it is not their
  incident).
* ``network_failure``: loss, RTT, jitter and retransmits spike and throughput collapses on one
  (low) to all (critical) of the node's links, flapping from sample to sample.
* ``consensus_degradation``: ``consensus_latency_ms`` rises (low: x1.3..1.8; critical:
  x10..40) with ramps at both ends.

The label's ``start``/``end`` are the event times of the node's first and last affected
sample (for a crash: the first missing sample and the last warm-up sample). Labels are
published when the incident starts.

Examples
--------
>>> from producers.fleet import Fleet, FleetConfig
>>> fleet = Fleet(FleetConfig(nodes=10, seed=3, interval_s=10.0, incident_rate=2.0))
>>> labels = [lab for _ in range(360) for lab in fleet.step().labels]  # one hour
>>> len(labels), labels[0].incident_id, labels[0].category, labels[0].description
(10, 'syn-3-000000', 'crash', 'node down for 290 s, then restarts')
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from producers.topology import Topology
from stream.records import CATEGORIES, SEVERITIES, IncidentLabel

#: Relative frequency of each category and severity when an incident starts.
CATEGORY_WEIGHTS = {
    "crash": 0.15,
    "network_failure": 0.3,
    "disk_full": 0.15,
    "memory_leak": 0.2,
    "consensus_degradation": 0.2,
}
SEVERITY_WEIGHTS = (0.35, 0.3, 0.22, 0.13)

#: Duration ranges in minutes of event time, per category, per severity (low..critical).
#: For a crash it is the silent (down) part; the warm-up comes on top.
DURATION_MIN: dict[str, tuple[tuple[float, float], ...]] = {
    "memory_leak": ((10, 20), (15, 30), (20, 40), (20, 40)),
    "disk_full": ((5, 15), (10, 20), (10, 25), (15, 30)),
    "crash": ((0.5, 2), (2, 5), (5, 15), (10, 30)),
    "network_failure": ((3, 8), (5, 15), (10, 25), (15, 40)),
    "consensus_degradation": ((3, 10), (5, 15), (10, 25), (15, 40)),
}
WARMUP_S = 180.0  # restart warm-up that a crash label includes
COOLDOWN_S = 600.0  # quiet time on a node after an incident ends
GRACE_S = 300.0  # no incidents in the first minutes of the stream


class Effects:
    """What active incidents do to the fleet's drivers during one sample interval."""

    __slots__ = (
        "alive",
        "restart",
        "mem_leak",
        "disk_fill",
        "cpu_add",
        "err_add",
        "fail_add",
        "cons_mult",
        "loss_add",
        "rtt_mult",
        "tput_mult",
        "link_fail",
    )

    def __init__(self, n_nodes: int, n_links: int) -> None:
        self.alive = np.ones(n_nodes, dtype=bool)
        self.restart: dict[int, float] = {}  # node -> uptime_s at this sample (it restarted)
        self.mem_leak = np.zeros(n_nodes)  # share of the free memory taken by a leak
        self.disk_fill = np.zeros(n_nodes)  # share of the free disk filled
        self.cpu_add = np.zeros(n_nodes)  # percentage points
        self.err_add = np.zeros(n_nodes)  # extra errors per 5 s (Poisson mean)
        self.fail_add = np.zeros(n_nodes)  # failure-rate fraction on all node links
        self.cons_mult = np.ones(n_nodes)
        self.loss_add = np.zeros(n_links)
        self.rtt_mult = np.ones(n_links)
        self.tput_mult = np.ones(n_links)
        self.link_fail = np.zeros(n_links)


@dataclass
class Incident:
    """One planned incident on one node: ticks ``k0..k1`` inclusive."""

    label: IncidentLabel
    node: int
    sev: int  # index into SEVERITIES
    k0: int
    k1: int
    mag: float  # peak magnitude in the category's own unit
    ramp: float = 1.0  # share of the duration the ramp takes
    k_restart: int = 0  # crash: first tick with records again
    links: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    extra: tuple[float, ...] = ()

    def progress(self, k: int) -> float:
        return (k - self.k0) / max(self.k1 - self.k0, 1)

    def apply(self, fx: Effects, k: int, rng: np.random.Generator) -> None:
        n, cat, p = self.node, self.label.category, self.progress(k)
        if cat == "memory_leak":
            fx.mem_leak[n] = self.mag * min(p / self.ramp, 1.0) ** 1.3
            fx.cpu_add[n] += 4.0 * p
        elif cat == "disk_full":
            fx.disk_fill[n] = self.mag * min(p / self.ramp, 1.0)
        elif cat == "crash":
            if k < self.k_restart:
                fx.alive[n] = False
            elif k == self.k_restart:
                fx.restart[n] = self.mag
        elif cat == "network_failure":
            onset = min((k - self.k0 + 1) / 2.0, 1.0)
            x = onset * rng.uniform(0.7, 1.0, size=len(self.links))
            loss, rtt_x, tput_x = self.extra
            fx.loss_add[self.links] += loss * x
            fx.rtt_mult[self.links] *= 1.0 + (rtt_x - 1.0) * x
            fx.tput_mult[self.links] *= 1.0 - (1.0 - tput_x) * x
            fx.link_fail[self.links] += 0.5 * loss * x
            fx.err_add[n] += 3.0 * self.sev * onset
        elif cat == "consensus_degradation":
            shape = min(p / 0.2, 1.0, (1.0 - p) / 0.15 + 0.1)
            fx.cons_mult[n] *= 1.0 + (self.mag - 1.0) * shape * math.exp(
                0.15 * rng.standard_normal()
            )
            if self.sev >= 2:
                fx.err_add[n] += (self.sev - 1) * 2.0 * shape
                fx.cpu_add[n] += 3.0 * shape


class IncidentInjector:
    """Starts incidents on idle nodes and applies the active ones, one tick at a time."""

    def __init__(
        self,
        topology: Topology,
        rng: np.random.Generator,
        *,
        interval_s: float,
        rate_per_node_h: float,
        seed: int,
        categories: Sequence[str] = CATEGORIES,
    ) -> None:
        unknown = [c for c in categories if c not in CATEGORIES]
        if unknown or not categories:
            raise ValueError(
                f"unknown incident categories {unknown} (known: {', '.join(CATEGORIES)})"
            )
        if rate_per_node_h < 0:
            raise ValueError(f"incident rate must be >= 0, got {rate_per_node_h}")
        self.topology = topology
        self.rng = rng
        self.interval_s = interval_s
        self.p_start = 1.0 - math.exp(-rate_per_node_h * interval_s / 3600.0)
        self.seed = seed
        self.categories = tuple(categories)
        w = np.array([CATEGORY_WEIGHTS[c] for c in self.categories])
        self.category_p = w / w.sum()
        self.severity_p = np.array(SEVERITY_WEIGHTS) / sum(SEVERITY_WEIGHTS)
        n = topology.n_nodes
        self.active: dict[int, Incident] = {}
        self.quiet_until = np.full(n, math.ceil(GRACE_S / interval_s), dtype=np.int64)
        self.count = 0

    def _ticks(self, seconds: float) -> int:
        return max(1, math.ceil(seconds / self.interval_s))

    def step(
        self,
        k: int,
        mem: np.ndarray,
        disk: np.ndarray,
        time_of: Callable[[int, int], dt.datetime],
    ) -> tuple[Effects | None, list[IncidentLabel]]:
        """Effects for tick ``k`` (``None`` if nothing is active) and labels of new incidents."""
        for node in [n for n, inc in self.active.items() if inc.k1 < k]:
            del self.active[node]
        labels: list[IncidentLabel] = []
        u = self.rng.random(self.topology.n_nodes)
        for idx in np.flatnonzero((u < self.p_start) & (self.quiet_until <= k)):
            node = int(idx)
            if node in self.active:
                continue
            inc = self._plan(node, k, float(mem[node]), float(disk[node]), time_of)
            self.active[node] = inc
            self.quiet_until[node] = inc.k1 + 1 + self._ticks(COOLDOWN_S)
            labels.append(inc.label)
        if not self.active:
            return None, labels
        fx = Effects(self.topology.n_nodes, self.topology.n_links)
        for inc in self.active.values():
            inc.apply(fx, k, self.rng)
        return fx, labels

    def _plan(
        self, node: int, k: int, mem: float, disk: float, time_of: Callable[[int, int], dt.datetime]
    ) -> Incident:
        rng = self.rng
        cat = self.categories[int(rng.choice(len(self.categories), p=self.category_p))]
        sev = int(rng.choice(4, p=self.severity_p))
        lo, hi = DURATION_MIN[cat][sev]
        ticks = self._ticks(rng.uniform(lo, hi) * 60.0)
        k1 = k + ticks - 1
        inc = Incident(label=None, node=node, sev=sev, k0=k, k1=k1, mag=0.0)  # type: ignore[arg-type]
        peer_id = None
        if cat == "memory_leak":
            target = (
                min(mem + rng.uniform(6, 12), 88.0),
                rng.uniform(86, 92),
                rng.uniform(95, 99),
                100.0,
            )[sev]
            # the leak takes a growing share of the memory that normal use leaves free
            inc.mag = min(max((target - mem) / max(100.0 - mem, 1.0), 0.05), 1.0)
            inc.ramp = (1.0, 1.0, 0.9, 0.7)[sev]
            desc = f"mem_util ramps from {mem:.0f}% to {target:.0f}%"
        elif cat == "disk_full":
            target = (rng.uniform(88, 93), rng.uniform(95, 98.5), 100.0, 100.0)[sev]
            inc.mag = min(max((target - disk) / max(100.0 - disk, 1.0), 0.05), 1.0)
            inc.ramp = (1.0, 0.9, 0.6, 0.35)[sev]
            desc = f"disk_util climbs from {disk:.0f}% to {target:.0f}%"
        elif cat == "crash":
            inc.k_restart = k + ticks
            inc.k1 = inc.k_restart + self._ticks(WARMUP_S) - 1
            inc.mag = rng.uniform(0.2, 0.8) * self.interval_s  # uptime_s at the first sample back
            desc = f"node down for {ticks * self.interval_s:.0f} s, then restarts"
        elif cat == "network_failure":
            links = np.array(self.topology.links_of(node))
            n_aff = (1, int(rng.integers(1, 3)), max(1, len(links) // 2), len(links))[sev]
            inc.links = np.sort(rng.choice(links, size=min(n_aff, len(links)), replace=False))
            inc.extra = (
                (
                    rng.uniform(0.003, 0.01),
                    rng.uniform(0.01, 0.05),
                    rng.uniform(0.05, 0.2),
                    rng.uniform(0.2, 0.6),
                )[sev],
                (
                    rng.uniform(1.2, 1.5),
                    rng.uniform(1.5, 2.5),
                    rng.uniform(2, 5),
                    rng.uniform(3, 10),
                )[sev],
                (
                    rng.uniform(0.7, 0.9),
                    rng.uniform(0.4, 0.7),
                    rng.uniform(0.05, 0.25),
                    rng.uniform(0.005, 0.05),
                )[sev],
            )
            peers = [self.topology.link_peer_id[int(i)] for i in inc.links]
            if len(peers) == 1:
                peer_id = peers[0]
            desc = (
                f"loss +{inc.extra[0]:.3f}, rtt x{inc.extra[1]:.1f} on links to {', '.join(peers)}"
            )
        else:  # consensus_degradation
            inc.mag = (
                rng.uniform(1.3, 1.8),
                rng.uniform(2, 4),
                rng.uniform(4, 10),
                rng.uniform(10, 40),
            )[sev]
            desc = f"consensus latency up to x{inc.mag:.1f}"
        inc.label = IncidentLabel(
            incident_id=f"syn-{self.seed}-{self.count:06d}",
            node_id=self.topology.node_ids[node],
            category=cat,  # type: ignore[arg-type]
            severity=SEVERITIES[sev],  # type: ignore[arg-type]
            start=time_of(node, inc.k0),
            end=time_of(node, inc.k1),
            peer_id=peer_id,
            description=desc,
        )
        self.count += 1
        return inc
