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
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import msgspec

from stream.records import FieldError
from stream.schema import FIELDS, MAX_TIME, MIN_TIME, FieldSpec, decode_telemetry

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
    """
    seen: dict[str, list[Any]] = {}

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        for k, v in items:
            if k in IDENTITY:
                seen.setdefault(k, []).append(v)
        return dict(items)

    try:
        json.loads(data, object_pairs_hook=pairs)
    except (UnicodeDecodeError, ValueError):
        return []  # not JSON: the usual path says so
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
    return errors


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
