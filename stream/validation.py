"""Per-field validation of telemetry: every reason a record is bad, not only the first.

:func:`validate_telemetry` is the one entry point. Good records take the fast path
(``msgspec`` decodes and validates in C); a rejected record is re-read leniently (the standard
library's JSON reader also accepts ``NaN`` and ``Infinity``, so those get a precise reason
instead of a parse error) and every field is checked against :data:`stream.schema.FIELDS`.

Examples
--------
>>> rec, errs = validate_telemetry(b'{"timestamp": "2026-01-05T10:00:00Z", "node_id": "n1", '
...                                b'"rtt_ms": -4, "packet_loss": NaN, "link_type": "lan"}')
>>> rec is None
True
>>> for e in errs:
...     print(f"{e.field}: {e.reason}")
link_type: 'lan' is not one of dc, metro, wan, edge
rtt_ms: -4 is below the minimum 0 ms
packet_loss: NaN is not a finite number
>>> _, errs = validate_telemetry(b'{"timestamp": "2026-01-05T10:00:00Z", "node_id": "n1", '
...                              b'"extra": {"m01": -0.5, "CPU": 1, "rtt_ms": 2, "m02": "x"}}')
>>> for e in errs:
...     print(f"{e.field}: {e.reason}")
extra.CPU: name 'CPU' does not match ^[a-z][a-z0-9_.]{0,63}$
extra.rtt_ms: name 'rtt_ms' is a schema field: send it as a top-level field
extra.m02: expected a number, got str 'x'
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from typing import Any

import msgspec

from stream.records import FieldError
from stream.schema import (
    EXTRA_FIELD,
    EXTRA_MAX,
    FIELDS,
    MAX_TIME,
    MIN_TIME,
    FieldSpec,
    decode_telemetry,
    extra_name_reason,
)

#: Records larger than this are rejected before decoding (override per consumer).
DEFAULT_MAX_BYTES = 64 * 1024


def validate_telemetry(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[Any, list[FieldError]]:
    """Return ``(record, [])`` for a valid record, ``(None, reasons)`` otherwise."""
    if len(data) > max_bytes:
        return None, [FieldError(field="", reason=f"record is {len(data)} bytes, over the limit of {max_bytes}")]
    if not data:
        return None, [FieldError(field="", reason="empty value (zero bytes)")]
    if data.count(b'"node_id"') > 1 or data.count(b'"timestamp"') > 1:  # a C scan: cheap
        twice = duplicated_identity(data)
        if twice:
            return None, twice
    try:
        return decode_telemetry(data), []
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        errors = explain(data)
        return None, errors or [FieldError(field="", reason=str(exc))]


#: Fields that decide a record's partition, order and state: given twice, which one is meant
#: cannot be known, so the record is refused. Any other field given twice: the last one wins,
#: as in most JSON parsers (RFC 8259 leaves it open).
IDENTITY = ("node_id", "timestamp")


def duplicated_identity(data: bytes) -> list[FieldError]:
    """Errors for an identity field given more than once (``[]`` if none is).

    >>> duplicated_identity(b'{"node_id": "a", "timestamp": "t", "node_id": "b"}')
    [FieldError(field='node_id', reason="given 2 times ('a', 'b'): which one is meant is unknown", value=None)]
    >>> duplicated_identity(b'{"note": "node_id \\"node_id\\""}')
    []
    >>> duplicated_identity(b'{"node_id": "a", "extra": {"node_id": 1}}')
    []
    """
    last: list[list[tuple[str, Any]]] = [[]]

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        last[0] = items  # the top-level object is the last one closed
        return dict(items)

    try:
        json.loads(data, object_pairs_hook=pairs)
    except (UnicodeDecodeError, ValueError):
        return []  # not JSON: the usual path says so
    seen: dict[str, list[Any]] = {}
    for k, v in last[0]:  # only the record's own keys: ``extra`` may hold any name
        if k in IDENTITY:
            seen.setdefault(k, []).append(v)
    return [
        FieldError(
            field=k,
            reason=f"given {len(vs)} times ({', '.join(repr(v) for v in vs)}): "
            "which one is meant is unknown",
        )
        for k, vs in seen.items()
        if len(vs) > 1
    ]


def explain(data: bytes) -> list[FieldError]:
    """All the reasons ``data`` is not a valid telemetry record (empty if it is valid)."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        return [FieldError(field="", reason=f"not valid JSON: {exc}")]
    if not isinstance(obj, dict):
        return [FieldError(field="", reason=f"expected a JSON object, got {type(obj).__name__}")]
    errors: list[FieldError] = []
    for spec in FIELDS:
        value = obj.get(spec.name)
        if value is None:
            if spec.required:
                errors.append(FieldError(field=spec.name, reason="required field is missing or null"))
            continue
        reason = check_field(spec, value)
        if reason:
            errors.append(FieldError(field=spec.name, reason=reason, value=_short(value)))
    extra = obj.get(EXTRA_FIELD)
    if extra is not None:
        errors += check_extra(extra)
    return errors


