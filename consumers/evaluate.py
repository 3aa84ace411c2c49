"""``python -m consumers.evaluate``: one evaluation report of the whole pipeline, with plots.

Reads the labels, alerts, predictions, telemetry and dead-letter topics from the start (a
throw-away consumer group that never commits) until they have been idle for
``--idle-timeout`` seconds, or the same records from JSON-lines files, and writes

* ``OUT/report.json``: every figure (see :mod:`consumers.report_build`),
* ``OUT/report.md``: the same for people, and
* ``OUT/plots/``: recall per category x severity and detection delays per detector, forecast
  against actual, and ``timelines/<incident>.png``: one per labelled incident with the
  node's telling metric, the detectors' scores and thresholds, and the alert spans.

Incident figures (recall per category and severity, precision, false-positive rate, detection
delay) come from :mod:`models.evaluation`; forecasts are scored against persistence and EWMA on
the same telemetry; compression regret when recommendations carry it. A part of the pipeline
that has published nothing is reported as "not available yet", never with made-up numbers.

Examples::

    python -m consumers.evaluate --topic-prefix eval-1234. --out reports/pipeline
    python -m consumers.evaluate --labels data/incidents/fleet.labels.jsonl \\
        --alerts out/alerts.jsonl --telemetry data/incidents/fleet.jsonl.gz --out out/report
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from consumers.report_build import PIPELINE, build_report
from consumers.report_inputs import Inputs, from_files, from_kafka
from consumers.report_markdown import render
from stream.errors import DwcpError
from stream.settings import Settings

log = logging.getLogger("consumers.evaluate")
FILE_KINDS = {
    "telemetry": "telemetry",
    "labels": "labels",
    "alerts": "alerts",
    "predictions": "predictions",
    "dead_letters": "dead-letter",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m consumers.evaluate`` command line."""
    p = argparse.ArgumentParser(
        prog="python -m consumers.evaluate",
        description="Score the pipeline's alerts and predictions against the labelled incidents "
        "and the telemetry; write report.json, report.md and PNG plots.",
        epilog="Without file flags it reads the topics (<topic-prefix>telemetry, labels, alerts, "
        "predictions, dead-letter); every connection flag can also be a DWCP_<NAME> variable.",
    )
    p.add_argument(
        "--out", default="reports/pipeline", help="output folder (default reports/pipeline)"
    )
    p.add_argument("--title", default="Pipeline evaluation", help="report title")
    p.add_argument("--command", help="the command to cite in the report (default: this one)")
    g = p.add_argument_group("scoring")
    g.add_argument(
        "--warmup-s",
        type=float,
        default=900.0,
        help="leave out incidents in the first seconds of event time (default 900)",
    )
    g.add_argument(
        "--pre-s",
        type=float,
        default=0.0,
        help="widen label windows this much before the start (default 0)",
    )
    g.add_argument("--post-s", type=float, default=60.0, help="...and after the end (default 60)")
    g = p.add_argument_group("plots")
    g.add_argument("--no-plots", action="store_true", help="write no PNGs")
    g.add_argument(
        "--max-timelines",
        type=int,
        default=0,
        help="at most this many incident timelines (default 0 = all)",
    )
    g = p.add_argument_group("files instead of topics (JSON lines, .gz allowed)")
    for name in FILE_KINDS:
        g.add_argument(f"--{name.replace('_', '-')}", metavar="FILE")
    g = p.add_argument_group("topics")
    g.add_argument(
        "--idle-timeout",
        type=float,
        default=5.0,
        help="stop reading after this many seconds without records (default 5)",
    )
    g.add_argument(
        "--max-seconds",
        type=float,
        default=600.0,
        help="stop reading after this long at most (default 600)",
    )
    Settings.add_arguments(p)
    return p


def read_inputs(args: argparse.Namespace, settings: Settings) -> Inputs:
    files = {kind: getattr(args, name) for name, kind in FILE_KINDS.items()}
    if any(files.values()):
        return from_files(files)
    return from_kafka(settings, idle_s=args.idle_timeout, max_s=args.max_seconds)


