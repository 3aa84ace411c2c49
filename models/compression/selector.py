"""Per-link choices on a stream: decide, switch only when it pays, learn in micro-batches.

:class:`LinkSelector` keeps each link's current action. For a batch of (link, state) pairs the
policy picks an action per state; a link switches when the pick differs from its current
action *and* the transfer-time model expects it to be at least ``min_improvement`` faster
(hysteresis: near a decision boundary the pick may flicker, the recommendation should not).
Every state is scored against the teacher's best action before it is learnt from
(prequential agreement); every ``train_every`` states the policy takes a micro-batch update on
them mixed with an equal-sized replay sample (a reservoir over all states seen), unless it
already agreed with the teacher on more than ``update_below`` of them: then there is nothing
to learn, and the update's CPU is left to the stream (the states still join the reservoir).

Examples
--------
A policy that always says zstd-3, on two links of a simulated fleet (the first decision of a
link always counts as a switch):

>>> from producers.compression_states import fleet_states
>>> from models.compression.policy import CompressionPolicy
>>> from models.compression.portable import Dense, PortablePolicy
>>> teacher = TransferModel()
>>> bias = np.zeros(6)
>>> bias[teacher.table.index("zstd-3")] = 1.0
>>> doc = PortablePolicy(actions=teacher.table.actions, mean=np.zeros(8), std=np.ones(8),
...                      layers=[Dense(np.zeros((8, 6)), bias, "softmax")], version="v0")
>>> sel = LinkSelector(CompressionPolicy.from_portable(doc, transfer=teacher), train=False)
>>> states = fleet_states(seed=7, nodes=4, hours=1.0, interval_s=600.0)[:12]
>>> links = ["a>b", "c>d"] * 6
>>> [(d.link, teacher.names[d.action]) for d in sel.decide(links, states)]
[('a>b', 'zstd-3'), ('c>d', 'zstd-3')]
>>> round(sel.agreement, 3)
0.5
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.compression.states import STATE_FIELDS
from models.compression.transfer import TransferModel

__all__ = ["Decision", "LinkSelector"]


@dataclass(frozen=True, eq=False)
class Decision:
    """A link's new action: ``row`` of the input, confidence, every action's expected time and
    the version of the policy that decided it."""

    row: int
    link: str
    action: int
    previous: int | None
    confidence: float
    times: np.ndarray
    version: str = ""


class LinkSelector:
    """Current action per link, switched with hysteresis; micro-batch learning with replay.

    Parameters
    ----------
    policy
        A fitted :class:`~models.compression.policy.CompressionPolicy`.
    min_improvement
        Relative expected-time saving a switch needs (0 switches on every change of pick).
    train_every
        States per micro-batch update (``train=False`` never updates).
    replay
        Size of the reservoir of past states mixed into each update.
    seed
        Seeds the reservoir.
    update_below
        Take a due micro-batch update only if the policy's agreement on its states was at most
        this (default 0.99: the shipped policy agrees on 99.3% of held-out states, so a batch
        below 99% is one it does worse on than it was validated for); 1.0 updates every time.
    background
        Run each micro-batch update in a background thread: decisions go on with the current
        policy (its exported weights are swapped in one assignment when the update is done),
        so the first update, which also imports TensorFlow, never stalls the stream. States
        that become due while an update runs wait for the next one. ``False``: inline, so the
        same states always give the same decisions.
    """

    def __init__(
        self,
        policy: Any,
        *,
        min_improvement: float = 0.02,
        train_every: int = 4096,
        replay: int = 16384,
        train: bool = True,
        seed: int = 0,
        update_below: float = 0.99,
        background: bool = False,
    ) -> None:
        if not 0.0 <= update_below <= 1.0:
            raise ValueError(f"update_below must be in [0, 1], got {update_below}")
        self.policy = policy
        self.min_improvement = min_improvement
        self.train_every = train_every
        self.replay = replay
        self.train = train
        self.seed = seed
        self.update_below = update_below
        self.updates_skipped = 0
        self.current: dict[str, int] = {}
        self.decided = self.agreed = self.switches = 0
        self._rng = np.random.default_rng(seed)
        self._pending: list[np.ndarray] = []
        self._pending_agreed = 0  # of the pending states, those the pick got right
        self._reservoir = np.empty((0, len(STATE_FIELDS)))
        self._seen = 0
        self.background = background
        self._worker: threading.Thread | None = None
        self.update_errors = 0
        self.last_error = ""

    @property
    def transfer(self) -> TransferModel:
        """The teacher (the policy's transfer-time model)."""
        return self.policy.transfer  # type: ignore[no-any-return]

    @property
    def agreement(self) -> float:
        """Share of decided states where the pick was the teacher's best (NaN before any)."""
        return self.agreed / self.decided if self.decided else float("nan")

    def decide(self, links: Sequence[str], states: np.ndarray) -> list[Decision]:
        """Pick an action for each state, in order; return the switches (then learn).

        Inline (``background=False``), the states are decided in pieces that end where a
        micro-batch update is due, and the update runs there: every update learns exactly
        ``train_every`` states and the states after it are decided by the updated policy, so
        the decisions do not depend on how the states were cut into calls.
        """
        s = np.asarray(states, dtype=np.float64).reshape(len(links), len(STATE_FIELDS))
        out: list[Decision] = []
        start = 0
        while start < len(s):
            stop = len(s)
            if self.train and not self.background:
                due = self.train_every - sum(len(p) for p in self._pending)
                stop = min(stop, start + max(due, 1))
            out += self._decide(links[start:stop], s[start:stop], start)
            start = stop
        return out

    def _decide(self, links: Sequence[str], s: np.ndarray, offset: int) -> list[Decision]:
        times = self.transfer.times(s)
        proba = self.policy.predict_proba(s)
        version = str(self.policy.version)
        pick = proba.argmax(axis=1)
        agreed = int((times[np.arange(len(s)), pick] <= times.min(axis=1)).sum())
        self.decided += len(s)
        self.agreed += agreed
        out = []
        for i, link in enumerate(links):
            new, prev = int(pick[i]), self.current.get(link)
            if prev == new:
                continue
            if prev is not None and times[i, prev] < times[i, new] * (1.0 + self.min_improvement):
                continue
            self.current[link] = new
            out.append(
                Decision(offset + i, link, new, prev, float(proba[i, new]), times[i], version)
            )
        self.switches += len(out)
        if self.train:
            self._learn(s, agreed)
        return out

    def _learn(self, s: np.ndarray, agreed: int) -> None:
        self._pending.append(s)
        self._pending_agreed += agreed
        if sum(len(p) for p in self._pending) < self.train_every:
            return
        if self._worker is not None and self._worker.is_alive():
            return  # the running update first; these states go into the next one
        new = np.concatenate(self._pending)
        agreed, self._pending, self._pending_agreed = self._pending_agreed, [], 0
        if agreed > self.update_below * len(new):  # nothing to learn from these
            self.updates_skipped += 1
            self._remember(new)
            return
        k = min(len(self._reservoir), len(new))
        old = self._reservoir[self._rng.choice(len(self._reservoir), k, replace=False)]
        batch = np.concatenate([new, old])
        self._remember(new)
        if not self.background:
            self.policy.partial_fit(batch)
            return
        self._worker = threading.Thread(
            target=self._update, args=(batch,), name="compression-update", daemon=True
        )
        self._worker.start()

    def _update(self, batch: np.ndarray) -> None:
        try:
            self.policy.partial_fit(batch)
        except Exception as exc:  # a failed update keeps the current policy deciding
            self.update_errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"

    def finish(self, timeout: float | None = None) -> None:
        """Wait for a running background update (shutdown, tests)."""
        if self._worker is not None:
            self._worker.join(timeout)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_worker"] = None  # a thread does not pickle; a running update is not kept
        return state

    def _remember(self, new: np.ndarray) -> None:
        """Reservoir sampling: every state seen has the same chance to be in the replay set."""
        room = max(self.replay - len(self._reservoir), 0)
        if room:
            self._reservoir = np.concatenate([self._reservoir, new[:room]])
        rest = new[room:]
        seen = self._seen + room + np.arange(1, len(rest) + 1)
        slot = (self._rng.random(len(rest)) * seen).astype(np.int64)
        keep = slot < self.replay
        self._reservoir[slot[keep]] = rest[keep]  # a repeated slot keeps the later row
        self._seen += len(new)