def check_extra(extra: Any) -> list[FieldError]:
    """Every reason the ``extra`` map is invalid (``[]`` if it is valid).

    A bad name or value is reported as ``extra.NAME``; the map itself as ``extra``.

    >>> [(e.field, e.reason) for e in check_extra({"m01": True, "m02": 1e999})]
    [('extra.m01', 'expected a number, got bool true'), ('extra.m02', 'Infinity is not a finite number')]
    >>> check_extra([1, 2])[0].reason
    'expected an object of name -> number, got list'
    """
    if not isinstance(extra, dict):
        return [
            FieldError(
                field=EXTRA_FIELD,
                reason=f"expected an object of name -> number, got {type(extra).__name__}",
                value=_short(extra),
            )
        ]
    errors: list[FieldError] = []
    if len(extra) > EXTRA_MAX:
        errors.append(
            FieldError(field=EXTRA_FIELD, reason=f"{len(extra)} metrics, more than {EXTRA_MAX}")
        )
    for name, value in extra.items():
        where = f"{EXTRA_FIELD}.{name[:80]}"
        reason = extra_name_reason(name)
        if reason is None:
            reason = _number_reason(value)
        if reason:
            errors.append(FieldError(field=where, reason=reason, value=_short(value)))
    return errors


def _number_reason(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected a number, got {type(value).__name__} {_short(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{_short(value)} is not a finite number"
    if isinstance(value, int) and abs(value) > sys.float_info.max:
        return f"{_short(value)} is out of the range of a double"
    return None


def check_field(spec: FieldSpec, value: Any) -> str | None:
    """The reason ``value`` is invalid for ``spec``, or ``None`` if it is valid."""
    if spec.kind == "time":
        return _check_time(value)
    if spec.kind in ("str", "enum"):
        if not isinstance(value, str):
            return f"expected a string, got {type(value).__name__} {_short(value)}"
        if spec.kind == "enum" and value not in spec.choices:
            return f"{value!r} is not one of {', '.join(spec.choices)}"
        if not 1 <= len(value) <= 256:
            return f"string length {len(value)} is outside [1, 256]"
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected a number, got {type(value).__name__} {_short(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{_short(value)} is not a finite number"
    if spec.kind == "int" and isinstance(value, float):
        return f"expected an integer, got {value!r}"
    unit = f" {spec.unit}" if spec.unit else ""
    if spec.min is not None and value < spec.min:
        return f"{value!r} is below the minimum {spec.min:g}{unit}"
    if spec.max is not None and value > spec.max:
        return f"{value!r} is above the maximum {spec.max:g}{unit}"
    return None


def _check_time(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected an RFC 3339 timestamp string, got {type(value).__name__}"
    try:
        ts = dt.datetime.fromisoformat(value)
    except ValueError:
        return f"{value!r} is not an RFC 3339 timestamp"
    if ts.tzinfo is None:
        return f"{value!r} has no UTC offset (event times must be tz-aware UTC)"
    if not MIN_TIME <= ts < MAX_TIME:
        return f"{value!r} is outside [{MIN_TIME.year}, {MAX_TIME.year})"
    return None


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
