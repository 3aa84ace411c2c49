"""The ``extra`` map of further numeric metrics: fast path, slow path and JSON Schema agree."""

from __future__ import annotations

import json
import random

import jsonschema
import msgspec
import orjson
import pytest

from stream import jsonschema as js
from stream.schema import (
    EXTRA_MAX,
    FIELD_BY_NAME,
    decode_telemetry,
    extra_counter,
    telemetry_to_dict,
)
from stream.validation import explain, validate_telemetry

BASE = {"timestamp": "2026-01-05T10:00:00Z", "node_id": "n-001"}


def raw(extra: object) -> bytes:
    return orjson.dumps({**BASE, "extra": extra})


def reasons(data: bytes) -> list[tuple[str, str]]:
    rec, errors = validate_telemetry(data)
    assert rec is None
    return [(e.field, e.reason) for e in errors]


def test_records_without_extra_are_unchanged():
    rec = decode_telemetry(orjson.dumps({**BASE, "rtt_ms": 3.0}))
    assert rec.extra is None
    assert "extra" not in telemetry_to_dict(rec)
    assert b"extra" not in msgspec.json.encode(rec)


def test_good_extra_values_decode_as_floats():
    rec, errors = validate_telemetry(
        raw({"m01": 0, "m02": -3.5, "a.b_c9": 1e300, "z" * 64: 7, "x_total": 12})
    )
    assert errors == []
    assert rec.extra == {"m01": 0.0, "m02": -3.5, "a.b_c9": 1e300, "z" * 64: 7.0, "x_total": 12.0}
    assert msgspec.json.decode(msgspec.json.encode(rec))["extra"]["m02"] == -3.5
    assert extra_counter("x_total") == "cumulative" and extra_counter("m01") == ""


def test_an_empty_extra_map_is_valid():
    assert validate_telemetry(raw({}))[1] == []


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"CPU": 1}, [("extra.CPU", "name 'CPU' does not match ^[a-z][a-z0-9_.]{0,63}$")]),
        ({"1m": 1}, [("extra.1m", "name '1m' does not match ^[a-z][a-z0-9_.]{0,63}$")]),
        (
            {"a" * 65: 1},
            [("extra." + "a" * 65, f"name '{'a' * 65}' does not match ^[a-z][a-z0-9_.]{{0,63}}$")],
        ),
        ({"": 1}, [("extra.", "name '' does not match ^[a-z][a-z0-9_.]{0,63}$")]),
        (
            {"rtt_ms": 1},
            [("extra.rtt_ms", "name 'rtt_ms' is a schema field: send it as a top-level field")],
        ),
        (
            {"node_id": 1},
            [("extra.node_id", "name 'node_id' is a schema field: send it as a top-level field")],
        ),
        (
            {"extra": 1},
            [("extra.extra", "name 'extra' is a schema field: send it as a top-level field")],
        ),
        ({"m": True}, [("extra.m", "expected a number, got bool true")]),
        ({"m": "1.5"}, [("extra.m", "expected a number, got str '1.5'")]),
        ({"m": None}, [("extra.m", "expected a number, got NoneType null")]),
        ({"m": [1]}, [("extra.m", "expected a number, got list [1]")]),
        ([1, 2], [("extra", "expected an object of name -> number, got list")]),
        ("m=1", [("extra", "expected an object of name -> number, got str")]),
    ],
)
def test_bad_extra_maps_get_precise_reasons(extra, expected):
    assert reasons(raw(extra)) == expected


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
def test_non_finite_extra_values_are_named(literal):
    data = raw({"m01": 1.0, "m02": 2.0}).replace(b'"m02":2.0', b'"m02":' + literal.encode())
    text = "NaN" if literal == "NaN" else ("-Infinity" if literal.startswith("-") else "Infinity")
    assert reasons(data) == [("extra.m02", f"{text} is not a finite number")]


def test_a_huge_integer_is_out_of_range():
    data = raw({"m": 1}).replace(b'"m":1', b'"m":' + b"9" * 400)
    [(field, reason)] = reasons(data)
    assert field == "extra.m" and reason.endswith("is out of the range of a double")


def test_too_many_extra_metrics():
    extra = {f"m{i:03d}": float(i) for i in range(EXTRA_MAX + 1)}
    assert reasons(raw(extra)) == [("extra", f"{EXTRA_MAX + 1} metrics, more than {EXTRA_MAX}")]
    del extra["m000"]
    assert validate_telemetry(raw(extra))[1] == []


def test_every_bad_name_and_value_is_listed_with_other_bad_fields():
    data = orjson.dumps({**BASE, "rtt_ms": -1, "extra": {"ok": 1, "Bad": 1, "v": "x"}})
    assert [f for f, _ in reasons(data)] == ["rtt_ms", "extra.Bad", "extra.v"]


def test_fast_and_slow_paths_agree_on_random_extra_maps():
    rng = random.Random(11)
    names = ["m01", "Bad", "rtt_ms", "a.b", "x" * 70, "", "_x", "ok_total", "n"]
    values = [0, -1.5, 1e300, True, "s", None, [], {}, 3]
    for _ in range(500):
        extra = {rng.choice(names): rng.choice(values) for _ in range(rng.randint(0, 4))}
        if rng.random() < 0.05:
            extra = {f"m{i}": 1.0 for i in range(EXTRA_MAX + rng.randint(0, 2))}
        data = raw(extra)
        try:
            decode_telemetry(data)
            fast_ok = True
        except msgspec.ValidationError:
            fast_ok = False
        assert fast_ok == (explain(data) == []), extra


def test_generated_schema_describes_extra():
    prop = js.build_schemas()["telemetry"]["properties"]["extra"]["anyOf"][0]
    assert prop["maxProperties"] == EXTRA_MAX
    assert prop["propertyNames"]["pattern"] == "^[a-z][a-z0-9_.]{0,63}$"
    assert set(FIELD_BY_NAME) <= set(prop["propertyNames"]["not"]["enum"])
    assert js.stale_files() == [], "run: python -m stream.jsonschema"


@pytest.mark.parametrize(
    "extra",
    [
        {"m01": 0.5},
        {},
        {"CPU": 1},
        {"rtt_ms": 1},
        {"m": True},
        {"m": "1"},
        {f"m{i}": 1 for i in range(EXTRA_MAX + 1)},
        [1],
        {"a" * 64: -2},
        {"a" * 65: -2},
    ],
)
def test_json_schema_agrees_with_our_validator_on_extra(extra):
    validator = jsonschema.Draft202012Validator(js.build_schemas()["telemetry"])
    data = raw(extra)
    schema_ok = not list(validator.iter_errors(json.loads(data)))
    ours_ok = validate_telemetry(data)[0] is not None
    assert schema_ok == ours_ok, extra
