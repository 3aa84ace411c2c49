"""Reading recordings: telemetry (JSON lines or CSV, optionally gzip-compressed) and labels.

A recording yields :class:`Row` objects in file order, one per data line, each already
validated against the schema (:func:`stream.validation.validate_telemetry`): a good row
carries the JSON value to produce, its key (the node id) and its event time; a bad row carries
its original bytes, its line number and every reason it is bad. Reading never stops at a bad
row. :meth:`Recording.fraction` tells how much of the file has been read (for progress bars).

The labels file of ``run.jsonl`` (or ``run.jsonl.gz``, ``run.csv``) is ``run.labels.jsonl``:
one :class:`stream.records.IncidentLabel` per line, as ``producers.synthetic --output`` writes.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "r.jsonl").write_text(
...     '{"timestamp": "2026-01-05T10:00:00Z", "node_id": "n-1", "rtt_ms": 3}\\n'
...     '{"timestamp": "2026-01-05T10:00:01Z", "node_id": "n-1", "rtt_ms": -3}\\n')
>>> rows = list(Recording(d / "r.jsonl").rows())
>>> [(r.line, r.key, r.errors[0].reason if r.errors else "ok") for r in rows]
[(1, b'n-1', 'ok'), (2, b'n-1', '-3 is below the minimum 0 ms')]
>>> labels_path_for("data/run.jsonl.gz")
'data/run.labels.jsonl'
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import orjson

from stream.csvmap import ColumnMap, RowMapper
from stream.records import FieldError, IncidentLabel, decode
from stream.validation import DEFAULT_MAX_BYTES, validate_telemetry

FORMATS = ("jsonl", "csv")


@dataclass(slots=True)
class Row:
    """One data line of a recording: good (``errors`` empty, ``time`` set) or bad."""

    line: int
    value: bytes
    key: bytes | None
    time: float | None = None  # event time, epoch seconds (None when bad)
    node: str = ""
    errors: list[FieldError] = field(default_factory=list)


def labels_path_for(path: str | os.PathLike[str]) -> str:
    """``run.jsonl[.gz]`` / ``run.csv[.gz]`` -> ``run.labels.jsonl`` beside it."""
    p = Path(path)
    name = p.name[:-3] if p.name.endswith(".gz") else p.name
    for ext in (".jsonl", ".csv", ".json"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return str(p.with_name(f"{name}.labels.jsonl"))


def guess_format(path: str | os.PathLike[str]) -> str:
    """``csv`` for ``*.csv[.gz]``, else ``jsonl``."""
    name = str(path)
    return "csv" if name.removesuffix(".gz").endswith(".csv") else "jsonl"


class Recording:
    """A telemetry recording on disk; iterate it with :meth:`rows`.

    Parameters
    ----------
    path
        ``*.jsonl``, ``*.csv``, either one ``.gz``-compressed too.
    fmt
        ``"jsonl"`` or ``"csv"`` (default: from the file name).
    column_map
        How CSV columns map onto the schema (default: columns named like schema fields).
    max_bytes
        Rows larger than this are bad.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fmt: str | None = None,
        column_map: ColumnMap | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.path = str(path)
        self.format = fmt or guess_format(path)
        if self.format not in FORMATS:
            raise ValueError(f"format {self.format!r} is not one of {', '.join(FORMATS)}")
        self.column_map = column_map or ColumnMap()
        self.max_bytes = max_bytes
        self.size = os.path.getsize(self.path)
        self.mapper: RowMapper | None = None  # set once the CSV header is read
        self._raw: IO[bytes] | None = None
        if self.format == "csv":
            self.mapper = self.column_map.bind(self._header())  # fail fast on a bad map

    def fraction(self) -> float:
        """Share of the file's bytes read so far (0..1)."""
        if self._raw is None or self._raw.closed or not self.size:
            return 0.0
        return min(self._raw.tell() / self.size, 1.0)

    def _header(self) -> list[str]:
        with open(self.path, "rb") as raw:
            data = cast(IO[bytes], gzip.GzipFile(fileobj=raw) if self.path.endswith(".gz") else raw)
            text = io.TextIOWrapper(data, encoding="utf-8-sig", newline="")
            return next(csv.reader(text), [])

    def rows(self) -> Iterator[Row]:
        """Every data line in file order (blank lines skipped)."""
        with open(self.path, "rb") as raw:
            self._raw = raw
            data = cast(IO[bytes], gzip.GzipFile(fileobj=raw) if self.path.endswith(".gz") else raw)
            if self.format == "csv":
                yield from self._csv_rows(data)
            else:
                yield from self._jsonl_rows(data)

    def _jsonl_rows(self, data: IO[bytes]) -> Iterator[Row]:
        for n, line in enumerate(data, 1):
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield self._row(n, line)

    def _csv_rows(self, data: IO[bytes]) -> Iterator[Row]:
        text = io.TextIOWrapper(data, encoding="utf-8-sig", newline="")
        reader = csv.reader(text)
        header = next(reader, None)
        if header is None:
            return
        self.mapper = mapper = self.column_map.bind(header)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="")
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            rec, errors = mapper.convert(cells)
            value = orjson.dumps(rec)
            if errors:  # report the row as it was in the file
                buf.seek(0)
                buf.truncate()
                writer.writerow(cells)
                node = rec.get("node_id")
                key = node.encode() if isinstance(node, str) else None
                errors += _explain(value, self.max_bytes, {e.field for e in errors})
                yield Row(reader.line_num, buf.getvalue().encode(), key, errors=errors)
            else:
                yield self._row(reader.line_num, value)

    def _row(self, n: int, value: bytes) -> Row:
        rec, errors = validate_telemetry(value, self.max_bytes)
        if errors:
            return Row(n, value, _node_key(value), errors=errors)
        node = rec.node_id
        return Row(n, value, node.encode(), rec.timestamp.timestamp(), node)