def write_plots(
    report: dict[str, Any], inp: Inputs, out: Path, max_timelines: int = 0
) -> dict[str, Any]:
    """Draw the PNGs; returns their paths relative to ``out`` (for the report)."""
    from consumers import report_plots as rp  # matplotlib only when plotting

    plots: dict[str, Any] = {}
    pdir = out / "plots"
    tdir = pdir / "timelines"
    tdir.mkdir(parents=True, exist_ok=True)
    for old in list(pdir.glob("*.png")) + list(tdir.glob("*.png")):
        old.unlink()  # stale plots of an earlier run
    det = report["detection"]
    if det.get("available"):
        labels = {lab.incident_id: lab for lab in inp.labels}
        for name, d in det.items():
            if name == "available":
                continue
            rp.recall_heatmap(
                pdir / f"recall_{name}.png", d["matrix"], f"recall per category x severity: {name}"
            )
            delays: dict[str, list[float]] = {}
            for iid, delay in d["delays"].items():
                if delay is not None:
                    delays.setdefault(labels[iid].category, []).append(delay)
            rp.delay_histogram(pdir / f"delays_{name}.png", delays, f"detection delay: {name}")
            plots[f"recall_{name}"] = f"plots/recall_{name}.png"
            plots[f"delays_{name}"] = f"plots/delays_{name}.png"
    if inp.labels and len(inp.t):
        delays = det[PIPELINE]["delays"] if det.get("available") else {}
        plots["timelines"] = _timelines(report, inp, delays, tdir, max_timelines, out)
        plots["timelines_dir"] = "plots/timelines"
    for kind, f in (report["forecast"].get("kinds") or {}).items():
        if f.get("available") and f.get("pairs"):
            path = pdir / f"forecast_{kind}.png"
            f["plotted_links"] = rp.forecast_vs_actual(path, f["pairs"])
            plots[f"forecast_{kind}"] = f"plots/forecast_{kind}.png"
    return plots


def _timelines(
    report: dict[str, Any],
    inp: Inputs,
    delays: dict[str, float | None],
    tdir: Path,
    limit: int,
    out: Path,
) -> list[str]:
    from consumers import report_plots as rp

    by_node: dict[str, np.ndarray] = {}
    nodes = inp.node
    for n in set(nodes.tolist()):
        idx = np.flatnonzero(nodes == n)
        by_node[n] = idx[np.argsort(inp.t[idx], kind="stable")]
    alerts_by_node: dict[str, list[Any]] = {}
    thresholds: dict[str, float] = {}
    for a in inp.alerts:
        alerts_by_node.setdefault(a.node_id, []).append(a)
        thresholds[a.source] = a.threshold
    paths = []
    warm = report["settings"]["warmup_until"]
    warm_t = dt.datetime.fromisoformat(warm) if warm else None
    labels = [lab for lab in inp.labels if warm_t is None or lab.start >= warm_t]
    for lab in labels[: limit or None]:
        idx = by_node.get(lab.node_id, np.array([], dtype=np.intp))
        metric = rp.TELLING_METRIC[lab.category]
        lo = lab.start - dt.timedelta(minutes=10)
        hi = lab.end + dt.timedelta(minutes=10)
        near = [
            a
            for a in alerts_by_node.get(lab.node_id, [])
            if lo <= a.event_time and a.opened_at <= hi
        ]
        delay = delays.get(lab.incident_id)
        detected = None if delay is None else lab.start + dt.timedelta(seconds=delay)
        path = tdir / f"{lab.incident_id}.png"
        rp.timeline(path, lab, inp.t[idx], inp.metrics[metric][idx], near, detected, thresholds)
        paths.append(str(path.relative_to(out)))
    return paths


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``report.json`` (without the plot-only forecast pairs) and ``report.md``."""
    out.mkdir(parents=True, exist_ok=True)
    for f in (report["forecast"].get("kinds") or {}).values():
        f.pop("pairs", None)
    jpath, mpath = out / "report.json", out / "report.md"
    jpath.write_text(json.dumps(report, indent=1, default=str) + "\n")
    mpath.write_text(render(report))
    return jpath, mpath


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the only place that reads ``os.environ``."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_args(args, os.environ)
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        if settings.log_level != "DEBUG":
            logging.getLogger("kafka").setLevel(logging.WARNING)
        inp = read_inputs(args, settings)
        report = build_report(inp, warmup_s=args.warmup_s, pre_s=args.pre_s, post_s=args.post_s)
        command = args.command or "python -m consumers.evaluate " + shlex.join(
            list(argv) if argv is not None else sys.argv[1:]
        )
        report = {
            "title": args.title,
            "generated_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            "command": command.strip(),
            **report,
        }
        out = Path(args.out)
        report["plots"] = {} if args.no_plots else write_plots(report, inp, out, args.max_timelines)
        jpath, mpath = write_report(report, out)
    except (DwcpError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    h = report["headline"]
    print(
        f"evaluate: wrote {jpath} and {mpath}; headline: {json.dumps(h) if h else 'no figures yet'}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
