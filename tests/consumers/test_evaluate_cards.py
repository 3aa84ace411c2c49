"""Model cards are filled from the report JSON: the same figures, date and command."""

from __future__ import annotations

import json
from pathlib import Path

from consumers.evaluate import main as evaluate_main
from consumers.report_cards import BEGIN, END, main

from .test_evaluate import ALERTS, LABELS, forecasts, telemetry, write_jsonl


def make_report(tmp_path: Path) -> Path:
    args = ["--warmup-s", "0", "--no-plots", "--out", str(tmp_path / "rep")]
    args += ["--command", "bash scripts/evaluate.sh"]
    args += ["--labels", write_jsonl(tmp_path / "l.jsonl", LABELS)]
    args += [
        "--alerts",
        write_jsonl(tmp_path / "a.jsonl", [a for a in ALERTS if a.source == "rel"]),
    ]
    args += ["--telemetry", write_jsonl(tmp_path / "t.jsonl", telemetry())]
    args += ["--predictions", write_jsonl(tmp_path / "p.jsonl", forecasts())]
    assert evaluate_main(args) == 0
    return tmp_path / "rep" / "report.json"


def test_cards_carry_the_report_figures(tmp_path: Path):
    report_path = make_report(tmp_path)
    report = json.loads(report_path.read_text())
    report["detection"]["reliability"] = report["detection"].pop("rel")  # as the real source
    report_path.write_text(json.dumps(report))
    cards = tmp_path / "cards"
    cards.mkdir()
    manual = cards / "bandwidth.md"
    manual.write_text(f"# Hand-made\n\nIntro.\n\n{BEGIN}\nold figures\n{END}\n\nOutro.\n")
    assert main(["--report", str(report_path), "--out", str(cards)]) == 0

    rel = (cards / "reliability.generated.md").read_text()
    assert f"Measured {report['generated_at']} with `bash scripts/evaluate.sh`" in rel
    assert "Recall 50.0% (2/4 incidents), precision 66.7% of 3 alert incidents" in rel
    assert "| crash | 1 | 100.0% | 30.0 |" in rel
    assert "Measured limits: recall below 50% on network_failure/medium (0/1)" in rel
    cons = (cards / "consensus.generated.md").read_text()
    assert "_Not available yet: no alerts from consensus-ae._" in cons
    bw = (cards / "bandwidth.generated.md").read_text()
    assert "| 1 | 4 | 10.00 | 25.00 | 54.75 | 6.2% | 60.0% | 75.0% |" in bw
    comp = (cards / "compression.generated.md").read_text()
    assert "not available yet: no compression recommendations" in comp
    text = manual.read_text()
    assert text.startswith("# Hand-made\n\nIntro.\n\n" + BEGIN) and text.endswith(
        END + "\n\nOutro.\n"
    )
    assert "old figures" not in text and "| 1 | 4 | 10.00 | 25.00 |" in text
