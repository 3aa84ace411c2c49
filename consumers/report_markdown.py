"""The pipeline report in Markdown, from the report dict of :mod:`consumers.report_build`.

Per-detector tables reuse :func:`models.evaluation.to_markdown`, so the same figures read the
same everywhere.
"""

from __future__ import annotations

from typing import Any

from consumers.report_build import PIPELINE
from models.evaluation import Evaluation, to_markdown
from stream.records import CATEGORIES, SEVERITIES


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _num(v: Any, fmt: str = "{:,.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def render(report: dict[str, Any]) -> str:
    """Markdown of the whole report (plots linked relative to the report's folder)."""
    inp, st = report["inputs"], report["settings"]
    plots = report.get("plots", {})
    lines = [
        f"# {report.get('title', 'Pipeline evaluation')}",
        "",
        f"Generated {report.get('generated_at', '?')} by `{report.get('command', 'python -m consumers.evaluate')}`.",
        "",
        f"Inputs ({inp['source']}): {inp['telemetry']:,} telemetry records from {inp['nodes']} nodes, "
        f"event time {inp['event_time']['first']} .. {inp['event_time']['last']}; "
        f"{inp['labels']} labelled incidents; {inp['alerts']:,} alerts "
        f"(sources: {', '.join(inp['alert_sources']) or 'none'}); predictions: "
        + (", ".join(f"{k} {v:,}" for k, v in inp["predictions"].items()) or "none")
        + "; dead letters: "
        + (", ".join(f"{k} {v:,}" for k, v in inp["dead_letters"].items()) or "none")
        + ".",
        "",
        f"Scoring: incidents starting in the first {st['warmup_s']:g} s of event time (warm-up, "
        f"until {st['warmup_until']}) are left out; an alert incident detects a label on the "
        f"same node if it overlaps the label's window widened by {st['pre_s']:g} s before and "
        f"{st['post_s']:g} s after. False-positive rate: {st['fpr_definition']}.",
        "",
        "## Headline",
        "",
    ]
    lines += _headline(report["headline"])
    lines += ["", "## Incident detection", ""]
    det = report["detection"]
    if not det.get("available"):
        lines.append(f"_{det['reason']}_")
    else:
        for name in [PIPELINE] + [k for k in det if k not in (PIPELINE, "available")]:
            d = det[name]
            title = "All detectors together (pipeline)" if name == PIPELINE else f"Detector: {name}"
            ev = Evaluation(
                d["overall"], d["categories"], d["severities"], d["config"], d["missed"]
            )
            md = to_markdown(ev, title).replace("\n## ", "\n### ")
            lines += [md.replace(f"## {title}", f"### {title}", 1).rstrip(), ""]
            if d.get("model_versions"):
                lines += [f"Model versions: {', '.join(d['model_versions'])}.", ""]
            lines += _matrix(d["matrix"])
            for key in (f"recall_{name}", f"delays_{name}"):
                if key in plots:
                    lines += ["", f"![{key}]({plots[key]})"]
            lines.append("")
        if plots.get("timelines"):
            lines += [
                f"Incident timelines (metric, scores, thresholds, alerts): `{plots['timelines_dir']}/` "
                f"({len(plots['timelines'])} PNGs), e.g.",
                "",
            ]
            lines += [f"![timeline]({p})" for p in plots["timelines"][:3]]
    lines += ["", "## Forecasting", ""]
    lines += _forecast(report["forecast"], plots)
    lines += ["", "## Compression policy", ""]
    comp = report["compression"]
    if not comp.get("available"):
        lines.append(f"_{comp['reason']}_")
    else:
        lines += _compression(comp)
    return "\n".join(lines).rstrip() + "\n"


def _versions(v: list[str], most: int = 3) -> str:
    if len(v) <= most:
        return ", ".join(v)
    return f"{len(v)} model versions: {', '.join(v[:2])}, ..., {v[-1]}"


def _headline(h: dict[str, Any]) -> list[str]:
    if not h:
        return ["_No figures yet: no detector or forecaster output was found._"]
    out = []
    if "recall" in h:
        out.append(
            f"- Incidents: recall {_pct(h['recall'])} ({h['detected']}/{h['incidents']}), "
            f"precision {_pct(h['precision'])}, false-positive rate {_pct(h['fpr'])}, "
            f"detection delay median {_num(h['delay_median_s'], '{:g}')} s / p90 "
            f"{_num(h['delay_p90_s'], '{:g}')} s."
        )
    for k, v in h.items():
        if isinstance(v, dict) and "mae" in v:
            out.append(
                f"- {k}: MAE {_num(v['mae'])} (persistence {_num(v['mae_persistence'])}, EWMA "
                f"{_num(v['mae_ewma'])}), MAPE {_pct(v['mape'])}, skill {_pct(v['skill'])}, "
                f"interval coverage {_pct(v['coverage'])}, n={v['n']:,}."
            )
    if "compression_regret_mean" in h:
        out.append(f"- Compression: mean regret {_pct(h['compression_regret_mean'])}.")
    return out


def _matrix(m: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    out = ["Recall per category x severity (detected/incidents):", ""]
    out.append("| category | " + " | ".join(SEVERITIES) + " |")
    out.append("|---|" + "---:|" * len(SEVERITIES))
    for c in CATEGORIES:
        cells = [
            "–"
            if m[c][s]["recall"] is None
            else f"{_pct(m[c][s]['recall'])} ({m[c][s]['detected']}/{m[c][s]['incidents']})"
            for s in SEVERITIES
        ]
        out.append(f"| {c} | " + " | ".join(cells) + " |")
    return out


def _forecast(fc: dict[str, Any], plots: dict[str, Any]) -> list[str]:
    if not fc.get("available"):
        return [f"_{fc['reason']}_"]
    out: list[str] = []
    for kind, f in fc["kinds"].items():
        out += [f"### {kind}", ""]
        if not f.get("available"):
            out += [f"_{f['reason']}_", ""]
            continue
        out.append(
            f"{f['forecasts']:,} forecasts of `{f['target']}` for {f['links']} links "
            f"({_versions(f['model_versions'])}; first at {f['first_forecast']}); {f['scored']:,} "
            f"matched with the actual value, {f['unmatched']:,} not (end of data or a gap). "
            f"Baselines on the same targets: persistence (last value) and EWMA (alpha "
            f"{f['ewma_alpha']}); MAPE with a floor of {f['mape_floor']} in the denominator."
        )
        out += [
            "",
            "| horizon (steps) | n | MAE | MAE persistence | MAE EWMA | MAPE | MAPE persistence | MAPE EWMA | skill | interval coverage |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for h, r in f["horizons"].items():
            out.append(
                f"| {h} | {r['n']:,} | {_num(r['mae'])} | {_num(r['mae_persistence'])} | "
                f"{_num(r['mae_ewma'])} | {_pct(r['mape'])} | {_pct(r['mape_persistence'])} | "
                f"{_pct(r['mape_ewma'])} | {_pct(r['skill'])} | {_pct(r['coverage'])} |"
            )
        key = f"forecast_{kind}"
        if key in plots:
            out += ["", f"![{key}]({plots[key]})"]
        out.append("")
    return out


def _compression(c: dict[str, Any]) -> list[str]:
    out = [
        f"{c['recommendations']:,} codec recommendations for {c['links']} links "
        f"({_versions(c['model_versions'])}). Chosen: "
        + ", ".join(f"{k} {v:,}" for k, v in c["chosen"].items())
        + ". Expected transfer-time gain (the policy's own transfer-time model, not measured): "
        f"{_pct(c['expected_gain_vs_best_fixed_mean'])} over the best single fixed codec, "
        f"{_pct(c['expected_gain_vs_none_mean'])} over no compression (means over recommendations).",
        "",
    ]
    if c.get("regret_mean") is None:
        out.append(f"Regret: _{c.get('regret_reason', 'not available')}_")
    else:
        out.append(
            f"Regret (time / best time - 1) over {c['with_regret']:,} recommendations: mean "
            f"{_pct(c['regret_mean'])}, p90 {_pct(c['regret_p90'])}, max {_pct(c['regret_max'])}; "
            f"the best codec was chosen {_pct(c['optimal_share'])} of the time."
        )
    return out
