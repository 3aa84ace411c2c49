"""Unit tests of the telemetry schema, validation, serde and the generated JSON Schema."""

from __future__ import annotations

import datetime as dt
import json
import random

import jsonschema
import msgspec
import numpy as np
import orjson
import pytest

from stream import jsonschema as js
from stream.records import (
    Alert,
    DeadLetter,
    FieldError,
    IncidentLabel,
    MetricDeviation,
    Prediction,
    decode,
    encode,
    round_floats,
)
from stream.schema import (
    FIELD_BY_NAME,
    FIELDS,
    LEGACY_COLUMNS,
    REQUIRED_FIELDS,
    decode_telemetry,
    telemetry_to_dict,
)
from stream.validation import explain, validate_telemetry

LEGACY = (
    "timestamp region az link_type node_id peer_id rtt_ms jitter_ms throughput_mbps bytes_tx bytes_rx "
    "packet_loss retransmits congestion_window queue_depth dwcp_mode network_tier transport_type "
    "hde_compression_ratio hde_delta_hit_rate amst_streams amst_transfer_rate error_budget_burn_rate "
    "uptime_pct failure_rate consensus_latency_ms"
).split()

T0 = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.UTC)


def good_record() -> dict:
    rec: dict = {}
    for f in FIELDS:
        if f.kind == "time":
            rec[f.name] = "2026-01-05T10:00:00Z"
        elif f.kind == "enum":
            rec[f.name] = f.choices[-1]
        elif f.kind == "str":
            rec[f.name] = f"{f.name}-1"
        elif f.kind == "int":
            rec[f.name] = int(f.min + min(10, f.max - f.min))
        else:
            rec[f.name] = (f.min + f.max) / 2
    return rec


def test_legacy_columns_are_all_present_under_their_names_and_in_order():
    assert list(LEGACY_COLUMNS) == LEGACY
    assert {"cpu_util", "mem_util", "disk_util"} <= set(FIELD_BY_NAME)


def test_every_field_has_unit_range_and_description():
    for f in FIELDS:
        assert f.description, f.name
        if f.numeric:
            assert f.unit and f.min is not None and f.max is not None and f.min < f.max, f.name
        if f.kind == "enum":
            assert f.choices, f.name
    assert REQUIRED_FIELDS == ("timestamp", "node_id")


def test_good_record_round_trips_through_orjson_and_msgspec():
    raw = orjson.dumps(good_record())
    rec, errors = validate_telemetry(raw)
    assert errors == []
    assert rec.timestamp == T0 and rec.timestamp.tzinfo is not None
    again = decode_telemetry(encode(rec))
    assert again == rec
    assert telemetry_to_dict(rec)["node_id"] == "node_id-1"


def test_non_utc_offsets_are_normalised_to_utc():
    rec = decode_telemetry(b'{"timestamp": "2026-01-05T12:00:00+02:00", "node_id": "n"}')
    assert rec.timestamp == T0 and rec.timestamp.utcoffset() == dt.timedelta(0)


def test_optional_fields_may_be_absent_and_unknown_fields_are_ignored():
    rec, errors = validate_telemetry(b'{"timestamp": "2026-01-05T10:00:00Z", "node_id": "n", "new_metric": 3}')
    assert errors == [] and rec.rtt_ms is None


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("rtt_ms", -1.0, "-1.0 is below the minimum 0 ms"),
        ("packet_loss", 1.5, "1.5 is above the maximum 1 fraction"),
        ("rtt_ms", "12", "expected a number, got str '12'"),
        ("rtt_ms", True, "expected a number, got bool true"),
        ("retransmits", 2.5, "expected an integer, got 2.5"),
        ("link_type", "lan", "'lan' is not one of dc, metro, wan, edge"),
        ("node_id", 7, "expected a string, got int 7"),
        ("node_id", "", "string length 0 is outside [1, 256]"),
        ("timestamp", "2026-01-05T10:00:00", "'2026-01-05T10:00:00' has no UTC offset (event times must be tz-aware UTC)"),
        ("timestamp", "yesterday", "'yesterday' is not an RFC 3339 timestamp"),
        ("timestamp", "1970-01-01T00:00:00Z", "'1970-01-01T00:00:00Z' is outside [2000, 2100)"),
    ],
)
def test_each_bad_field_gets_a_precise_reason(field, value, reason):
    rec = good_record()
    rec[field] = value
    got, errors = validate_telemetry(orjson.dumps(rec))
    assert got is None
    assert [(e.field, e.reason) for e in errors] == [(field, reason)]


