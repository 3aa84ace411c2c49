"""The simulated DWCP fleet: latent state that evolves, and the telemetry it reports.

Pure code (no I/O, no clock, no environment): :class:`Fleet` advances one sample interval of
event time per :meth:`Fleet.step` and returns every link's metrics as numpy arrays, all links
at once. ``FleetConfig.seed`` drives everything, so the same configuration gives the same
stream; with and without incidents, the same seed gives the same latent state and noise (the
incidents draw from their own random stream), so the difference is what the incidents did.

The model, per node ``n`` and link ``l``:

* **load** = local diurnal profile (trough 04:00, peak 16:00 local time of the node's region)
  x weekday/weekend factor x a slow per-node random walk. It drives CPU, memory, the offered
  traffic, AMST streams and (negatively) the HDE delta hit rate.
* **available bandwidth** = capacity x regime level (jumps at random times: a path change, a
  provider's throttle) x a slow random walk. **Cross traffic** follows the diurnal profile
  plus random bursts that decay over minutes.
* **congestion** ``c`` = sigmoid of utilisation (offered + cross traffic over available). It
  raises RTT (queueing delay), jitter, loss, retransmits, queue depth and failure rate, and
  lowers goodput and the congestion window.
* **throughput** (``FleetConfig.throughput_model``):

  - ``classic`` (the default, what every published figure used): the goodput of the moment,
    ``min(demand, headroom) x (1 - congestion / 2)`` with 2% noise; it follows its drivers at
    once, so between samples it is a slow random walk that the last value predicts well;
  - ``tcp``: what a transfer over TCP-like congestion control reports. The same goodput is the
    *target* a sender converges to: it falls to a lower target at once (a multiplicative
    decrease) and climbs to a higher one over a ramp whose time constant grows with the path's
    RTT (``TCP_RAMP_S_PER_MS``; a 100 ms WAN path takes ~25 s, a datacenter path ~1 s), after
    a restart, a capacity step (a route change: the regime jumps), the end of a congestion
    episode or an incident. Loss events cut the rate by 30% (CUBIC's beta) at a
    rate that grows with congestion, and it climbs back (a sawtooth). Cross-traffic bursts are
    **congestion episodes** with a plateau: more at busy hours, a lognormal duration (median 10
    min) and an abrupt end, visible in RTT and queue depth while they last. Measurement noise
    is 3%. Its randomness has a stream of its own, so ``classic`` and ``tcp`` share every other
    draw.

* node health: memory (load + random walk), disk (daily growth and clean-up), errors and
  failures that rise sharply when memory passes ~90% or disk ~95%, a warm-up after restart,
  consensus latency from the fastest peer RTT plus CPU-dependent processing time, with rare
  benign spikes (leader elections).

Incidents (:mod:`producers.incidents`) nudge these drivers; everything downstream follows.

Examples
--------
One hour of a 24-node fleet at 5 s intervals; median RTT (ms) by link type:

>>> fleet = Fleet(FleetConfig(nodes=24, seed=1, interval_s=5.0, incident_rate=0.0))
>>> samples = [fleet.step() for _ in range(720)]
>>> rtt = np.array([s.values["rtt_ms"] for s in samples])
>>> types = np.array(fleet.topology.link_type_name)
>>> {t: round(float(np.median(rtt[:, types == t])), 1) for t in ("dc", "metro", "wan", "edge")}
{'dc': 0.5, 'metro': 2.1, 'wan': 112.9, 'edge': 24.8}
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np

from producers.config import DEFAULT_START, FleetConfig, Sample
from producers.incidents import WARMUP_S, Effects, IncidentInjector
from producers.topology import LINK_CLASSES, MODE_COMPRESSION, build_topology

__all__ = ["DEFAULT_START", "Fleet", "FleetConfig", "Sample"]

MSS = 1448.0  # bytes of payload per packet
SLO_FAILURE_BUDGET = 0.001  # burn rate 1.0 = failing 0.1% of transfers


def _ar(phi_tau: tuple[float, float], dt_s: float) -> tuple[float, float]:
    """(phi, innovation sd) of an AR(1) with time constant tau and stationary sd."""
    tau, sd = phi_tau
    phi = math.exp(-dt_s / tau)
    return phi, sd * math.sqrt(1.0 - phi * phi)


# Latent random walks: name -> (time constant s, stationary sd).
NODE_WALKS = {
    "load": (7200, 0.15),
    "cpu": (600, 3.0),
    "mem": (1800, 2.0),
    "comp": (3600, 0.2),
    "hit": (1200, 0.05),
    "cons": (300, 0.12),
}
LINK_WALKS = {"bw": (1800, 0.08), "demand": (900, 0.2), "cross": (600, 0.04)}
BURST_TAU_S, BURSTS_PER_H = 480.0, 0.5
BLIPS_PER_H = 0.2
# throughput_model="tcp": ramp time constant per ms of base RTT (clipped), decrease factor,
# loss-driven decreases per second (idle, and added at full congestion), congestion episodes
TCP_RAMP_S_PER_MS, TCP_RAMP_S = 0.25, (1.0, 60.0)
TCP_BETA, TCP_MD_PER_S = 0.7, (0.002, 0.05)
EPISODES_PER_H, EPISODE_MEDIAN_S, EPISODE_SIGMA = 0.5, 600.0, 0.8
TCP_NOISE = 0.03


class Fleet:
    """Simulated fleet; :meth:`step` returns the next :class:`Sample`."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = c = config
        # Separate streams so that incidents change only what they touch: the same seed with
        # and without incidents gives the same latent state and the same continuous noise
        # (count draws consume a varying number of variates, so they get their own stream).
        topo_ss, dyn_ss, inc_ss, count_ss, tcp_ss = np.random.SeedSequence(c.seed).spawn(5)
        self.topology = t = build_topology(
            c.nodes,
            np.random.default_rng(topo_ss),
            regions=c.regions,
            azs_per_region=c.azs_per_region,
            links_per_node=c.links_per_node,
        )
        self.injector = IncidentInjector(
            t,
            np.random.default_rng(inc_ss),
            interval_s=c.interval_s,
            rate_per_node_h=c.incident_rate,
            seed=c.seed,
            categories=c.categories,
        )
        self.rng = rng = np.random.default_rng(dyn_ss)
        self.counts = np.random.default_rng(count_ss)
        self.tick = 0
        self.interval_us = round(c.interval_s * 1e6)
        self.dt = self.interval_us / 1e6
        self.t0 = c.start.timestamp()
        self.start = c.start.astimezone(dt.UTC)
        n, L = t.n_nodes, t.n_links
        self.phase = [
            dt.timedelta(milliseconds=int(x))
            for x in rng.integers(0, max(self.interval_us // 1000, 1), n)
        ]

        def u(lo: Any, hi: Any, size: int = n) -> np.ndarray:
            return rng.uniform(lo, hi, size)

        self.scale, self.mem_base, self.disk_base = u(0.7, 1.2), u(25, 55), u(15, 60)
        self.disk_growth, self.err_base, self.cons_base = u(0.05, 0.6), u(0.05, 0.4), u(2, 8)
        self.comp_base, self.hit_base = u(0.5, 3.0), u(0.3, 0.85)
        self.boot = self.t0 - u(1, 90) * 86400.0
        self.down_start, self.down_end = np.full(n, -np.inf), np.full(n, -np.inf)
        self.alive = np.ones(n, dtype=bool)
        self.walks = {k: rng.standard_normal(n) * sd for k, (_, sd) in NODE_WALKS.items()}
        self.walks.update({k: rng.standard_normal(L) * sd for k, (_, sd) in LINK_WALKS.items()})
        self.ar = {k: _ar(v, self.dt) for k, v in {**NODE_WALKS, **LINK_WALKS}.items()}
        cls = [LINK_CLASSES[name] for name in t.link_type_name]
        self.queue_ms = np.array([x.queue_ms for x in cls])
        self.queue_pkts = np.array([x.queue_pkts for x in cls])
        self.base_loss = np.array([x.base_loss for x in cls]) * np.array(
            [{"tier1": 0.5, "tier2": 1.0, "tier3": 2.0}[x] for x in t.link_tier]
        )
        self.streams_base = np.array(
            [rng.integers(x.streams[0], x.streams[1] + 1) for x in cls], dtype=float
        )
        self.p_regime = 1.0 - np.exp(-np.array([x.regime_per_h for x in cls]) * self.dt / 3600.0)
        self.regime_low = np.array([x.regime_low for x in cls])
        self.regime = u(self.regime_low, 1.0, L)
        self.share, self.cross_mean, self.rx_ratio = (
            u(0.08, 0.3, L),
            u(0.05, 0.2, L),
            u(0.02, 0.6, L),
        )
        self.mode_comp = np.array([MODE_COMPRESSION[m] for m in t.link_mode])
        self.burst = np.zeros(L)
        self.burn = np.full(L, 1e-4)
        self.has_peer = t.link_peer >= 0
        self.peer = np.where(self.has_peer, t.link_peer, 0)
        self.mem_last, self.disk_last = self.mem_base.copy(), self.disk_base.copy()
        self.neutral = Effects(n, L)
        self.all_links = np.arange(L)
        self.phase_s = np.array([p.total_seconds() for p in self.phase])
        self.tcp = c.throughput_model == "tcp"
        if self.tcp:  # its own stream: every draw above is the same in both models
            self.tcp_rng = np.random.default_rng(tcp_ss)
            self.tcp_ramp = np.clip(TCP_RAMP_S_PER_MS * t.base_rtt_ms, *TCP_RAMP_S)
            self.tcp_rate = np.full(L, np.nan)  # the sender's rate; NaN: not started
            self.episode = np.zeros(L)  # cross traffic of the running episode (0: none)
            self.episode_end = np.zeros(L)

    def time_of(self, node: int, tick: int) -> dt.datetime:
        """Event time of ``node``'s samples in interval ``tick``."""
        return self.start + dt.timedelta(microseconds=tick * self.interval_us) + self.phase[node]

    def _walk(self, name: str, z: np.ndarray) -> np.ndarray:
        phi, sd = self.ar[name]
        w = self.walks[name]
        w *= phi
        w += sd * z
        return w

    def _episodes(self, t: float, busy: np.ndarray) -> np.ndarray:
        """Cross traffic of congestion episodes (``tcp`` model): start, plateau, abrupt end."""
        rng, L = self.tcp_rng, len(self.episode)
        u, level, z = rng.random(L), rng.random(L), rng.standard_normal(L)
        start = (self.episode == 0.0) & (  # not where one ends now: a quiet step between
            u < EPISODES_PER_H * (0.3 + 1.4 * busy) * self.dt / 3600.0
        )
        self.episode[t >= self.episode_end] = 0.0
        self.episode[start] = 0.3 + 0.5 * level[start]
        self.episode_end[start] = t + EPISODE_MEDIAN_S * np.exp(EPISODE_SIGMA * z[start])
        return self.episode

    def _tcp(self, target: np.ndarray, cong: np.ndarray) -> np.ndarray:
        """Reported throughput of a TCP-like sender converging to ``target`` (``tcp`` model)."""
        rng, L, dts = self.tcp_rng, len(target), self.dt
        u, z = rng.random(L), rng.standard_normal(L)
        rate = np.where(np.isnan(self.tcp_rate), target, self.tcp_rate)
        up = rate + (target - rate) * (1.0 - np.exp(-dts / self.tcp_ramp))
        rate = np.where(target < rate, target, up)  # falls at once, climbs over the ramp
        md = 1.0 - np.exp(-dts * (TCP_MD_PER_S[0] + TCP_MD_PER_S[1] * cong))
        rate = np.where(u < md, TCP_BETA * rate, rate)  # a loss event: multiplicative decrease
        self.tcp_rate = rate
        return rate * np.exp(TCP_NOISE * z)

    def step(self) -> Sample:
        """Advance one sample interval and report it."""
        k, topo, rng, dts = self.tick, self.topology, self.rng, self.dt
        self.tick += 1
        n, L = topo.n_nodes, topo.n_links
        t = self.t0 + k * dts
        zn, zl = rng.standard_normal((8, n)), rng.standard_normal((9, L))
        ul, un = rng.random((4, L)), rng.random(n)
        base = self.start + dt.timedelta(microseconds=k * self.interval_us)
        times = [base + p for p in self.phase]

        fx, labels = self.injector.step(k, self.mem_last, self.disk_last, self.time_of)
        fx = fx or self.neutral
        for node, offset in fx.restart.items():
            self.boot[node] = times[node].timestamp() - offset
            self.down_end[node] = self.boot[node]
        went_down = self.alive & ~fx.alive
        self.down_start[went_down] = t - 0.5 * dts
        self.down_end[went_down] = np.inf
        self.alive = fx.alive.copy()

        # -- calendar and load --------------------------------------------------------------
        local_h = t / 3600.0 + topo.region_utc_offset_h
        hour = np.mod(local_h, 24.0)
        weekend = np.mod(np.floor(local_h / 24.0) + 3, 7) >= 5  # 1970-01-01 was a Thursday
        profile = 0.5 - 0.5 * np.cos(2 * np.pi * (hour - 4.0) / 24.0)
        load = (0.2 + 0.8 * profile**1.5) * np.where(weekend, 0.6, 1.0) * self.scale
        load *= np.exp(self._walk("load", zn[0]))
        uptime = t + self.phase_s - self.boot
        warm = np.clip(1.0 - uptime / WARMUP_S, 0.0, 1.0) ** 2  # 1 at (re)start, 0 after warm-up

        # -- node health ---------------------------------------------------------------------
        mem = (self.mem_base + 12.0 * load + self._walk("mem", zn[1])) * (1.0 - 0.45 * warm)
        mem = np.clip(mem + (100.0 - mem) * fx.mem_leak + 0.3 * zn[2], 1.0, 100.0)
        since_cleanup = np.mod(hour - 2.0, 24.0)
        disk = self.disk_base + self.disk_growth * since_cleanup + 0.05 * zn[3]
        disk = np.clip(disk + (100.0 - disk) * fx.disk_fill, 0.0, 100.0)
        self.mem_last, self.disk_last = mem, disk
        mem_p = np.clip((mem - 90.0) / 10.0, 0.0, 1.0)
        disk_p = np.clip((disk - 95.0) / 5.0, 0.0, 1.0)
        full = disk >= 99.9
        cpu = (
            5.0 + 55.0 * load + self._walk("cpu", zn[4]) + 30.0 * warm + 25.0 * mem_p + 8.0 * disk_p
        )
        cpu = np.clip(cpu + fx.cpu_add, 0.5, 100.0)

        # -- links ----------------------------------------------------------------------------
        ln = topo.link_node
        cap = topo.capacity_mbps
        switch = ul[0] < self.p_regime
        self.regime = np.where(
            switch, self.regime_low + (1.0 - self.regime_low) * ul[1], self.regime
        )
        avail = cap * self.regime * np.exp(self._walk("bw", zl[0]))
        demand = cap * self.share * load[ln] * np.exp(self._walk("demand", zl[1]))
        self.burst *= math.exp(-dts / BURST_TAU_S)
        self.burst += (ul[2] < BURSTS_PER_H * dts / 3600.0) * (0.3 + 0.5 * ul[3])
        cross = np.maximum(
            self.cross_mean * (0.3 + profile[ln]) + self._walk("cross", zl[2]), 0.0
        ) + (self._episodes(t, profile[ln]) if self.tcp else self.burst)
        util = demand / avail + cross
        cong = 1.0 / (1.0 + np.exp(-(util - 0.9) / 0.06))
        peer_up = ~self.has_peer | self.alive[self.peer]
        headroom = np.clip(1.0 - cross, 0.05, 1.0) * avail
        goodput = np.minimum(demand, headroom) * (1.0 - 0.5 * cong)
        factor = fx.tput_mult * (1.0 - warm[ln]) * np.where(peer_up, 1.0, 0.01)
        if self.tcp:  # the goodput is the target a TCP-like sender converges to
            tput = self._tcp(goodput * factor, cong)
        else:
            tput = goodput * (1.0 + 0.02 * zl[3]) * factor
        tput = np.clip(tput, 0.0, 1e6)
        rtt = (
            topo.base_rtt_ms * (1.0 + 0.01 * zl[4]) + self.queue_ms * cong * np.exp(0.2 * zl[5])
        ) * fx.rtt_mult
        jitter = (
            (0.02 * topo.base_rtt_ms + 0.25 * self.queue_ms * cong)
            * np.exp(0.3 * zl[6])
            * fx.rtt_mult**1.5
        )
        loss = np.clip(
            self.base_loss * np.exp(0.5 * zl[7]) + 0.04 * cong**3 + fx.loss_add, 0.0, 1.0
        )
        bytes_tx = tput * (1e6 / 8.0) * dts
        retrans = self.counts.poisson(bytes_tx / MSS * loss * 1.05 + 0.5 * cong)
        qdepth = self.counts.poisson(2.0 + self.queue_pkts * cong * fx.rtt_mult)
        streams = np.clip(np.rint(self.streams_base * (0.5 + 0.8 * load[ln])), 1, 4096) * peer_up
        cwnd = cap * self.regime * topo.base_rtt_ms * (125.0 / MSS) / np.maximum(streams, 1.0)
        cwnd = cwnd * (1.0 - 0.6 * cong) * fx.tput_mult * np.exp(0.05 * zl[8])
        cwnd = np.clip(np.where(peer_up, cwnd, 2.0), 2.0, 2**31)  # peer down: connections reset
        hit = np.clip(self.hit_base + self._walk("hit", zn[5]) - 0.2 * (load - 0.5), 0.0, 1.0)
        comp = self.comp_base * np.exp(self._walk("comp", zn[6]))
        ratio = np.clip(1.0 + (comp * (0.4 + hit))[ln] * self.mode_comp, 1.0, 1000.0)
        amst = np.clip(tput * (1.0 + 0.9 * (ratio - 1.0)), 0.0, 1e6)

        # -- errors, failures, consensus ---------------------------------------------------------
        per5 = dts / 5.0
        err_mean = per5 * (
            self.err_base * (1.0 + 2.0 * load)
            + 60.0 * mem_p**2
            + 40.0 * disk_p**2
            + 150.0 * full
            + 20.0 * warm
            + fx.err_add
        )
        errors = self.counts.poisson(err_mean)
        node_fail = 0.1 * mem_p**2 + 0.02 * disk_p + 0.3 * full + fx.fail_add
        fail = (
            1e-4 * (1.0 + 3.0 * cong + 20.0 * loss) + 0.01 * cong**2 + node_fail[ln] + fx.link_fail
        )
        fail = np.clip(fail + np.where(peer_up, 0.0, 0.25), 0.0, 1.0)
        ops = np.maximum(np.rint(streams * 40.0 * per5), max(round(20.0 * per5), 1)).astype(
            np.int64
        )
        fail = self.counts.binomial(ops, fail) / ops
        phi = math.exp(-dts / 300.0)
        self.burn = phi * self.burn + (1.0 - phi) * fail
        fastest = rtt.reshape(n, topo.links_per_node).min(axis=1)
        blip = np.where(un < BLIPS_PER_H * dts / 3600.0, 3.0, 1.0)
        cons = (2.0 * fastest + self.cons_base * (1.0 + 1.5 * (cpu / 100.0) ** 2)) * np.exp(
            self._walk("cons", zn[7])
        )
        cons = (cons + 40.0 * mem_p + 80.0 * disk_p + 100.0 * warm) * fx.cons_mult * blip
        overlap = np.clip(
            np.minimum(t, self.down_end) - np.maximum(t - 3600.0, self.down_start), 0.0, 3600.0
        )

        r = np.round
        values = {
            "rtt_ms": r(rtt, 3),
            "jitter_ms": r(jitter, 3),
            "throughput_mbps": r(tput, 2),
            "bytes_tx": bytes_tx.astype(np.int64),
            "bytes_rx": (bytes_tx * self.rx_ratio * np.exp(0.05 * zl[3])).astype(np.int64),
            "packet_loss": r(loss, 8),
            "retransmits": retrans,
            "congestion_window": cwnd.astype(np.int64),
            "queue_depth": qdepth,
            "hde_compression_ratio": r(ratio, 3),
            "hde_delta_hit_rate": r(hit[ln], 4),
            "amst_streams": streams.astype(np.int64),
            "amst_transfer_rate": r(amst, 2),
            "error_budget_burn_rate": r(np.minimum(self.burn / SLO_FAILURE_BUDGET, 10_000.0), 3),
            "uptime_pct": r(100.0 * (1.0 - overlap / 3600.0), 4)[ln],
            "failure_rate": r(fail, 6),
            "consensus_latency_ms": r(np.minimum(cons, 600_000.0), 3)[ln],
            "cpu_util": r(cpu, 2)[ln],
            "mem_util": r(mem, 2)[ln],
            "disk_util": r(disk, 2)[ln],
            "error_count": errors[ln],
            "uptime_s": r(np.maximum(uptime, 0.0), 3)[ln],
        }
        links = self.all_links if self.alive.all() else np.flatnonzero(self.alive[ln])
        return Sample(tick=k, times=times, links=links, values=values, labels=labels)
