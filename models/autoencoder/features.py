"""Node samples for the consensus autoencoder: one per node and interval, baseline-relative.

Consensus latency is a node metric repeated on each of the node's link records. A node's
records of one interval share its event time, so :class:`NodeSampler` folds them into one
sample (consensus latency, CPU, the fastest link's RTT) and emits it when the node's next
interval starts. The consensus feature is the latency net of two round trips on the fastest
link (the network's share, which link congestion raises without any consensus problem). Each sample becomes a feature row relative to the node's own baseline (a
slow, robust EWMA of the log values) so one model serves nodes whose normal latency differs;
the baseline follows large deviations only slowly, and slower still while the node is flagged,
so a degradation is not learned as normal.

Examples
--------
>>> import numpy as np
>>> ns = NodeSampler()
>>> ns.add("n1", 0.0, cons=5.0, cpu=20.0, rtt=1.0)
>>> ns.add("n1", 0.0, cons=5.0, cpu=20.0, rtt=0.5)    # same interval, another link
>>> ns.add("n1", 1.0, cons=6.0, cpu=21.0, rtt=0.7)    # next interval: the first one is done
>>> [(s.node, s.ts, s.rtt) for s in ns.pop()]
[('n1', 0.0, 0.5)]
>>> b = NodeBaseline(alpha=0.5)
>>> row = b.features(np.array([0]), np.array([4.0]), np.array([1.0]), np.array([50.0]),
...                  frozen=np.array([False]))
>>> [round(float(v), 3) for v in row[0]]
[0.0, 0.0, 0.5]
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

#: Feature columns of a node sample.
FEATURES = ("log_consensus_net_rel", "log_min_rtt_rel", "cpu")


@dataclass
class NodeSample:
    """One node's interval: consensus latency, CPU and the fastest link's RTT."""

    node: Hashable
    ts: float
    cons: float
    cpu: float
    rtt: float
    region: str | None = None


class NodeSampler:
    """Folds link records into node samples (emitted when the node's next interval starts)."""

    def __init__(self) -> None:
        self.open_: dict[Hashable, NodeSample] = {}
        self._done: list[NodeSample] = []

    def add(
        self,
        node: Hashable,
        ts: float,
        *,
        cons: float,
        cpu: float,
        rtt: float,
        region: str | None = None,
    ) -> None:
        """Add one link record of ``node`` at event time ``ts``."""
        cur = self.open_.get(node)
        if cur is not None and ts <= cur.ts:
            if ts == cur.ts:
                cur.rtt = min(cur.rtt, rtt)
            return  # an older interval: duplicate or replay
        if cur is not None:
            self._done.append(cur)
        self.open_[node] = NodeSample(node, ts, cons, cpu, rtt, region)

    def pop(self) -> list[NodeSample]:
        """Completed node samples since the last call, in completion order."""
        done, self._done = self._done, []
        return done


def log_net(cons: np.ndarray, rtt: np.ndarray) -> np.ndarray:
    """Log consensus time net of the network's part (two round trips on the fastest link):
    the processing share, which congestion on a link does not move."""
    rtt = np.nan_to_num(np.maximum(rtt, 0.0))
    return np.log(np.maximum(np.maximum(cons - 2.0 * rtt, 0.1 * cons), 1e-3))


class NodeBaseline:
    """Per-node slow, robust EWMA of log consensus latency and log fastest RTT.

    Each update moves the consensus level by ``alpha * clip(x - level, -clip, clip)`` (the RTT
    level by ``alpha * (x - level)``: congestion moves it legitimately), and ten times
    slower for deviations beyond ``3 * clip`` (after a node's first 30 samples), so a sustained
    degradation is not absorbed while the normal slow wander of the latency is tracked; while the node is flagged the step is ``alpha * flagged_factor``.
    (Freezing outright would leave a node flagged forever once its normal level moved.)

    Parameters
    ----------
    alpha
        EWMA weight of a new sample (``1 / alpha`` samples is the time constant).
    clip
        Largest deviation (log units) one update follows.
    flagged_factor
        Step multiplier while the node is flagged.
    """

    def __init__(
        self, alpha: float = 1 / 300, clip: float = 0.15, flagged_factor: float = 0.25
    ) -> None:
        self.alpha, self.clip, self.flagged_factor = alpha, clip, flagged_factor
        self.level_ = np.zeros((0, 2))
        self.n_ = np.zeros(0, dtype=np.int64)

    def features(
        self,
        rows: np.ndarray,
        cons: np.ndarray,
        rtt: np.ndarray,
        cpu: np.ndarray,
        frozen: np.ndarray,
    ) -> np.ndarray:
        """Feature rows ``(n, 3)`` in order; updates each row's baseline unless ``frozen``."""
        if len(rows) and rows.max() >= len(self.n_):
            grow = int(rows.max()) + 1 - len(self.n_) + 16
            self.level_ = np.concatenate([self.level_, np.zeros((grow, 2))])
            self.n_ = np.concatenate([self.n_, np.zeros(grow, dtype=np.int64)])
        rtt = np.nan_to_num(np.maximum(rtt, 0.0))
        x = np.stack([log_net(cons, rtt), np.log(rtt + 0.05)], 1)
        out = np.empty((len(rows), 3), dtype=np.float32)
        level, n, clip = self.level_, self.n_, self.clip
        for i, r in enumerate(rows.tolist()):
            if n[r] == 0:
                level[r] = x[i]
            a = max(self.alpha, 1.0 / (n[r] + 1))  # plain mean while the node is new
            d = x[i] - level[r]
            out[i, :2] = d
            if frozen[i]:
                a *= self.flagged_factor
            step = d.copy()
            if n[r] >= 30:  # past a new node's first samples (a plain mean)
                # consensus: far off is an incident, not the normal wander; follow it very slowly
                step[0] = np.clip(d[0], -clip, clip) * (0.1 if abs(d[0]) > 3.0 * clip else 1.0)
            level[r] += a * step
            n[r] += 1
        out[:, 2] = np.nan_to_num(cpu) / 100.0
        return out
