"""Evaluation of detections against ground truth (pure; no Kafka, no files).

* :mod:`~models.evaluation.incidents`: any detector's alerts and per-record flags against
  incident labels: recall per category and severity, delays, alert precision, FPR.
* :mod:`~models.evaluation.windows`: a window scorer's flags (the consensus autoencoder)
  against labels: recall of incidents and windows, FPR of normal windows.

The pipeline report (``consumers.evaluate``) reads the topics and builds on these.
"""

from __future__ import annotations

from models.evaluation.incidents import Evaluation, RecordFlag, evaluate, to_markdown
from models.evaluation.windows import evaluate_windows

__all__ = ["Evaluation", "RecordFlag", "evaluate", "evaluate_windows", "to_markdown"]
