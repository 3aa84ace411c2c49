"""The shared incident lifecycle: hysteresis, stable ids, updates, checkpointing."""

from __future__ import annotations

import datetime as dt
import pickle

from models.alerting import IncidentTracker

T0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


def feed(tracker, scores, node="n-1", step_s=5.0, threshold=0.8):
    alerts = []
    for i, s in enumerate(scores):
        alerts += tracker.observe(node, T0 + dt.timedelta(seconds=step_s * i), s, threshold)
    return alerts


def test_single_spike_does_not_open_and_flapping_does_not_reopen():
    tracker = IncidentTracker("t", open_after=2, hysteresis=0.9, resolve_after_s=20)
    assert feed(tracker, [0.9, 0.1, 0.9, 0.1]) == []
    flapping = [0.9, 0.9] + [0.75, 0.85] * 10 + [0.1] * 6
    statuses = [a.status for a in feed(IncidentTracker("t", resolve_after_s=20), flapping)]
    assert statuses[0] == "open" and statuses[-1] == "resolved"
    assert statuses.count("open") == 1 and statuses.count("resolved") == 1  # periodic updates in between


def test_replay_and_restart_give_the_same_ids():
    scores = [0.1, 0.9, 0.95, 0.99, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    first = feed(IncidentTracker("t", resolve_after_s=20), scores)
    second = feed(IncidentTracker("t", resolve_after_s=20), scores)
    assert [a.alert_id for a in first] == [a.alert_id for a in second]
    assert len({a.incident_id for a in first}) == 1 and len({a.alert_id for a in first}) == len(first)

    # restart mid-incident from a pickled checkpoint: the same alerts follow
    tracker = IncidentTracker("t", resolve_after_s=20)
    head = feed(tracker, scores[:3])
    restored = pickle.loads(pickle.dumps(tracker))
    tail = [a for i, s in enumerate(scores[3:], start=3)
            for a in restored.observe("n-1", T0 + dt.timedelta(seconds=5 * i), s, 0.8)]
    assert [a.alert_id for a in head + tail] == [a.alert_id for a in first]


def test_updates_on_escalation_and_periodically_and_ids_differ_per_node():
    tracker = IncidentTracker("t", open_after=1, update_every_s=30, resolve_after_s=10)
    alerts = feed(tracker, [0.82, 0.83, 0.99] + [0.85] * 10)
    assert [a.status for a in alerts][:2] == ["open", "update"]
    assert alerts[0].severity == "low" and alerts[1].severity == "critical"
    periodic = [a for a in alerts[2:] if a.status == "update"]
    assert periodic and all(a.severity == "critical" for a in periodic)
    other = feed(IncidentTracker("t", open_after=1), [0.82], node="n-2")
    assert other[0].incident_id != alerts[0].incident_id
    assert tracker.open_incidents() == {"n-1": alerts[0].incident_id}


def test_confirmation_drops_short_bursts_and_opens_long_streaks_late():
    burst = [0.9] * 6 + [0.1] * 6  # 30 s above the threshold, then quiet for good
    assert feed(IncidentTracker("t", resolve_after_s=20, confirm_s=60), burst) == []
    assert [a.status for a in feed(IncidentTracker("t", resolve_after_s=20), burst)] == [
        "open",
        "resolved",
    ]

    # a streak that dips below the threshold (not quiet for resolve_after_s) keeps its
    # candidate: it opens at the first score above the threshold 60 s after the streak began
    long = [0.1, 0.9, 0.9] + [0.85, 0.75] * 6 + [0.9] * 8 + [0.1] * 6
    alerts = feed(IncidentTracker("t", resolve_after_s=20, confirm_s=60), long)
    opened = [a for a in alerts if a.status == "open"]
    assert len(opened) == 1 and alerts[-1].status == "resolved"
    # the candidate began at 10 s (the second score above); at 65 s (0.85) it had waited 55 s;
    # 70 s is below the threshold; 75 s opens
    assert opened[0].opened_at == opened[0].event_time == T0 + dt.timedelta(seconds=75)
    assert opened[0].score == 0.9


def test_confirmed_evidence_opens_without_waiting_and_zero_is_the_old_tracker():
    tracker = IncidentTracker("t", resolve_after_s=20, confirm_s=600)
    got = []
    for i in range(2):
        t = T0 + dt.timedelta(seconds=5 * i)
        got += tracker.observe("n-1", t, 1.0, 0.8, category="crash", confirmed=True)
    assert [a.status for a in got] == ["open"]

    scores = [0.1, 0.9, 0.95, 0.99, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    old = feed(IncidentTracker("t", resolve_after_s=20), scores)
    zero = feed(IncidentTracker("t", resolve_after_s=20, confirm_s=0.0), scores)
    assert [a.alert_id for a in zero] == [a.alert_id for a in old]


def test_explained_only_opens_a_streak_once_a_category_names_it():
    def run(tracker, cats):
        got = []
        for i, (s, c) in enumerate(cats):
            t = T0 + dt.timedelta(seconds=5 * i)
            got += tracker.observe("n-1", t, s, 0.8, category=c)
        return got

    unexplained = [(0.1, None)] + [(0.95, None)] * 10 + [(0.1, None)] * 6
    assert run(IncidentTracker("t", resolve_after_s=20, explained_only=True), unexplained) == []
    plain = run(IncidentTracker("t", resolve_after_s=20), unexplained)
    assert [a.status for a in plain] == ["open", "resolved"]

    # named at the fourth score above: it opens there, with that category, and lives on
    named = [(0.1, None)] + [(0.95, None)] * 3 + [(0.95, "disk_full")] + [(0.9, None)] * 4
    named += [(0.1, None)] * 6
    got = run(IncidentTracker("t", resolve_after_s=20, explained_only=True), named)
    assert [a.status for a in got] == ["open", "resolved"]
    assert got[0].category == "disk_full" and got[0].opened_at == T0 + dt.timedelta(seconds=20)

    # named early by a score under the threshold? No: only a flagged score names a streak
    early = [(0.7, "disk_full"), (0.95, None), (0.95, None), (0.1, None)]
    assert run(IncidentTracker("t", resolve_after_s=20, explained_only=True), early) == []

    # a tracker pickled before the knob existed restores without it
    state = IncidentTracker("t").__dict__.copy()
    del state["explained_only"]
    old = IncidentTracker.__new__(IncidentTracker)
    old.__dict__.update(state)
    assert old.explained_only is False
