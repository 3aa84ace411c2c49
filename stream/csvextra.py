"""CSV columns as extra metrics: ``--column extra.NAME=COLUMN`` and ``--extra GLOB``.

A column becomes an entry of the record's ``extra`` map (:data:`stream.schema.EXTRA_FIELD`)
in two ways: one by one under a name you choose (``--column extra.cpu=CPU %``, scaled like any
numeric column: ``--column extra.cpu=CPU %*0.01``), or all the columns whose header matches a
shell-style pattern, each under its own header name (``--extra 'm*'``; ``fnmatch`` rules,
case-sensitive, repeatable). A pattern never takes a column that already feeds a schema field
(by name or by ``--column``) or an explicit ``extra.NAME``, so ``--extra '*'`` means "every
other column". The problems are collected, not raised: :meth:`stream.csvmap.ColumnMap.bind`
lists them all at once.

Examples
--------
>>> header = ["timestamp", "node_id", "split", "label", "m01", "m02", "CPU %"]
>>> cols, problems = expand_extra(["m*"], header, taken={"timestamp", "node_id"})
>>> [(c.field, c.column) for c in cols], problems
([('extra.m01', 'm01'), ('extra.m02', 'm02')], [])
>>> expand_extra(["C*", "x*"], header, taken=set())[1]  # doctest: +NORMALIZE_WHITESPACE
["column 'CPU %' (matched by --extra 'C*') cannot be an extra metric: name 'CPU %' does not
  match ^[a-z][a-z0-9_.]{0,63}$ (map it under a valid name with --column extra.NAME='CPU %')",
 "--extra 'x*' matches no column that is not already mapped"]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from stream.schema import EXTRA_FIELD, EXTRA_MAX, extra_name_reason

if TYPE_CHECKING:
    from stream.csvmap import Column

PREFIX = EXTRA_FIELD + "."


def is_extra(name: str) -> bool:
    """True for a target named ``extra.NAME``."""
    return name.startswith(PREFIX)


def extra_name(target: str) -> str:
    """``extra.m01`` -> ``m01``."""
    return target[len(PREFIX) :]


def target_problem(target: str, what: str = "") -> str | None:
    """Why ``extra.NAME`` cannot be a target (``None`` if it can)."""
    reason = extra_name_reason(extra_name(target))
    return f"{target!r}{what}: {reason}" if reason else None


def expand_extra(
    patterns: Iterable[str], header: Sequence[str], taken: set[str]
) -> tuple[list[Column], list[str]]:
    """The columns each pattern adds as extra metrics, and every problem found."""
    from stream.csvmap import Column

    out: list[Column] = []
    problems: list[str] = []
    chosen: set[str] = set()
    for pattern in patterns:
        found = False
        for col in header:
            if col in taken or col in chosen or not fnmatchcase(col, pattern):
                continue
            found = True
            reason = extra_name_reason(col)
            if reason:
                problems.append(
                    f"column {col!r} (matched by --extra {pattern!r}) cannot be an extra metric: "
                    f"{reason} (map it under a valid name with --column extra.NAME={col!r})"
                )
                continue
            chosen.add(col)
            out.append(Column(PREFIX + col, col))
        if not found:
            problems.append(f"--extra {pattern!r} matches no column that is not already mapped")
    return out, problems


def count_problem(targets: Iterable[str]) -> str | None:
    """A problem if more than :data:`EXTRA_MAX` extra metrics are mapped."""
    n = sum(1 for t in set(targets) if is_extra(t))
    if n > EXTRA_MAX:
        return f"{n} columns map to extra metrics, more than the {EXTRA_MAX} a record may carry"
    return None
