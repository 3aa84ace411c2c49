"""Mapping the columns of a CSV recording onto the telemetry schema.

A :class:`ColumnMap` says which CSV column feeds which schema field (optionally scaled, e.g. a
loss column in percent -> ``packet_loss`` as a fraction) and which fields are constants (a CSV
exported from one host often has no node column). Columns named like a schema field map to it
by themselves unless ``auto=False``. :meth:`ColumnMap.bind` checks the map against the CSV
header once, up front, and fails fast naming every bad column; the :class:`RowMapper` it
returns turns each row into a telemetry record plus the reasons it is bad, if any. Missing
optional fields are simply absent; only ``timestamp`` and ``node_id`` are required. Any other
column can feed the record's ``extra`` metrics: ``extra.NAME=COLUMN`` maps one, ``--extra GLOB``
every column it matches under its own name (:mod:`stream.csvextra`).

Examples
--------
>>> cmap = ColumnMap.parse(["timestamp=time", "rtt_ms=latency", "packet_loss=loss_pct*0.01"],
...                        constants=["node_id=n-007"])
>>> mapper = cmap.bind(["time", "latency", "loss_pct", "comment"])
>>> mapper.ignored
['comment']
>>> rec, errors = mapper.convert(["2026-01-05T10:00:00Z", "12.5", "2", "hello"])
>>> rec
{'timestamp': '2026-01-05T10:00:00Z', 'rtt_ms': 12.5, 'packet_loss': 0.02, 'node_id': 'n-007'}
>>> rec, errors = mapper.convert(["2026-01-05 10:00:05", "fast", "nan", ""])
>>> [(e.field, e.reason) for e in errors]  # doctest: +NORMALIZE_WHITESPACE
[('timestamp', "'2026-01-05 10:00:05' has no UTC offset (pass --assume-utc if the column is UTC)"),
 ('rtt_ms', "column 'latency': 'fast' is not a number"),
 ('packet_loss', "column 'loss_pct': 'nan' is not a finite number")]
>>> ColumnMap.parse(["rtt=latency"]).bind(["time", "latency"])
Traceback (most recent call last):
...
stream.csvmap.ColumnMapError: bad column map: 'rtt' is not a schema field (did you mean rtt_ms?); required field timestamp has no column (map one with --column timestamp=COLUMN or --timestamp-column); required field node_id has no column (map one with --column node_id=COLUMN or set it with --set node_id=VALUE)
>>> mapper = ColumnMap.parse(["extra.load=Load*0.01"], extra=["m*"]).bind(
...     ["timestamp", "node_id", "label", "m01", "m02", "Load"])
>>> mapper.convert(["2026-01-05T10:00:00Z", "n-1", "0", "0.5", "", "42"])
({'timestamp': '2026-01-05T10:00:00Z', 'node_id': 'n-1', 'extra': {'load': 0.42, 'm01': 0.5}}, [])
>>> mapper.ignored
['label']
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stream.csvextra import count_problem, expand_extra, extra_name, is_extra, target_problem
from stream.errors import SchemaError
from stream.records import FieldError
from stream.schema import EXTRA_FIELD, FIELD_BY_NAME, REQUIRED_FIELDS

TIME_FORMATS = ("auto", "iso", "epoch_s", "epoch_ms")


class ColumnMapError(SchemaError):
    """The column map does not fit the schema or the CSV header (every problem is listed)."""


@dataclass(frozen=True)
class Column:
    """One mapped column: the CSV column feeding ``field``, times ``scale`` if numeric."""

    field: str
    column: str
    scale: float = 1.0


@dataclass(frozen=True)
class ColumnMap:
    """Which CSV column feeds which schema field; see the module docstring."""

    columns: tuple[Column, ...] = ()
    constants: Mapping[str, str] = field(default_factory=dict)
    auto: bool = True
    time_format: str = "auto"
    assume_utc: bool = False
    extra: tuple[str, ...] = ()  # --extra patterns (columns -> extra metrics, own names)

    @classmethod
    def parse(
        cls,
        specs: Iterable[str] = (),
        *,
        constants: Iterable[str] = (),
        mapping: Mapping[str, Any] | None = None,
        extra: Iterable[str] = (),
        **options: Any,
    ) -> ColumnMap:
        """From ``FIELD=COLUMN[*SCALE]`` specs, ``FIELD=VALUE`` constants and a JSON mapping.

        ``mapping`` is ``{"FIELD": "COLUMN"}`` or ``{"FIELD": {"column": C, "scale": S}}``
        (``FIELD`` may be ``extra.NAME``), plus ``"extra": ["GLOB", ...]``; command-line specs
        override it field by field and ``extra`` patterns add to its own.
        """
        cols: dict[str, Column] = {}
        globs: list[str] = []
        for name, spec in (mapping or {}).items():
            if name == EXTRA_FIELD:
                if not isinstance(spec, list) or not all(isinstance(g, str) for g in spec):
                    raise ColumnMapError(f"bad mapping entry 'extra': {spec!r} (want a list of patterns)")
                globs += spec
            elif isinstance(spec, str):
                cols[name] = Column(name, spec)
            elif isinstance(spec, Mapping) and isinstance(spec.get("column"), str):
                cols[name] = Column(name, spec["column"], float(spec.get("scale", 1.0)))
            else:
                raise ColumnMapError(f"bad mapping entry {name!r}: {spec!r} (want a column name)")
        for spec in specs:
            name, col = _split(spec, "--column FIELD=COLUMN[*SCALE]")
            scale = 1.0
            if "*" in col:
                col, _, factor = col.rpartition("*")
                try:
                    scale = float(factor)
                except ValueError:
                    raise ColumnMapError(f"bad scale in {spec!r}: {factor!r}") from None
            cols[name] = Column(name, col, scale)
        consts = dict(_split(c, "--set FIELD=VALUE") for c in constants)
        if options.get("time_format", "auto") not in TIME_FORMATS:
            raise ColumnMapError(
                f"time format {options['time_format']!r} is not one of {TIME_FORMATS}"
            )
        globs += [g.strip() for g in extra]
        if any(not g for g in globs):
            raise ColumnMapError("bad --extra pattern: empty (want a pattern such as 'm*')")
        return cls(tuple(cols.values()), consts, extra=tuple(globs), **options)

    def bind(self, header: Sequence[str]) -> RowMapper:
        """Check the map against ``header``; raises :class:`ColumnMapError` listing every problem."""
        header = [h.strip() for h in header]
        index = {h: i for i, h in enumerate(header)}
        problems: list[str] = []
        chosen: dict[str, Column] = {}
        if self.auto:
            chosen = {h: Column(h, h) for h in header if h in FIELD_BY_NAME}
        for c in self.columns:
            bad_extra = target_problem(c.field) if is_extra(c.field) else None
            if bad_extra:
                problems.append(bad_extra)
            elif not is_extra(c.field) and c.field not in FIELD_BY_NAME:
                problems.append(f"{c.field!r} is not a schema field{_hint(c.field, FIELD_BY_NAME)}")
            elif c.column not in index:
                problems.append(
                    f"column {c.column!r} (for {c.field}) is not in the header{_hint(c.column, index)}"
                )
            elif not is_extra(c.field) and not FIELD_BY_NAME[c.field].numeric and c.scale != 1.0:
                problems.append(f"{c.field} is not numeric and cannot be scaled")
            else:
                chosen[c.field] = c
        for name in self.constants:
            if is_extra(name):
                bad_extra = target_problem(name, " (--set)")
                if bad_extra:
                    problems.append(bad_extra)
            elif name not in FIELD_BY_NAME:
                problems.append(
                    f"{name!r} (--set) is not a schema field{_hint(name, FIELD_BY_NAME)}"
                )
            chosen.pop(name, None)  # a constant wins over a column of the same field
        if self.extra:
            taken = {c.column for c in chosen.values()}
            globbed, more = expand_extra(self.extra, header, taken)
            problems += more
            for c in globbed:
                if c.field not in self.constants:
                    chosen.setdefault(c.field, c)
        too_many = count_problem([*chosen, *self.constants])
        if too_many:
            problems.append(too_many)
        for name in REQUIRED_FIELDS:
            if name not in chosen and name not in self.constants:
                how = (
                    "--column timestamp=COLUMN or --timestamp-column"
                    if name == "timestamp"
                    else f"--column {name}=COLUMN or set it with --set {name}=VALUE"
                )
                problems.append(f"required field {name} has no column (map one with {how})")
        if problems:
            raise ColumnMapError("bad column map: " + "; ".join(problems))
        used = {c.column for c in chosen.values()}
        return RowMapper(
            columns=[(c.field, index[c.column], c.column, c.scale) for c in chosen.values()],
            constants=dict(self.constants),
            width=len(header),
            ignored=[h for h in header if h not in used],
            time_format=self.time_format,
            assume_utc=self.assume_utc,
        )


@dataclass
class RowMapper:
    """Converts CSV rows of one header into telemetry dicts (see :meth:`ColumnMap.bind`)."""

    columns: list[tuple[str, int, str, float]]  # field, cell index, column name, scale
    constants: dict[str, str]
    width: int
    ignored: list[str]
    time_format: str = "auto"
    assume_utc: bool = False

    def convert(self, row: Sequence[str]) -> tuple[dict[str, Any], list[FieldError]]:
        """``(record, conversion errors)``; empty cells are absent fields.

        Range and enum checks are left to :func:`stream.validation.validate_telemetry`.
        """
        errors: list[FieldError] = []
        if len(row) != self.width:
            errors.append(
                FieldError(
                    field="", reason=f"row has {len(row)} cells, the header has {self.width}"
                )
            )
        rec: dict[str, Any] = {}
        for name, idx, col, scale in self.columns:
            raw = row[idx].strip() if idx < len(row) else ""
            if not raw:
                continue
            value, reason = convert_cell(name, raw, scale, self.time_format, self.assume_utc)
            if reason:
                where = "" if name == "timestamp" else f"column {col!r}: "
                errors.append(FieldError(field=name, reason=where + reason, value=raw[:80]))
            else:
                _put(rec, name, value)
        for name, raw in self.constants.items():
            value, reason = convert_cell(name, raw, 1.0, self.time_format, self.assume_utc)
            if reason:
                errors.append(FieldError(field=name, reason=f"--set {name}: {reason}", value=raw))
            else:
                _put(rec, name, value)
        return rec, errors


def _put(rec: dict[str, Any], name: str, value: Any) -> None:
    if is_extra(name):
        rec.setdefault(EXTRA_FIELD, {})[extra_name(name)] = value
    else:
        rec[name] = value


def convert_cell(
    name: str, raw: str, scale: float, time_format: str = "auto", assume_utc: bool = False
) -> tuple[Any, str | None]:
    """A cell's value for field ``name`` and ``None``, or ``(None, reason)``."""
    kind = "float" if is_extra(name) else FIELD_BY_NAME[name].kind
    if kind == "time":
        return parse_time(raw, time_format, assume_utc)
    if kind in ("str", "enum"):
        return raw, None
    try:
        if kind == "int" and scale == 1.0:
            return int(raw), None
    except ValueError:
        pass
    try:
        x = float(raw)
    except ValueError:
        return None, f"{raw!r} is not a number"
    if not math.isfinite(x):
        return None, f"{raw!r} is not a finite number"
    x *= scale
    if kind == "int":
        if x != round(x):
            return None, f"{raw!r} is not an integer"
        return int(round(x)), None
    return x, None


