"""Link states drawn from the simulated fleet (:mod:`producers.fleet`), in memory: the compression
policy's training and held-out sets, built here (beside the simulator) and passed to
:mod:`models.compression`, which never imports the simulator itself.

The fleet simulator is pure code (no I/O), so training and evaluation sets are drawn in
process: a seed picks the fleet (its topology, capacities, node profiles) and its evolution.
Held-out sets use seeds never used for training, so they hold other links, not just other
moments of the same links.

Examples
--------
>>> states = fleet_states(seed=5, nodes=12, hours=1.0, interval_s=300.0)
>>> states.shape
(576, 7)
>>> from models.compression.transfer import TransferModel
>>> model = TransferModel()
>>> best = np.bincount(model.best(states), minlength=6)
>>> {model.names[i]: int(c) for i, c in enumerate(best) if c}
{'lz4': 56, 'zstd-1': 45, 'zstd-3': 313, 'zstd-9': 136, 'zstd-19': 26}
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from models.compression.states import STATE_FIELDS

__all__ = ["TRAIN_SEEDS", "TEST_SEEDS", "fleet_states", "training_states"]

#: Fleet seeds of the training set and of the held-out set (disjoint fleets).
TRAIN_SEEDS = (1, 2, 3, 4)
TEST_SEEDS = (1001, 1002)


def fleet_states(
    seed: int,
    *,
    nodes: int = 100,
    hours: float = 24.0,
    interval_s: float = 60.0,
    incident_rate: float = 0.1,
    start: dt.datetime | None = None,
) -> np.ndarray:
    """States of every reporting link of a simulated fleet, every ``interval_s`` for ``hours``.

    Returns an array of shape ``(n, len(STATE_FIELDS))`` (links of nodes that are down report
    nothing, as on the wire). Fleet incidents are on by default: degraded links are states too.
    """
    from producers.config import DEFAULT_START, FleetConfig
    from producers.fleet import Fleet

    cfg = FleetConfig(
        nodes=nodes,
        seed=seed,
        interval_s=interval_s,
        incident_rate=incident_rate,
        start=start or DEFAULT_START,
    )
    fleet = Fleet(cfg)
    chunks = []
    for _ in range(max(1, round(hours * 3600.0 / interval_s))):
        sample = fleet.step()
        chunks.append(np.stack([sample.values[f][sample.links] for f in STATE_FIELDS], axis=1))
    return np.concatenate(chunks).astype(np.float64)


def training_states(
    seeds: tuple[int, ...] = TRAIN_SEEDS,
    *,
    nodes: int = 100,
    hours: float = 24.0,
    interval_s: float = 300.0,
) -> np.ndarray:
    """States of several fleets (one per seed) stacked: the default set the policy trains on.

    Four fleets of 100 nodes (400 links each) for a day at 5-minute steps: 459,864 states.
    """
    return np.concatenate(
        [fleet_states(s, nodes=nodes, hours=hours, interval_s=interval_s) for s in seeds]
    )
