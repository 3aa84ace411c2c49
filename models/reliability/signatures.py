"""Probable incident category from the shape of a deviation (signature matching).

Each category has a signature: the metrics it moves and in which direction. Given the
z-scores of one record (:class:`models.reliability.features.FeatureRow`), each category gets
the largest z-score among its metrics in its direction; the best category wins if its
evidence reaches ``min_z``, otherwise the category is left open (``None``). Missed heartbeats
and unreachable-peer reports are ``crash`` evidence by construction (see
:mod:`models.reliability.heartbeat`).

Examples
--------
>>> match_category({"disk_util": 9.0, "disk_util_rate": 12.0, "error_count": 3.0})
'disk_full'
>>> match_category({"rtt_ms": 8.0, "packet_loss": 15.0, "throughput_mbps": -6.0})
'network_failure'
>>> match_category({"throughput_mbps": -12.0, "congestion_window": -9.0}) is None
True
>>> match_category({"rtt_ms": 1.2}) is None
True
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["SIGNATURES", "match_category", "category_evidence"]

#: category -> ((feature, direction), ...); direction +1: the metric rises, -1: it falls.
SIGNATURES: dict[str, tuple[tuple[str, int], ...]] = {
    "crash": (("restart", 1),),
    "disk_full": (("disk_util", 1), ("disk_util_rate", 1)),
    "memory_leak": (("mem_util", 1), ("mem_util_rate", 1)),
    "network_failure": (
        ("packet_loss", 1),
        ("rtt_ms", 1),
        ("jitter_ms", 1),
        ("retransmits", 1),
        # not throughput or the congestion window: they fall with a network failure, and as
        # much with less demand, a capacity change or congestion. As its evidence they named
        # most of this category's false alerts (held-out simulator shapes: its alert precision
        # 55-80% with them, 73-100% without, README); the detector still scores them
    ),
    "consensus_degradation": (("consensus_latency_ms", 1),),
}
#: Ties and near-ties: a restart explains everything else on the node, a full disk or memory
#: explains the errors and slow consensus that follow from it.
PRIORITY = ("crash", "disk_full", "memory_leak", "network_failure", "consensus_degradation")


def category_evidence(z: Mapping[str, float]) -> dict[str, float]:
    """``{category: evidence}``: the largest signed z-score among the category's metrics."""
    out: dict[str, float] = {}
    for cat, sig in SIGNATURES.items():
        best = 0.0
        for name, sign in sig:
            v = z.get(name)
            if v is not None and sign * v > best:
                best = sign * v
        out[cat] = best
    return out


def match_category(z: Mapping[str, float], min_z: float = 4.0, margin: float = 0.5) -> str | None:
    """The probable category of a deviation, or ``None`` when no signature matches.

    A category earlier in :data:`PRIORITY` wins unless a later one has more than
    ``1 / margin`` times its evidence.
    """
    ev = category_evidence(z)
    best: str | None = None
    for cat in PRIORITY:
        e = ev[cat]
        if e < min_z:
            continue
        if best is None or e * margin > ev[best]:
            best = cat
    return best
