"""What the fleet simulator is asked for (:class:`FleetConfig`) and what it returns (:class:`Sample`).

Examples
--------
>>> FleetConfig().start.isoformat(), FleetConfig().interval_s
('2026-01-05T00:00:00+00:00', 1.0)
>>> FleetConfig(interval_s=0)
Traceback (most recent call last):
...
ValueError: interval must be >= 0.001 s, got 0
>>> FleetConfig(throughput_model="fast")
Traceback (most recent call last):
...
ValueError: throughput model must be one of classic, tcp, got 'fast'
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stream.records import CATEGORIES, IncidentLabel

DEFAULT_START = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)  # a Monday, 00:00 UTC
THROUGHPUT_MODELS = ("classic", "tcp")


@dataclass(frozen=True)
class FleetConfig:
    """Simulation options (the CLI's flags map onto these)."""

    nodes: int = 50
    regions: int = 4
    azs_per_region: int = 3
    links_per_node: int = 4
    interval_s: float = 1.0
    start: dt.datetime = DEFAULT_START
    seed: int = 0
    incident_rate: float = 0.1  # incidents per node per hour of event time
    categories: Sequence[str] = CATEGORIES
    throughput_model: str = "classic"  # "classic" or "tcp" (see producers.fleet)

    def __post_init__(self) -> None:
        if self.throughput_model not in THROUGHPUT_MODELS:
            raise ValueError(
                f"throughput model must be one of {', '.join(THROUGHPUT_MODELS)}, "
                f"got {self.throughput_model!r}"
            )
        if not self.interval_s >= 0.001:
            raise ValueError(f"interval must be >= 0.001 s, got {self.interval_s}")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware")


@dataclass(frozen=True, eq=False)
class Sample:
    """One sample interval: the metrics of every link whose node is up."""

    tick: int
    times: list[dt.datetime]  # per node: event time of its samples in this interval
    links: np.ndarray  # indices of the links reported (nodes that are down report nothing)
    values: dict[str, np.ndarray]  # field -> per-link values (all links; index with ``links``)
    labels: list[IncidentLabel]  # incidents that start in this interval
