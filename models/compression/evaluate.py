"""How good a choice of actions is, measured with the transfer-time model.

Given the time of every action in every state (``TransferModel.times``) and the actions a
policy chose, :func:`evaluate` reports

* **agreement**: share of states where the policy chose the fastest action;
* **regret**: the extra time where it did not (mean and worst, relative to the best time),
  and the extra time over the whole set relative to always choosing the best;
* **gain over the best single fixed codec**: the fixed action with the least total time over
  the set (what a well-tuned static configuration would use), and the policy's saving against
  it: ``1 - sum(time of policy) / sum(time of fixed)``. The mean per-state saving is reported
  too, against the fixed action with the least mean relative time (slow links dominate the
  sums, every link counts once in the means).

Examples
--------
The exact argmin of the model agrees with itself and has no regret; always zstd-19 is slow:

>>> import numpy as np
>>> times = np.array([[1.0, 2.0, 9.0], [4.0, 2.0, 9.0], [4.0, 3.0, 1.0]])
>>> ev = evaluate(times, times.argmin(axis=1), ("none", "lz4", "zstd-19"))
>>> ev.agreement, ev.regret_total, ev.best_fixed, round(ev.gain_total, 3)
(1.0, 0.0, 'lz4', 0.429)
>>> evaluate(times, np.array([0, 0, 2]), ("none", "lz4", "zstd-19")).regret_max
1.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Evaluation", "evaluate"]


@dataclass(frozen=True)
class Evaluation:
    """Figures of :func:`evaluate` (fractions, not percent)."""

    n: int
    agreement: float
    disagreements: int
    regret_mean: float  # mean of time/best - 1 over the disagreements (0 if none)
    regret_max: float  # worst time/best - 1
    regret_total: float  # sum(policy) / sum(best) - 1 over all states
    best_fixed: str  # fixed action with the least total time
    gain_total: float  # 1 - sum(policy) / sum(best_fixed)
    oracle_gain_total: float  # 1 - sum(best) / sum(best_fixed): the most any policy can gain
    best_fixed_mean: str  # fixed action with the least mean time/best
    gain_mean: float  # mean over states of 1 - policy/best_fixed_mean
    fixed_totals: dict[str, float]  # sum(fixed a) / sum(best), per action
    chosen_share: dict[str, float]  # share of states each action was chosen in

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return asdict(self)


def evaluate(times: np.ndarray, chosen: np.ndarray, names: Sequence[str]) -> Evaluation:
    """Score the actions ``chosen`` (shape ``(n,)``) given ``times`` of shape ``(n, n_actions)``."""
    times = np.asarray(times, dtype=np.float64)
    chosen = np.asarray(chosen, dtype=np.intp)
    n, n_act = times.shape
    if chosen.shape != (n,) or len(names) != n_act:
        raise ValueError(
            f"chosen {chosen.shape} / names {len(names)} do not match times {times.shape}"
        )
    rows = np.arange(n)
    best = times.min(axis=1)
    got = times[rows, chosen]
    rel = got / best - 1.0
    wrong = got > best  # ties count as agreement
    totals = times.sum(axis=0)
    fixed = int(totals.argmin())
    mean_rel = (times / best[:, None]).mean(axis=0)
    fixed_mean = int(mean_rel.argmin())
    return Evaluation(
        n=n,
        agreement=float(1.0 - wrong.mean()),
        disagreements=int(wrong.sum()),
        regret_mean=float(rel[wrong].mean()) if wrong.any() else 0.0,
        regret_max=float(rel.max(initial=0.0)),
        regret_total=float(got.sum() / best.sum() - 1.0),
        best_fixed=names[fixed],
        gain_total=float(1.0 - got.sum() / totals[fixed]),
        oracle_gain_total=float(1.0 - best.sum() / totals[fixed]),
        best_fixed_mean=names[fixed_mean],
        gain_mean=float(np.mean(1.0 - got / times[:, fixed_mean])),
        fixed_totals={nm: float(totals[i] / best.sum()) for i, nm in enumerate(names)},
        chosen_share={nm: float(np.mean(chosen == i)) for i, nm in enumerate(names)},
    )
