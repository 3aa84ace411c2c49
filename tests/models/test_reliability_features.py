"""Per-node context features (:mod:`models.reliability.features`): rows that restore from old
checkpoints, and how a longer queue explains the link metrics it moves."""

from __future__ import annotations

import pickle

from models.reliability.features import FeatureRow

# A FeatureRow pickled by the code of 91ff857, when the raw-unit baselines were a field (pending
# ticks hold rows, so every reliability checkpoint of that time has some): made with
# FeatureRow("n", "p", None, True, {"rtt_ms": 1.0}, {"rtt_ms": 5.0}, {"rtt_ms": 4.0}, False, 0.0, True)
ROW_91FF857 = (
    b"\x80\x04\x95\x05\x01\x00\x00\x00\x00\x00\x00\x8c\x1bmodels.reliability.features\x94\x8c\n"
    b"FeatureRow\x94\x93\x94)\x81\x94N}\x94(\x8c\x07node_id\x94\x8c\x01n\x94\x8c\x07peer_id\x94"
    b"\x8c\x01p\x94\x8c\nevent_time\x94N\x8c\x08new_tick\x94\x88\x8c\x01z\x94}\x94\x8c\x06rtt_ms"
    b"\x94G?\xf0\x00\x00\x00\x00\x00\x00s\x8c\x06values\x94}\x94h\rG@\x14\x00\x00\x00\x00\x00\x00"
    b"s\x8c\tbaselines\x94}\x94h\rG@\x10\x00\x00\x00\x00\x00\x00s\x8c\x10peer_unreachable\x94\x89"
    b"\x8c\x05trend\x94G\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x04warm\x94\x88\x8c\x07generic\x94]"
    b"\x94\x8c\x02_x\x94}\x94\x8c\x07_counts\x94}\x94u\x86\x94b."
)


def test_a_row_pickled_when_baselines_were_a_field_restores_with_them() -> None:
    row = pickle.loads(ROW_91FF857)
    assert row.baselines == {"rtt_ms": 4.0}  # an alert's explanation reads them
    assert (row.node_id, row.peer_id) == ("n", "p")
    assert (row.z, row.values) == ({"rtt_ms": 1.0}, {"rtt_ms": 5.0})
    assert (row.peer_unreachable, row.trend, row.warm, row.generic) == (False, 0.0, True, [])


def test_a_row_survives_a_pickle_round_trip() -> None:
    row = FeatureRow("n", "p", None, True, {"rtt_ms": 1.5}, {"rtt_ms": 5.0}, trend=2.0,
                     _means={"rtt_ms": 1.0}, _offsets={"rtt_ms": 0.01})  # fmt: skip
    back = pickle.loads(pickle.dumps(row))
    assert back == row
    assert back.baselines == row.baselines
