"""Point-wise and segment scores of a detector on labelled series (pure; any detector).

The usual way to score anomaly detectors on labelled benchmarks such as ASD:

* **point-wise** precision, recall and F1 of the flagged points against the labelled ones,
  *without* "point adjust" (which counts a whole segment as found when any one of its points
  is flagged, and makes random scores look good);
* :func:`best_f1`: the F1 at the best single threshold chosen *with* the labels (optimistic:
  an upper bound, for comparison with published figures, never a deployable setting);
* **segment recall**: share of labelled segments that an alert event overlaps, and **event
  precision**: share of alert events that overlap a labelled segment (events and segments are
  closed intervals ``(start, end)`` per node, of any ordered type: rows, seconds, datetimes).

Examples
--------
>>> y = [0, 0, 1, 1, 1, 0, 0, 0]
>>> s = [0.1, 0.2, 0.9, 0.4, 0.8, 0.3, 0.7, 0.1]
>>> m = point_scores(y, [v >= 0.7 for v in s])
>>> round(m["precision"], 3), round(m["recall"], 3), round(m["f1"], 3)
(0.667, 0.667, 0.667)
>>> b = best_f1(y, s)
>>> round(b["f1"], 3), b["threshold"]
(0.857, 0.4)
>>> segs = {"a": [(2, 4), (10, 12)]}
>>> events = {"a": [(3, 3), (6, 7)]}
>>> segment_recall(segs, events), event_precision(segs, events)
(0.5, 0.5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["point_scores", "best_f1", "segment_recall", "event_precision"]


def point_scores(
    y_true: Sequence[int] | np.ndarray, flagged: Sequence[bool] | np.ndarray
) -> dict[str, float]:
    """Precision, recall and F1 of ``flagged`` against ``y_true`` (1 = anomalous point)."""
    y = np.asarray(y_true, dtype=bool)
    f = np.asarray(flagged, dtype=bool)
    if y.shape != f.shape:
        raise ValueError(f"{y.size} labels but {f.size} flags")
    tp = int(np.sum(y & f))
    fp = int(np.sum(~y & f))
    fn = int(np.sum(y & ~f))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "flagged": int(f.sum())}


def best_f1(
    y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> dict[str, float]:
    """The best point-wise F1 over every threshold ``score >= t`` (chosen with the labels)."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=float)
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if not y.any():
        return {"f1": 0.0, "threshold": float("inf"), "precision": 0.0, "recall": 0.0}
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    k = np.arange(1, s.size + 1)
    # only the last index of each run of equal scores is a threshold one can set
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tp, k, thr = tp[last], k[last], s_sorted[last]
    precision = tp / k
    recall = tp / y.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(tp > 0, 2 * precision * recall / (precision + recall), 0.0)
    i = int(np.argmax(f1))
    return {
        "f1": float(f1[i]),
        "threshold": float(thr[i]),
        "precision": float(precision[i]),
        "recall": float(recall[i]),
    }


def _overlaps(a: tuple[Any, Any], b: tuple[Any, Any]) -> bool:
    return bool(a[0] <= b[1] and b[0] <= a[1])


def _share_overlapping(
    these: Mapping[str, Sequence[tuple[Any, Any]]], others: Mapping[str, Sequence[tuple[Any, Any]]]
) -> float:
    """Share of the intervals in ``these`` that some interval of the same node in ``others``
    overlaps (0 when ``these`` is empty)."""
    total = sum(len(v) for v in these.values())
    hit = sum(
        any(_overlaps(x, y) for y in others.get(node, ()))
        for node, xs in these.items()
        for x in xs
    )
    return hit / total if total else 0.0


def segment_recall(
    segments: Mapping[str, Sequence[tuple[Any, Any]]],
    events: Mapping[str, Sequence[tuple[Any, Any]]],
) -> float:
    """Share of labelled segments that some event of the same node overlaps."""
    return _share_overlapping(segments, events)


def event_precision(
    segments: Mapping[str, Sequence[tuple[Any, Any]]],
    events: Mapping[str, Sequence[tuple[Any, Any]]],
) -> float:
    """Share of events that overlap some labelled segment of the same node (0 without events)."""
    return _share_overlapping(events, segments)
