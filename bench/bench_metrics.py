"""What the metrics and the key check cost the loop per record (not a test; no broker needed).

Decodes one 5,000-record batch of ~665-byte telemetry with :meth:`stream.loop.BatchLoop._decode`
without and with ``key_field="node_id"`` (the Kafka key must name the record's node), and times
the per-batch metrics update (:meth:`BatchLoop._count`) on the decoded batch. Medians of
``--repeat`` runs, in one process; prints ns per record and the ratios.

    python bench/bench_metrics.py [--repeat 9]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script without an install
from bench.bench_clients import make_records  # noqa: E402
from stream.kafka import Message  # noqa: E402
from stream.loop import BatchLoop  # noqa: E402
from stream.metrics import Metrics  # noqa: E402


class _NoConsumer:
    def assignment(self) -> set[tuple[str, int]]:
        return set()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=9)
    a = ap.parse_args(argv)
    n = 5000
    msgs = [Message("t", i % 6, i, k, v, 0) for i, (k, v) in enumerate(make_records(n))]
    plain = BatchLoop(_NoConsumer(), None, dead_letter_topic="dl", group_id="g")  # type: ignore[arg-type]
    keyed = BatchLoop(_NoConsumer(), None, dead_letter_topic="dl", group_id="g",  # type: ignore[arg-type]
                      key_field="node_id", metrics=Metrics())  # fmt: skip
    decoded = keyed._decode(msgs)
    good = [(m, r) for m, r, e in decoded if not e]
    assert len(good) == n, "every record should be valid and keyed by its node"

    def med(f: object) -> float:
        return statistics.median(timeit.repeat(f, number=1, repeat=a.repeat))  # type: ignore[arg-type]

    t_plain, t_keyed = med(lambda: plain._decode(msgs)), med(lambda: keyed._decode(msgs))
    t_count = med(lambda: keyed._count(decoded, good, [], [], 0.01, 0.02))
    ns = 1e9 / n
    print(f"decode + validate: {t_plain * ns:,.0f} ns/record; with the key check "
          f"{t_keyed * ns:,.0f} ns/record ({t_keyed / t_plain:.3f}x)")  # fmt: skip
    print(f"metrics per batch of {n:,d}: {t_count * 1e6:,.0f} us ({t_count * ns:.1f} ns/record, "
          f"{t_count / t_plain:.4f}x of decoding)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
