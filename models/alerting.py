"""From per-node anomaly scores to incident alerts with a lifecycle (open -> update* -> resolved).

:class:`IncidentTracker` is shared by every detector that raises alerts (reliability, consensus
autoencoder). It is pure: it sees ``(node, event time, score, threshold)`` and returns
:class:`stream.records.Alert` records; the consumer publishes them.

* **Hysteresis.** An incident opens after ``open_after`` consecutive scores at or above the
  threshold, and resolves only after the score has stayed below ``hysteresis * threshold`` for
  ``resolve_after_s`` seconds of event time, so a flapping score does not flap alerts.
* **Stable ids.** ``incident_id`` is derived from the source, the node and the event time the
  incident opened at, and ``alert_id`` from the incident id, status and sequence number: a
  replay of the same stream, or a restart from a checkpoint, yields the same ids, so
  subscribers can drop duplicates of at-least-once delivery.
* **Confirmation** (``confirm_s``, the precision/recall knob). With ``confirm_s > 0`` a
  streak only makes a *candidate*: the incident opens at the first score above the threshold
  at least ``confirm_s`` seconds after the candidate began, as long as it has not gone quiet
  for ``resolve_after_s`` meanwhile (then it is dropped without an alert). Short bursts then
  never alert, at the price of ``confirm_s`` more delay on every incident; ``opened_at`` is
  the time it opened, so measured delays include the wait. 0 (the default) opens at once.
* **Explained only** (``explained_only``, a second knob): a streak opens an incident only once
  one of its scores came with a probable category (the caller's signature match), and the
  incident opens with that category. Streaks nothing explains never alert.
* **Updates** go out when the severity rises, the probable category changes, or every
  ``update_every_s`` seconds of event time while the incident lasts.

Examples
--------
>>> import datetime as dt
>>> t0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
>>> tracker = IncidentTracker("demo", open_after=2, resolve_after_s=10)
>>> scores = [0.1, 0.85, 0.86, 0.93, 0.2, 0.1, 0.1, 0.1]
>>> for i, s in enumerate(scores):
...     for a in tracker.observe("n-1", t0 + dt.timedelta(seconds=5 * i), s, threshold=0.8):
...         print(i, a.status, a.severity, round(a.score, 2))
2 open medium 0.86
3 update high 0.93
6 resolved high 0.1
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stream.records import Alert, MetricDeviation

_NS = uuid.UUID("6f1d3c59-4f7e-4a44-9a55-2d1f0c7e9b21")
SEVERITY_ORDER = ("low", "medium", "high", "critical")


def severity_for(score: float, threshold: float) -> str:
    """Severity from how far ``score`` is above ``threshold`` on the way to 1.0.

    >>> [severity_for(s, 0.8) for s in (0.82, 0.88, 0.93, 0.99)]
    ['low', 'medium', 'high', 'critical']
    """
    excess = (score - threshold) / max(1e-9, 1.0 - threshold)
    return SEVERITY_ORDER[min(3, max(0, int(excess * 4)))]


@dataclass
class _Incident:
    incident_id: str
    opened_at: dt.datetime
    severity: str
    category: str | None
    peak: float
    seq: int = 0
    last_emit: dt.datetime | None = None
    quiet_since: dt.datetime | None = None


@dataclass
class _NodeState:
    streak: int = 0
    incident: _Incident | None = None
    candidate: dt.datetime | None = None  # a streak waiting for confirmation began here
    candidate_quiet: dt.datetime | None = None
    candidate_category: str | None = None  # the first probable category seen in the streak


@dataclass
class IncidentTracker:
    """Per-node incident lifecycle with hysteresis and stable ids (see the module docstring).

    Parameters
    ----------
    source
        Name of the detector, written into every alert and the incident id.
    open_after
        Consecutive scores at or above the threshold needed to open an incident.
    hysteresis
        An open incident counts as quiet while ``score < hysteresis * threshold``.
    resolve_after_s
        Seconds of event time the score must stay quiet before the incident resolves.
    update_every_s
        Heartbeat updates while an incident lasts (seconds of event time).
    confirm_s
        Seconds of event time a streak must last before its incident opens (see above).
    explained_only
        Open only streaks that a probable category explains (see above).
    """

    source: str
    open_after: int = 2
    hysteresis: float = 0.9
    resolve_after_s: float = 30.0
    update_every_s: float = 60.0
    nodes: dict[str, _NodeState] = field(default_factory=dict)
    confirm_s: float = 0.0
    explained_only: bool = False

    def observe(
        self,
        node_id: str,
        event_time: dt.datetime,
        score: float,
        threshold: float,
        *,
        category: str | None = None,
        top_metrics: Sequence[MetricDeviation] = (),
        model_versions: Mapping[str, str] | None = None,
        region: str | None = None,
        reason: str = "",
        confirmed: bool = False,
    ) -> list[Alert]:
        """Feed one score; return the alerts it causes (usually none).

        ``confirmed`` evidence (a missed heartbeat) needs no ``confirm_s`` wait.
        """
        state = self.nodes.setdefault(node_id, _NodeState())
        above = score >= threshold
        state.streak = state.streak + 1 if above else 0
        inc = state.incident
        extra = {
            "top_metrics": list(top_metrics),
            "model_versions": dict(model_versions or {}),
            "region": region,
            "reason": reason,
        }
        if inc is None:
            if state.candidate is None:
                if state.streak < self.open_after:
                    return []
                state.candidate, state.candidate_quiet = event_time, None
                state.candidate_category = None
            if above and state.candidate_category is None:
                state.candidate_category = category
            if score < self.hysteresis * threshold:
                state.candidate_quiet = state.candidate_quiet or event_time
                if (event_time - state.candidate_quiet).total_seconds() >= self.resolve_after_s:
                    state.candidate = state.candidate_quiet = None  # a burst: never alerted
                return []
            state.candidate_quiet = None
            waited = (event_time - state.candidate).total_seconds()
            if not above or (waited < self.confirm_s and not confirmed):
                return []
            if self.explained_only:
                if state.candidate_category is None:
                    return []  # nothing explains the streak (yet)
                category = category or state.candidate_category
            state.candidate = None
            key = f"{self.source}|{node_id}|{event_time.isoformat()}"
            inc = state.incident = _Incident(
                incident_id=str(uuid.uuid5(_NS, key)),
                opened_at=event_time,
                severity=severity_for(score, threshold),
                category=category,
                peak=score,
            )
            return [self._emit(node_id, inc, "open", event_time, score, threshold, **extra)]

        if score < self.hysteresis * threshold:
            inc.quiet_since = inc.quiet_since or event_time
            if (event_time - inc.quiet_since).total_seconds() >= self.resolve_after_s:
                state.incident = None
                return [self._emit(node_id, inc, "resolved", event_time, score, threshold, **extra)]
            return []
        inc.quiet_since = None
        inc.peak = max(inc.peak, score)
        severity = severity_for(inc.peak, threshold)
        escalated = SEVERITY_ORDER.index(severity) > SEVERITY_ORDER.index(inc.severity)
        recategorised = category is not None and category != inc.category
        due = inc.last_emit is not None and (event_time - inc.last_emit).total_seconds() >= self.update_every_s
        if not (above and (escalated or recategorised)) and not due:
            return []
        inc.severity = max(inc.severity, severity, key=SEVERITY_ORDER.index)
        inc.category = category or inc.category
        return [self._emit(node_id, inc, "update", event_time, score, threshold, **extra)]

    def retune(self, **knobs: Any) -> dict[str, tuple[Any, Any]]:
        """Set alerting knobs (``confirm_s``, ``explained_only``): a run's flags over a
        restored tracker's, since they decide alerts, not what was learned. Returns
        ``{name: (old, new)}`` of those that changed."""
        changed = {}
        for name, value in knobs.items():
            if name not in ("confirm_s", "explained_only"):
                raise TypeError(f"{name} is not an alerting knob")
            old = getattr(self, name)
            if old != value:
                setattr(self, name, value)
                changed[name] = (old, value)
        return changed

    def watching(self, node_id: str) -> bool:
        """Whether ``node_id`` has an open incident or a streak waiting for ``confirm_s``
        (its records are evidence, not normal data to learn from)."""
        state = self.nodes.get(node_id)
        return state is not None and (state.incident is not None or state.candidate is not None)

    def open_incidents(self) -> dict[str, str]:
        """``{node_id: incident_id}`` of the incidents open now."""
        return {n: s.incident.incident_id for n, s in self.nodes.items() if s.incident}

    def _emit(
        self,
        node_id: str,
        inc: _Incident,
        status: str,
        event_time: dt.datetime,
        score: float,
        threshold: float,
        **extra: object,
    ) -> Alert:
        inc.seq += 1
        inc.last_emit = event_time
        return Alert(
            alert_id=str(uuid.uuid5(_NS, f"{inc.incident_id}|{status}|{inc.seq}")),
            incident_id=inc.incident_id,
            node_id=node_id,
            status=status,  # type: ignore[arg-type]
            severity=inc.severity,  # type: ignore[arg-type]
            score=min(1.0, max(0.0, score)),
            threshold=threshold,
            event_time=event_time,
            opened_at=inc.opened_at,
            source=self.source,
            category=inc.category,  # type: ignore[arg-type]
            **extra,  # type: ignore[arg-type]
        )