def read_labels(path: str | os.PathLike[str]) -> tuple[list[tuple[int, IncidentLabel]], list[Row]]:
    """``([(line, label), ...], bad rows)`` of a labels JSON-lines file."""
    good: list[tuple[int, IncidentLabel]] = []
    bad: list[Row] = []
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                lab = decode(line, IncidentLabel)
            except Exception as exc:  # msgspec.ValidationError / DecodeError
                bad.append(
                    Row(n, line, _node_key(line), errors=[FieldError(field="", reason=str(exc))])
                )
                continue
            if lab.end < lab.start:
                reason = f"end {lab.end.isoformat()} is before start {lab.start.isoformat()}"
                bad.append(
                    Row(
                        n,
                        line,
                        lab.node_id.encode(),
                        errors=[FieldError(field="end", reason=reason)],
                    )
                )
                continue
            good.append((n, lab))
    return good, bad


def _explain(value: bytes, max_bytes: int, skip: set[str]) -> list[FieldError]:
    """Validation errors of a partly converted CSV row, except fields already reported."""
    _rec, errors = validate_telemetry(value, max_bytes)
    return [e for e in errors if e.field not in skip]


def _node_key(value: bytes) -> bytes | None:
    try:
        node = orjson.loads(value).get("node_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return node.encode() if isinstance(node, str) and node else None


def decoded_batches(path: str | os.PathLike[str], size: int) -> Iterator[list[Any]]:
    """Validated telemetry records of a recording, ``size`` at a time (bad rows skipped).

    For benchmarks and tests that feed a processor directly; a run over a file goes through
    the loop instead (``--from-file``), where bad rows become dead letters.
    """
    batch: list[Any] = []
    for row in Recording(path).rows():
        if row.errors:
            continue
        rec, _errors = validate_telemetry(row.value, DEFAULT_MAX_BYTES)
        batch.append(rec)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
