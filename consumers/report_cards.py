"""``python -m consumers.report_cards``: model cards filled from the pipeline report's JSON.

One card per model, ``docs/model-cards/<consumer>.generated.md`` (reliability, consensus,
bandwidth, compression): what the model reads, how it is
trained and retrained (short, with the module to read for details), and its evaluation
figures copied from ``report.json`` of :mod:`consumers.evaluate` together with the report's
date and command, plus the limits those figures show (categories it misses, horizons where it
does not beat a baseline). So a card can never disagree with the measured numbers: rerun
``bash scripts/evaluate.sh`` and the cards are rewritten.

Hand-written cards (``docs/model-cards/<consumer>.md``) are never overwritten; if one holds the
markers ``<!-- BEGIN GENERATED EVALUATION -->`` and ``<!-- END GENERATED EVALUATION -->``, the
text between them is replaced by the generated evaluation section.

    python -m consumers.report_cards --report reports/pipeline/report.json --out docs/model-cards
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BEGIN = "<!-- BEGIN GENERATED EVALUATION -->"
END = "<!-- END GENERATED EVALUATION -->"


@dataclass(frozen=True)
class Card:
    """The static part of a card; ``kind`` says where its figures are in the report."""

    name: str
    title: str
    kind: str  # "detector" (alerts source), "forecast" (prediction kind) or "compression"
    key: str  # alert source / prediction kind
    code: str
    inputs: str
    training: str
    retraining: str
    limits: str
    categories: tuple[str, ...] = ()  # what it is meant to detect (empty = every category)


CARDS = (
    Card(
        "reliability",
        "Reliability detector (Half-Space Trees + IsolationForest)",
        "detector",
        "reliability",
        "`models/reliability/`, `consumers/reliability.py`",
        "Every telemetry record (node and link metrics), as z-scores against the node's and "
        "the link's own recent baselines; missed heartbeats and unreachable-peer reports.",
        "Online from the first record: river Half-Space Trees learn one record at a time, the "
        "IsolationForest is refit in the background on recent unflagged records; scores are "
        "calibrated to quantiles among recent normal records. Flagged records are not learned.",
        "Continuous (every record) for the trees and calibrators; periodic forest refits.",
        "Needs a warm-up of normal data per node; alerts are per node, not per link.",
    ),
    Card(
        "consensus",
        "Consensus-latency LSTM autoencoder",
        "detector",
        "consensus-ae",
        "`models/autoencoder/`, `consumers/consensus.py`",
        "Per node and interval: consensus latency, CPU and the fastest link RTT, in windows.",
        "Fitted on the first unflagged windows of the stream (warm-up), then retrained in the "
        "background on unflagged windows and swapped in with a new version.",
        "Scheduled retrains every N records, on unflagged windows only.",
        "Raises only consensus_degradation alerts: its recall on other categories is 0 by design.",
        ("consensus_degradation",),
    ),
    Card(
        "bandwidth",
        "Bandwidth LSTM forecaster",
        "forecast",
        "bandwidth_forecast",
        "`models/forecast/`, `consumers/bandwidth.py`",
        "Per link (node_id, peer_id): windows of throughput, RTT, jitter and loss.",
        "First fit once enough windows are buffered (warm-up), on the stream itself; forecasts "
        "1, 5 and 15 intervals ahead with a prediction interval from residual quantiles.",
        "Micro-batch retrains in a worker process every N records, or earlier when ADWIN "
        "sees the forecast error rise (drift).",
        "No forecasts before the warm-up fit; a gap in a link's samples breaks its window.",
    ),
    Card(
        "compression",
        "Compression policy network",
        "compression",
        "compression_choice",
        "`models/compression/`, `consumers/compression.py`",
        "Per link record: the link's state (throughput, RTT, loss, compression ratio, ...).",
        "Bootstrapped on simulated fleet states labelled by the transfer-time model built on "
        "the measured codec table, then micro-batch updates on the stream.",
        "A few gradient steps every N usable records, mixed with a replay sample.",
        "Gains are the transfer-time model's expectations, not measured transfers.",
    ),
)


def _versions(v: list[str]) -> str:
    if len(v) <= 3:
        return "model versions " + ", ".join(v)
    return f"{len(v)} model versions, {v[0]} .. {v[-1]}"


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _num(v: Any) -> str:
    return "–" if v is None else f"{v:,.2f}"


def evaluation_section(card: Card, report: dict[str, Any]) -> str:
    """The generated evaluation text of ``card`` (figures, date, command, measured limits)."""
    head = [
        f"Measured {report.get('generated_at', '?')} with `{report.get('command', '?')}` "
        f"(report: `reports/pipeline/report.md`; inputs: {report['inputs']['telemetry']:,} "
        f"telemetry records, {report['inputs']['labels']} labelled incidents).",
        "",
    ]
    if card.kind == "detector":
        return "\n".join(head + _detector(card, report))
    if card.kind == "forecast":
        return "\n".join(head + _forecast(card, report))
    return "\n".join(head + _compression(report))


def _detector(card: Card, report: dict[str, Any]) -> list[str]:
    det = report["detection"]
    if not det.get("available") or card.key not in det:
        why = det.get("reason") if not det.get("available") else f"no alerts from {card.key}"
        return [f"_Not available yet: {why}._"]
    d = det[card.key]
    o = d["overall"]
    lines = [
        f"- Recall {_pct(o['recall'])} ({o['detected']}/{o['incidents']} incidents), precision "
        f"{_pct(o.get('precision'))} of {o.get('alert_incidents', 0)} alert incidents, "
        f"false-positive rate {_pct(o.get('fpr'))} of normal records (node under an open alert).",
        f"- Detection delay: median {o['delay_median_s']} s, p90 {o['delay_p90_s']} s, max "
        f"{o['delay_max_s']} s (event time, label start -> alert).",
    ]
    if d.get("model_versions"):
        lines.append(f"- Model versions: {', '.join(d['model_versions'])}.")
    lines += ["", "| category | incidents | recall | median delay s |", "|---|---:|---:|---:|"]
    for c, r in d["categories"].items():
        lines.append(
            f"| {c} | {r['incidents']} | {_pct(r['recall'])} | {r['delay_median_s'] or '–'} |"
        )
    lines += ["", "| severity | incidents | recall |", "|---|---:|---:|"]
    for s, r in d["severities"].items():
        lines.append(f"| {s} | {r['incidents']} | {_pct(r['recall'])} |")
    weak = [
        f"{c}/{s} ({cell['detected']}/{cell['incidents']})"
        for c, row in d["matrix"].items()
        for s, cell in row.items()
        if cell["recall"] is not None
        and cell["recall"] < 0.5
        and (not card.categories or c in card.categories)
    ]
    if weak:
        lines += ["", "Measured limits: recall below 50% on " + ", ".join(weak) + "."]
    return lines


def _forecast(card: Card, report: dict[str, Any]) -> list[str]:
    fc = report["forecast"]
    f = (fc.get("kinds") or {}).get(card.key)
    if not f or not f.get("available"):
        why = (f or {}).get("reason") or fc.get("reason") or f"no {card.key} predictions"
        return [f"_Not available yet: {why}._"]
    lines = [
        f"- {f['scored']:,} forecasts of `{f['target']}` on {f['links']} links scored against "
        f"the actual value; {_versions(f['model_versions'])}.",
        "",
        "| horizon | n | MAE | MAE persistence | MAE EWMA | MAPE | skill | coverage |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    worse = []
    for h, r in f["horizons"].items():
        lines.append(
            f"| {h} | {r['n']:,} | {_num(r['mae'])} | {_num(r['mae_persistence'])} | "
            f"{_num(r['mae_ewma'])} | {_pct(r['mape'])} | {_pct(r['skill'])} | {_pct(r['coverage'])} |"
        )
        if r.get("skill") is not None and r["skill"] <= 0:
            worse.append(h)
    if worse:
        lines += [
            "",
            f"Measured limits: no better than the best baseline at horizon(s) {', '.join(worse)}.",
        ]
    return lines


def _compression(report: dict[str, Any]) -> list[str]:
    c = report["compression"]
    if not c.get("available"):
        return [f"_{c['reason']}._"]
    lines = [
        f"- {c['recommendations']:,} recommendations for {c['links']} links "
        f"({_versions(c['model_versions'])}); chosen: "
        + ", ".join(f"{k} {v:,}" for k, v in c["chosen"].items())
        + ".",
        f"- Expected gain over the best fixed codec {_pct(c['expected_gain_vs_best_fixed_mean'])}, "
        f"over no compression {_pct(c['expected_gain_vs_none_mean'])} (the policy's own model).",
    ]
    if c.get("regret_mean") is None:
        lines.append(f"- Regret: {c.get('regret_reason', 'not available')}.")
    else:
        lines.append(
            f"- Regret mean {_pct(c['regret_mean'])}, p90 {_pct(c['regret_p90'])}, max "
            f"{_pct(c['regret_max'])}; best codec chosen {_pct(c['optimal_share'])} of the time."
        )
    return lines


def render_card(card: Card, report: dict[str, Any]) -> str:
    """The whole generated card."""
    return "\n".join(
        [
            f"# Model card: {card.title}",
            "",
            "<!-- Generated by python -m consumers.report_cards from the pipeline report; "
            "do not edit: rerun bash scripts/evaluate.sh. -->",
            "",
            f"Code: {card.code}.",
            "",
            "## Inputs",
            "",
            card.inputs,
            "",
            "## Training regime",
            "",
            card.training,
            "",
            "## Retraining triggers",
            "",
            card.retraining,
            "",
            "## Evaluation",
            "",
            evaluation_section(card, report),
            "",
            "## Known limits",
            "",
            card.limits,
            "",
        ]
    )


def write_cards(report: dict[str, Any], out: Path) -> list[Path]:
    """Write every ``<model>.generated.md``; fill marked sections of hand-written cards."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for card in CARDS:
        path = out / f"{card.name}.generated.md"
        path.write_text(render_card(card, report))
        written.append(path)
        manual = out / f"{card.name}.md"
        if manual.is_file():
            text = manual.read_text()
            if BEGIN in text and END in text:
                section = f"{BEGIN}\n{evaluation_section(card, report)}\n{END}"
                head, rest = text.split(BEGIN, 1)
                new = head + section + rest.split(END, 1)[1]
                if new != text:
                    manual.write_text(new)
                    written.append(manual)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(
        prog="python -m consumers.report_cards", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--report", default="reports/pipeline/report.json", help="report JSON of consumers.evaluate"
    )
    p.add_argument("--out", default="docs/model-cards", help="folder of the cards")
    args = p.parse_args(argv)
    try:
        report = json.loads(Path(args.report).read_text())
        paths = write_cards(report, Path(args.out))
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"model cards: wrote {', '.join(str(x) for x in paths)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
