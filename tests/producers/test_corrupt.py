"""Deliberately malformed records: seeded, keyed, and every one rejected by validation."""

from __future__ import annotations

from producers.corrupt import CorruptingSink
from stream.validation import validate_telemetry

GOOD = b'{"timestamp":"2026-01-05T00:00:00Z","node_id":"n-001","rtt_ms":1.5}'


class ListSink:
    def __init__(self):
        self.keys, self.values = [], []

    def labels(self, labels):
        pass

    def telemetry(self, keys, values):
        self.keys += keys
        self.values += values

    def flush(self):
        pass

    def close(self):
        pass


def run(rate, seed, n=2000):
    inner = ListSink()
    sink = CorruptingSink(inner, rate, seed)
    sink.telemetry([b"n-001"] * n, [GOOD] * n)
    return sink, inner


def test_a_seeded_fraction_is_corrupted_and_all_of_it_is_rejected():
    sink, inner = run(0.1, seed=3)
    bad = [v for v in inner.values if v != GOOD]
    assert len(bad) == sink.corrupted and 150 < len(bad) < 250
    assert all(validate_telemetry(v)[0] is None for v in bad)
    assert inner.keys == [b"n-001"] * 2000
    assert run(0.1, seed=3)[1].values == inner.values
    assert run(0.1, seed=4)[1].values != inner.values
    assert run(0.0, seed=3)[1].values == [GOOD] * 2000
