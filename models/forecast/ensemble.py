"""Online, causal combination of member forecasts per link and horizon, from recent error.

Every member (persistence, EWMA, harmonic mean, the LSTM, ...) forecasts every horizon at each
step. When a target arrives, each member's absolute error on it updates that link's and
horizon's *discounted* error ``L = decay * L + |e|`` (and count ``N = decay * N + 1``), with
``decay = 1 - 1 / memory``: a member's recent mean error is ``L / N``. The published forecast
made at step ``t`` uses only errors of forecasts whose targets arrived by ``t`` (causal):

* ``rule="ftl"`` (follow the leader): the member with the lowest recent mean error;
* ``rule="ewa"`` (exponentially weighted averaging): weights
  ``exp(-eta * (mean_m / min_mean - 1))`` normalised over the members, so a member 10% worse
  than the leader weighs ``exp(-eta / 10)`` of it (scale-free: one ``eta`` for every link).

A new link starts from the fleet's relative errors (``|e| / level``, discounted with
``prior_memory``) scaled by its own level, worth ``prior_strength`` pseudo-errors, so a short
link is not left to chance; its own errors replace the prior within ``memory`` steps. With
``shrink`` > 0 the fleet's relative errors stay in every weight, worth ``shrink``
pseudo-errors beside the link's own (at most ``memory``): a link's recent errors are few and
noisy (at h = 15 its last 50 errors are about 3 independent ones), and choosing per link on
them alone cost the published forecast more than it won (measured in the bandwidth model
card). Members without any error yet (an LSTM before its warm-up) or without a forecast now
get weight 0.

Examples
--------
Three members on one link; the third is always right, the others are off by 1 and 2:

>>> import numpy as np
>>> c = OnlineCombiner(("a", "b", "c"), horizons=(1,), rule="ftl", memory=10)
>>> rows = np.array([0])
>>> for _ in range(5):
...     c.update(rows, 0, np.array([[1.0, 2.0, 0.0]]), level=np.array([10.0]))
>>> c.weights(rows, np.ones((1, 1, 3), bool), level=np.array([10.0]))[0, 0].tolist()
[0.0, 0.0, 1.0]
>>> e = OnlineCombiner(("a", "b"), horizons=(1,), rule="ewa", eta=1.0)
>>> e.update(rows, 0, np.array([[1.0, 2.0]]), level=np.array([10.0]))
>>> e.weights(rows, np.ones((1, 1, 2), bool), np.array([10.0]))[0, 0].round(3).tolist()
[0.731, 0.269]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.forecast.windows import row_sum

RULES = ("ftl", "ewa")


class OnlineCombiner:
    """Discounted recent errors per ``(link row, horizon, member)`` and the weights they imply.

    Parameters
    ----------
    members
        Member names, in column order.
    horizons
        Forecast horizons (one set of errors each).
    rule
        ``"ftl"`` or ``"ewa"`` (see the module docstring).
    memory
        Effective number of recent errors per link (``decay = 1 - 1 / memory``).
    eta
        EWA temperature on the relative excess error.
    prior_strength
        Pseudo-errors a new link starts with from the fleet's relative errors (0: none).
    prior_memory
        Effective number of recent (fleet-wide) errors behind the prior.
    shrink
        Pseudo-errors the fleet prior adds to every link's errors in every weight (0: only a
        new link's start; see the module docstring).
    default
        Member used while no member has an error yet.
    level_floor
        Floor of the level that makes errors relative for the prior.
    """

    def __init__(
        self,
        members: Sequence[str],
        horizons: Sequence[int],
        rule: str = "ewa",
        memory: float = 50.0,
        eta: float = 20.0,
        prior_strength: float = 10.0,
        prior_memory: float = 5000.0,
        default: str | None = None,
        level_floor: float = 1e-3,
        shrink: float = 0.0,
    ) -> None:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        if memory < 1 or prior_memory < 1:
            raise ValueError(f"memory and prior_memory must be >= 1, got {memory}, {prior_memory}")
        self.members, self.horizons, self.rule = tuple(members), tuple(horizons), rule
        self.memory, self.eta, self.prior_strength = memory, eta, prior_strength
        self.prior_memory, self.level_floor = prior_memory, level_floor
        if shrink < 0:
            raise ValueError(f"shrink must be >= 0, got {shrink}")
        self.shrink = shrink
        self.default = self.members[0] if default is None else default
        if self.default not in self.members:
            raise ValueError(f"default {self.default!r} not among the members {self.members}")
        H, M = len(self.horizons), len(self.members)
        self.loss_ = np.zeros((0, H, M))
        self.count_ = np.zeros((0, H, M))
        self.started_ = np.zeros(0, dtype=bool)
        self.prior_loss_ = np.zeros((H, M))  # discounted relative errors, fleet-wide
        self.prior_count_ = np.zeros((H, M))

    shrink = 0.0  # a checkpoint from before ``shrink`` restores without it
    # errors fed with an ``order``, per horizon index, until :meth:`flush_prior`
    pending_: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] | None = None

    def _grow(self, rows: np.ndarray) -> None:
        if len(rows) and rows.max() >= len(self.started_):
            extra = int(rows.max()) + 1 - len(self.started_) + 16
            shape = (extra, len(self.horizons), len(self.members))
            self.loss_ = np.concatenate([self.loss_, np.zeros(shape)])
            self.count_ = np.concatenate([self.count_, np.zeros(shape)])
            self.started_ = np.concatenate([self.started_, np.zeros(extra, dtype=bool)])

    def _start(self, rows: np.ndarray, level: np.ndarray) -> None:
        """Seed links seen for the first time with the fleet's relative errors."""
        new = ~self.started_[rows]
        if not new.any():
            return
        r = rows[new]
        self.started_[r] = True
        if self.prior_strength > 0:
            self.loss_[r], self.count_[r] = self._pseudo_errors(level[new], self.prior_strength)

    def _pseudo_errors(self, level: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray]:
        """``k`` pseudo-errors per (horizon, member) from the fleet's relative errors, scaled
        by each link's ``level``: their sum ``(n, H, M)`` and count (0 where none is known)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = np.where(self.prior_count_ > 0, self.prior_loss_ / self.prior_count_, np.nan)
        known = np.isfinite(rel)
        lvl = np.maximum(np.abs(np.asarray(level, float)), self.level_floor)[:, None, None]
        return np.where(known, k * rel * lvl, 0.0), np.where(known, k, 0.0)

    def weights(self, rows: np.ndarray, available: np.ndarray, level: np.ndarray) -> np.ndarray:
        """Weights ``(n, H, M)`` (rows sum to 1) for forecasts made now on ``rows``.

        ``available`` ``(n, H, M)`` marks members that have a forecast now; ``level`` is each
        link's current level (for a new link's prior).
        """
        rows = np.asarray(rows, dtype=np.int64)
        self._grow(rows)
        self._start(rows, np.asarray(level, dtype=float))
        count, loss = self.count_[rows], self.loss_[rows]
        if self.shrink > 0:  # the fleet's relative errors, worth `shrink` pseudo-errors
            extra_loss, extra_count = self._pseudo_errors(level, self.shrink)
            loss, count = loss + extra_loss, count + extra_count
        ok = available & (count > 1e-9)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(ok, loss / np.where(ok, count, 1.0), np.inf)
        best = mean.min(axis=2, keepdims=True)
        w = np.zeros(mean.shape)
        none = ~np.isfinite(best[..., 0])
        if self.rule == "ftl":
            lead = np.argmin(mean, axis=2)
            np.put_along_axis(w, lead[..., None], 1.0, axis=2)
        else:
            with np.errstate(invalid="ignore"):  # inf / inf where no member has an error yet
                rel = np.where(ok, mean / np.maximum(best, 1e-12) - 1.0, np.inf)
            w = np.where(ok, np.exp(-self.eta * rel), 0.0)
            w /= np.maximum(row_sum(w), 1e-300)[..., None]
        if none.any():  # nobody scored yet: the default member (else any available one)
            d = self.members.index(self.default)
            fall = np.where(available[..., d], d, np.argmax(available, axis=2))
            w[none] = 0.0
            n_idx, h_idx = np.nonzero(none)
            w[n_idx, h_idx, fall[none]] = 1.0
        return w

    def update(
        self,
        rows: np.ndarray,
        j: int | np.ndarray,
        errors: np.ndarray,
        level: np.ndarray,
        order: np.ndarray | None = None,
    ) -> None:
        """Feed absolute errors ``(n, M)`` of horizon index ``j`` (NaN: member had no forecast).

        ``j`` is one horizon index or one per row; the ``(row, j)`` pairs must be distinct
        within a call (one resolved forecast per link and horizon), and the result is that of
        one call per horizon index in increasing order (a new link is started from the level of
        its first row). With ``order`` (each error's position in the stream), the errors reach
        the fleet prior only at :meth:`flush_prior`, summed in that order: the prior then
        depends on which errors came before a flush, not on how they were grouped into calls
        (batch invariance).
        """
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return
        level = np.asarray(level, dtype=float)
        if not np.isscalar(j) and order is None:  # the prior changes between the horizons
            js = np.asarray(j, dtype=np.int64)
            for jj in range(len(self.horizons)):
                m = js == jj
                if m.any():
                    self.update(rows[m], jj, np.asarray(errors)[m], level[m])
            return
        self._grow(rows)
        js = np.broadcast_to(np.asarray(j, dtype=np.int64), rows.shape)
        if not self.started_[rows].all():  # each new link from its first row's level
            by = np.lexsort((np.arange(len(rows)), js))  # horizon order, then row order
            _u, first = np.unique(rows[by], return_index=True)
            self._start(rows[by[first]], level[by[first]])
        e = np.asarray(errors, dtype=float)
        has = np.isfinite(e)
        e = np.where(has, e, 0.0)
        d = 1.0 - 1.0 / self.memory
        loss, count = self.loss_[rows, js], self.count_[rows, js]
        self.loss_[rows, js] = np.where(has, d * loss + e, loss)
        self.count_[rows, js] = np.where(has, d * count + 1.0, count)
        rel = e / np.maximum(np.abs(level), self.level_floor)[:, None] * has
        if order is None:
            self._add_prior(int(js[0]), rel.sum(axis=0), has.sum(axis=0))
            return
        if self.pending_ is None:
            self.pending_ = {}
        order = np.asarray(order)
        for jj in range(len(self.horizons)):
            m = js == jj
            if m.any():
                self.pending_.setdefault(jj, []).append((order[m], rel[m], has[m]))

    def _add_prior(self, j: int, total: np.ndarray, n: np.ndarray) -> None:
        dp = (1.0 - 1.0 / self.prior_memory) ** n
        self.prior_loss_[j] = dp * self.prior_loss_[j] + total
        self.prior_count_[j] = dp * self.prior_count_[j] + n

    def flush_prior(self) -> None:
        """Add the errors fed with an ``order`` to the fleet prior, in stream order."""
        for j, parts in sorted((self.pending_ or {}).items()):
            order = np.concatenate([p[0] for p in parts])
            idx = np.argsort(order, kind="stable")
            rel = np.concatenate([p[1] for p in parts])[idx]
            has = np.concatenate([p[2] for p in parts])
            self._add_prior(j, rel.sum(axis=0), has.sum(axis=0))
        self.pending_ = {}
