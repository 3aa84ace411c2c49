"""How other label-free rules for combining the reliability detector's component scores would
rank ASD (a diagnostic for issue 12, not a result: every threshold here is chosen with the
labels, the optimistic "best F1").

    python bench/asd_combinations.py [--work DIR]

Runs our detector offline as ``bench/bench_asd.py`` does (``--learn-from`` the train split, score
the test split; reuses ``DIR/offline/scores.csv`` when it exists) and prints, for the
published score and for each rule over the calibrated component scores (each in [0, 1], 0.5 a
typical record): the mean, the max, the mean of the two largest, and Fisher's sum of
``-log(1 - p)`` (with and without the Half-Space Trees), the point-wise best F1. Fisher's sum is,
up to the caps on each surprise and the weights, the detector's own mean of surprises without
its max term (``--param max_weight=0``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_asd as asd  # noqa: E402

from models.evaluation.points import best_f1  # noqa: E402


def rules(parts: list[str], p: np.ndarray, score: np.ndarray) -> dict[str, np.ndarray]:
    """Combined scores by rule; ``p`` are the component scores ``(n, len(parts))``."""
    surprise = -np.log(np.clip(1.0 - p, 1e-4, 1.0))
    no_hst = [i for i, c in enumerate(parts) if c != "hst"]
    return {
        "published score": score,
        "mean": p.mean(axis=1),
        "max": p.max(axis=1),
        "mean of the two largest": np.sort(p, axis=1)[:, -2:].mean(axis=1),
        "Fisher": surprise.sum(axis=1),
        "Fisher without hst": surprise[:, no_hst].sum(axis=1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", help="folder for the splits and our scores (default: a temp dir)")
    args = ap.parse_args(argv)
    if args.work is None:
        with tempfile.TemporaryDirectory(prefix="asd-comb-") as tmp:
            return run(Path(tmp))
    Path(args.work).mkdir(parents=True, exist_ok=True)
    return run(Path(args.work))


def run(work: Path) -> int:
    frames, _labels = asd.load(Path(asd.DATA), None)
    scores_csv = work / "offline" / "scores.csv"
    if not scores_csv.exists():
        train, test = asd.write_splits(frames, work)
        asd.ours_offline(train, test, work, [])
    scores = pd.read_csv(scores_csv)
    scores = scores.assign(t=pd.to_datetime(scores["timestamp"], utc=True))
    parts = [c for c in asd.COMPONENTS if c in scores.columns]
    test = pd.concat([df[df["split"] == "test"] for df in frames.values()])
    merged = test.merge(scores[["node_id", "t", "score", *parts]], on=["node_id", "t"])
    y = merged["label"].to_numpy(int)
    p = np.nan_to_num(merged[parts].to_numpy(float), nan=0.5)
    for name, s in rules(parts, p, merged["score"].to_numpy(float)).items():
        print(f"{name:>26}: best F1 (labels) {best_f1(y, s)['f1']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
