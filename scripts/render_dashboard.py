"""Render the Grafana dashboard's panels to a PNG from a running Prometheus.

Every panel of ``deploy/grafana/dashboards/dwcp.json`` is queried with its own PromQL
expression over the last ``--minutes`` (Prometheus's ``/api/v1/query_range``) and drawn with
matplotlib in the dashboard's grid order, legends from the panel's ``legendFormat``. Grafana is
not needed (nor installable here without Docker): the picture shows exactly what the
dashboard's queries return. ``scripts/demo.sh`` runs it with ``DEMO_METRICS=1``.

    python scripts/render_dashboard.py --prometheus http://127.0.0.1:9090 --minutes 2 \\
        --out docs/dashboard.png
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "dwcp.json"
SCALE = {"bytes": (1 / 2**20, "MiB"), "s": (1.0, "s"), "ops": (1.0, "/s")}


def query_range(base: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{q}", timeout=30) as r:
        doc = json.loads(r.read())
    if doc.get("status") != "success":
        raise RuntimeError(f"prometheus refused {expr!r}: {doc}")
    return list(doc["data"]["result"])


def legend(fmt: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip() or "value"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus base URL")
    p.add_argument("--minutes", type=float, default=5.0, help="time range to draw (default 5)")
    p.add_argument("--out", default="dashboard.png", help="PNG to write")
    p.add_argument("--dashboard", default=str(DASHBOARD), help="dashboard JSON")
    args = p.parse_args(argv)
    doc = json.loads(Path(args.dashboard).read_text())
    panels = sorted(doc["panels"], key=lambda x: (x["gridPos"]["y"], x["gridPos"]["x"]))
    end = time.time()
    start = end - 60 * args.minutes
    step = max(1.0, (end - start) / 300)
    cols = 3
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.2 * rows), squeeze=False)
    empty = []
    for ax, panel in zip(axes.flat, panels, strict=False):
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        factor, suffix = SCALE.get(unit, (1.0, ""))
        drawn = 0
        for target in panel["targets"]:
            for series in query_range(args.prometheus, target["expr"], start, end, step):
                pts = [(float(t) - end, float(v)) for t, v in series["values"] if v not in ("NaN", "+Inf")]
                if not pts:
                    continue
                xs, ys = zip(*pts, strict=True)
                ax.plot(
                    [x / 60 for x in xs], [y * factor for y in ys],
                    label=legend(target.get("legendFormat", ""), series["metric"]),
                )  # fmt: skip
                drawn += 1
        ax.set_title(panel["title"] + (f" [{suffix}]" if suffix else ""), fontsize=10)
        ax.set_xlabel("minutes before now", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7, loc="best")
        else:
            empty.append(panel["title"])
            ax.text(0.5, 0.5, "no data in this range", ha="center", va="center",
                    transform=ax.transAxes, color="grey")  # fmt: skip
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{doc['title']} (rendered from Prometheus, last {args.minutes:g} min)")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"render_dashboard: wrote {args.out} ({len(panels)} panels"
          + (f"; no data: {', '.join(empty)}" if empty else "") + ")", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