def parse_time(raw: str, fmt: str = "auto", assume_utc: bool = False) -> tuple[Any, str | None]:
    """An RFC 3339 UTC string (``...Z``) from ISO 8601 or epoch seconds/milliseconds.

    >>> parse_time("1767607200"), parse_time("1767607200500"), parse_time("2026-01-05T11:00+01:00")
    (('2026-01-05T10:00:00Z', None), ('2026-01-05T10:00:00.500000Z', None), ('2026-01-05T10:00:00Z', None))
    """
    if fmt in ("epoch_s", "epoch_ms") or (fmt == "auto" and _numeric(raw)):
        try:
            x = float(raw)
        except ValueError:
            return None, f"{raw!r} is not an epoch time"
        if not math.isfinite(x):
            return None, f"{raw!r} is not a finite epoch time"
        if fmt == "epoch_ms" or (fmt == "auto" and abs(x) > 1e11):
            x /= 1000.0
        try:
            ts = dt.datetime.fromtimestamp(x, dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None, f"{raw!r} is out of range as an epoch time"
    else:
        try:
            ts = dt.datetime.fromisoformat(raw)
        except ValueError:
            return None, f"{raw!r} is not an ISO 8601 / RFC 3339 time"
        if ts.tzinfo is None:
            if not assume_utc:
                return None, f"{raw!r} has no UTC offset (pass --assume-utc if the column is UTC)"
            ts = ts.replace(tzinfo=dt.UTC)
    return ts.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"), None


def _numeric(raw: str) -> bool:
    try:
        float(raw)
    except ValueError:
        return False
    return True


def _split(spec: str, form: str) -> tuple[str, str]:
    name, sep, value = spec.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise ColumnMapError(f"bad spec {spec!r}: expected {form}")
    return name.strip(), value.strip()


def _hint(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def add_csv_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that say how a CSV recording maps onto the schema (replay and ``--from-file``)."""
    g = parser.add_argument_group("CSV recordings (columns named like schema fields map by themselves)")
    g.add_argument(
        "--format", choices=("jsonl", "csv"), help="recording format (default: from the file name)"
    )
    g.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="FIELD=COLUMN[*SCALE]",
        help="map a CSV column to a schema field or to an extra metric (FIELD = extra.NAME), "
        "optionally scaled (repeatable)",
    )
    g.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="GLOB",
        help="every column matching this shell pattern (e.g. 'm*') becomes an extra metric under "
        "its own name, unless it already feeds a schema field (repeatable)",
    )
    g.add_argument(
        "--timestamp-column", metavar="COLUMN", help="shorthand for --column timestamp=COLUMN"
    )
    g.add_argument(
        "--set",
        action="append",
        default=[],
        dest="constants",
        metavar="FIELD=VALUE",
        help="a constant field for every row, e.g. node_id=n-001 (repeatable)",
    )
    g.add_argument(
        "--mapping",
        metavar="FILE.json",
        help='JSON column map: {"FIELD": "COLUMN" or {"column": C, "scale": S}}; FIELD may be '
        'extra.NAME, and "extra": ["GLOB", ...] adds --extra patterns',
    )
    g.add_argument(
        "--no-auto-map",
        action="store_true",
        help="map only the columns named by --column/--mapping",
    )
    g.add_argument(
        "--time-format",
        choices=TIME_FORMATS,
        default="auto",
        help="timestamp column format (default auto: ISO 8601 or epoch s/ms)",
    )
    g.add_argument(
        "--assume-utc", action="store_true", help="read timestamps without a UTC offset as UTC"
    )


def column_map_from_args(args: argparse.Namespace) -> ColumnMap:
    """The CSV column map of the command line (``--mapping`` file, then flags)."""
    mapping = None
    if args.mapping:
        with open(args.mapping, encoding="utf-8") as f:
            mapping = json.load(f)
        if not isinstance(mapping, dict):
            raise ValueError(
                f"{args.mapping}: a column map is a JSON object, got {type(mapping).__name__}"
            )
    specs = list(args.column)
    if args.timestamp_column:
        specs.append(f"timestamp={args.timestamp_column}")
    return ColumnMap.parse(
        specs,
        constants=args.constants,
        mapping=mapping,
        extra=getattr(args, "extra", ()),
        auto=not args.no_auto_map,
        time_format=args.time_format,
        assume_utc=args.assume_utc,
    )
