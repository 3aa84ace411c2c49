"""The report's PNG plots (matplotlib, Agg backend; no Kafka, no reading of files).

* :func:`timeline`: one incident: the node's telling metric, the detectors' scores and
  thresholds, the alert spans and the labelled window;
* :func:`forecast_vs_actual`: a few links' actual throughput with the forecasts and their
  intervals;
* :func:`delay_histogram`: detection delays per category;
* :func:`recall_heatmap`: recall per category x severity.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from stream.records import CATEGORIES, SEVERITIES  # noqa: E402

#: The metric that shows each category best.
TELLING_METRIC = {
    "crash": "uptime_s",
    "network_failure": "packet_loss",
    "disk_full": "disk_util",
    "memory_leak": "mem_util",
    "consensus_degradation": "consensus_latency_ms",
}
COLORS = ("tab:red", "tab:purple", "tab:orange", "tab:green", "tab:brown")
DPI = 80


def _times(x: Sequence[float] | np.ndarray) -> list[dt.datetime]:
    return [dt.datetime.fromtimestamp(float(v), dt.UTC) for v in x]


def timeline(
    path: Path,
    label: Any,
    t: np.ndarray,
    values: np.ndarray,
    alerts: Sequence[Any],
    detected_at: dt.datetime | None,
    thresholds: dict[str, float] | None = None,
    margin_s: float = 600.0,
) -> None:
    """Plot one incident (``t``/``values``: the node's samples of the telling metric).

    ``thresholds`` (detector -> threshold) draws each detector's threshold even when it
    raised no alert near this incident.
    """
    metric = TELLING_METRIC[label.category]
    lo, hi = label.start.timestamp() - margin_s, label.end.timestamp() + margin_s
    fig, ax = plt.subplots(figsize=(8, 3.2))
    m = (t >= lo) & (t <= hi)
    ax.plot(_times(t[m]), values[m], ".", ms=2.5, color="tab:blue", label=metric)
    ax.set_ylabel(metric, color="tab:blue")
    ax.axvspan(label.start, label.end, color="gold", alpha=0.25, label="labelled incident")
    ax2 = ax.twinx()
    ax2.set_ylim(0, 1.02)
    ax2.set_ylabel("score")
    by_source: dict[str, list[Any]] = {src: [] for src in thresholds or {}}
    for a in alerts:
        by_source.setdefault(a.source, []).append(a)
    for k, (source, items) in enumerate(sorted(by_source.items())):
        color = COLORS[k % len(COLORS)]
        items.sort(key=lambda a: a.event_time)
        if items:
            ax2.plot(
                [a.event_time for a in items],
                [a.score for a in items],
                "o-",
                ms=3,
                lw=1,
                color=color,
                label=f"{source} score (alerts)",
            )
        level = items[0].threshold if items else (thresholds or {}).get(source)
        if level is not None:
            ax2.axhline(level, color=color, ls="--", lw=0.8, label=f"{source} threshold")
        spans: dict[str, list[dt.datetime]] = {}
        for a in items:
            s = spans.setdefault(a.incident_id, [a.opened_at, a.event_time])
            s[1] = max(s[1], a.event_time)
        for opened, last in spans.values():
            ax2.axvspan(opened, last, ymin=0.96, ymax=1.0, color=color, alpha=0.8)
    if detected_at is not None:
        ax.axvline(detected_at, color="black", lw=1, label="detected")
    ax.set_xlim(_times([lo, hi]))
    delay = (
        f"detected after {(detected_at - label.start).total_seconds():.0f} s"
        if detected_at is not None
        else "missed"
    )
    ax.set_title(
        f"{label.incident_id} {label.category}/{label.severity} on {label.node_id}: {delay}",
        fontsize=9,
    )
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=6, loc="upper left", ncol=2)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def forecast_vs_actual(path: Path, pairs: Sequence[tuple[Any, ...]], links: int = 3) -> list[str]:
    """Actual vs forecast (with interval) for the ``links`` links with most forecasts."""
    count: dict[Any, int] = {}
    for p in pairs:
        count[p[0]] = count.get(p[0], 0) + 1
    chosen = sorted(count, key=lambda k: (-count[k], str(k)))[:links]
    horizons = sorted({p[1] for p in pairs})
    fig, axes = plt.subplots(len(chosen), 1, figsize=(9, 2.6 * len(chosen)), squeeze=False)
    for ax, link in zip(axes[:, 0], chosen, strict=True):
        rows = sorted((p for p in pairs if p[0] == link), key=lambda p: p[2])
        first = [p for p in rows if p[1] == horizons[0]]
        ax.plot(
            _times([p[2] for p in first]),
            [p[3] for p in first],
            "-",
            lw=1,
            color="black",
            label="actual",
        )
        for k, h in enumerate(horizons):
            hs = [p for p in rows if p[1] == h]
            x = _times([p[2] for p in hs])
            color = COLORS[k % len(COLORS)]
            ax.plot(x, [p[4] for p in hs], "-", lw=0.8, color=color, label=f"forecast h={h}")
            if k == 0:
                ax.fill_between(
                    x,
                    [p[5] for p in hs],
                    [p[6] for p in hs],
                    color=color,
                    alpha=0.15,
                    label=f"interval h={h}",
                )
        ax.set_title(f"{link[0]} -> {link[1]}", fontsize=9)
        ax.set_ylabel("throughput_mbps")
        ax.legend(fontsize=6, loc="upper left", ncol=4)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return [f"{a} -> {b}" for a, b in chosen]


def delay_histogram(path: Path, delays: Mapping[str, Sequence[float]], title: str) -> None:
    """Stacked histogram of detection delays (seconds) per category."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    data = [list(delays.get(c, ())) for c in CATEGORIES]
    allv = [v for d in data for v in d]
    if allv:
        top = max(max(allv), 1.0)
        bins = np.linspace(0, top, min(30, max(5, len(allv) // 3)) + 1)
        ax.hist(data, bins=bins, stacked=True, label=list(CATEGORIES), color=COLORS)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no detections", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("detection delay (s of event time, label start -> first alert)")
    ax.set_ylabel("incidents")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def recall_heatmap(
    path: Path, matrix: Mapping[str, Mapping[str, Mapping[str, Any]]], title: str
) -> None:
    """Recall per category (rows) x severity (columns), with counts."""
    grid = np.full((len(CATEGORIES), len(SEVERITIES)), np.nan)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for i, c in enumerate(CATEGORIES):
        for j, s in enumerate(SEVERITIES):
            cell = matrix[c][s]
            if cell["recall"] is not None:
                grid[i, j] = cell["recall"]
            text = "-" if cell["recall"] is None else f"{cell['detected']}/{cell['incidents']}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8)
    ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(SEVERITIES)), SEVERITIES)
    ax.set_yticks(range(len(CATEGORIES)), CATEGORIES, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