def test_all_bad_fields_are_reported_not_only_the_first():
    rec = good_record()
    rec.update(rtt_ms=-3, jitter_ms="x", cpu_util=101)
    del rec["node_id"]
    _, errors = validate_telemetry(orjson.dumps(rec))
    assert {e.field for e in errors} == {"rtt_ms", "jitter_ms", "cpu_util", "node_id"}
    assert next(e for e in errors if e.field == "node_id").reason == "required field is missing or null"


@pytest.mark.parametrize(
    ("raw", "reason_start"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_record_level_problems(raw, reason_start):
    rec, errors = validate_telemetry(raw)
    assert rec is None and len(errors) == 1
    assert errors[0].field == "" and errors[0].reason.startswith(reason_start)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_named(literal):
    raw = orjson.dumps(good_record()).replace(b'"rtt_ms":30000.0', b'"rtt_ms":' + literal.encode())
    assert literal.encode() in raw
    _, errors = validate_telemetry(raw)
    assert [(e.field, e.reason) for e in errors] == [("rtt_ms", f"{literal} is not a finite number")]


def test_oversized_records_are_rejected_before_decoding():
    raw = orjson.dumps({**good_record(), "padding": "x" * 5000})
    rec, errors = validate_telemetry(raw, max_bytes=4096)
    assert rec is None and "over the limit of 4096" in errors[0].reason


def test_fast_and_slow_paths_agree_on_random_mutations():
    rng = random.Random(7)
    bad_values = [-1, 1e30, "s", None, True, 0.5, 3, [], {}, "2026-01-05T10:00:00Z", "wan"]
    for _ in range(400):
        rec = good_record()
        for name in rng.sample(list(FIELD_BY_NAME), k=rng.randint(1, 3)):
            rec[name] = rng.choice(bad_values)
        raw = orjson.dumps(rec)
        try:
            decode_telemetry(raw)
            fast_ok = True
        except msgspec.ValidationError:
            fast_ok = False
        assert fast_ok == (explain(raw) == []), rec


def test_generated_json_schema_is_in_sync_with_the_code():
    assert js.stale_files() == [], "run: python -m stream.jsonschema"


def test_json_schema_accepts_good_and_rejects_bad_like_our_validator():
    schema = js.build_schemas()["telemetry"]
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors(good_record())) == []
    for field, value in [("rtt_ms", -1), ("link_type", "lan"), ("node_id", 3), ("retransmits", 1.5)]:
        rec = good_record()
        rec[field] = value
        assert list(validator.iter_errors(json.loads(orjson.dumps(rec)))), field
        assert validate_telemetry(orjson.dumps(rec))[0] is None


def test_record_types_round_trip():
    label = IncidentLabel(incident_id="i", node_id="n", category="crash", severity="critical", start=T0, end=T0)
    alert = Alert(
        alert_id="a", incident_id="i", node_id="n", status="open", severity="high", score=0.9, threshold=0.7,
        event_time=T0, opened_at=T0, source="reliability", category="crash",
        top_metrics=[MetricDeviation(name="rtt_ms", value=90.0, baseline=10.0, zscore=8.0)],
        model_versions={"hst": "3"},
    )
    pred = Prediction(kind="bandwidth_forecast", node_id="n", peer_id="p", event_time=T0, model_version="1",
                      value=900.0, horizon=5, lower=800.0, upper=1000.0)
    dead = DeadLetter(reason="bad", errors=[FieldError(field="x", reason="y")], original=b"\x00\xffraw",
                      source_topic="t", partition=1, offset=2, consumer="g", failed_at=T0)
    for rec in (label, alert, pred, dead):
        assert decode(encode(rec), type(rec)) == rec
    with pytest.raises(msgspec.ValidationError):
        decode(encode(alert).replace(b'"score":0.9', b'"score":1.9'), Alert)


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e3, 1e6, 1e13, 1e17])
@pytest.mark.parametrize("ndigits", [0, 2, 3, 6])
def test_round_floats_is_pythons_round_to_the_bit(scale: float, ndigits: int) -> None:
    rng = np.random.default_rng(int(scale * 7) % 1000 + ndigits)
    x = rng.standard_normal(200_000) * scale
    x[::3] = np.round(x[::3], ndigits) + 0.5 * 10.0**-ndigits  # at and near halves
    x[1::7] = np.round(x[1::7], ndigits)
    x[:6] = [np.nan, np.inf, -np.inf, -0.0, 0.0, -1e-12]
    want = [round(v, ndigits) for v in x.tolist()]
    got = round_floats(x, ndigits)
    assert [repr(v) for v in got] == [repr(v) for v in want]  # repr: NaN and -0.0 too
