"""The measured codec table: ratio and per-core speed of each action on each payload class.

The table is measured with the real ``lz4`` and ``zstandard`` libraries by
``python bench/measure_codecs.py`` and committed as ``models/compression/codecs.json``;
:func:`load_codec_table` reads it (the only file this package reads).

Examples
--------
>>> table = load_codec_table()
>>> table.names
('none', 'lz4', 'zstd-1', 'zstd-3', 'zstd-9', 'zstd-19')
>>> table.classes
('compressed', 'memory', 'text', 'zero')
>>> a, p = table.index("zstd-19"), table.classes.index("text")
>>> bool(table.ratio[a, p] > table.ratio[table.index("lz4"), p])  # slower, but smaller
True
>>> float(table.compress_s_per_mb[table.index("none")].max())     # no codec, no CPU time
0.0
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from models.compression.errors import CodecTableError

__all__ = ["Action", "CodecTable", "load_codec_table"]


@dataclass(frozen=True, slots=True)
class Action:
    """One choice of the delta-encoding layer: ``codec`` (``none``/``lz4``/``zstd``) at ``level``."""

    name: str
    codec: str
    level: int


@dataclass(frozen=True, eq=False)
class CodecTable:
    """Codec costs per (action, payload class), as arrays of shape ``(n_actions, n_classes)``.

    Attributes
    ----------
    actions
        The choices, in the order of the array rows (and of the policy's outputs).
    classes
        Payload classes, in the order of the array columns.
    ratio
        Uncompressed / compressed bytes (1 for ``none``).
    compress_s_per_mb, decompress_s_per_mb
        Seconds of one core per MB (1e6 bytes) of uncompressed data (0 for ``none``).
    source
        Provenance: when and how it was measured, and on what host.
    digest
        Short SHA-256 of the measurements; part of every model version built on the table.
    """

    actions: tuple[Action, ...]
    classes: tuple[str, ...]
    ratio: np.ndarray
    compress_s_per_mb: np.ndarray
    decompress_s_per_mb: np.ndarray
    source: dict[str, Any] = field(default_factory=dict)
    digest: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        """Action names, e.g. ``('none', 'lz4', 'zstd-1', ...)``."""
        return tuple(a.name for a in self.actions)

    def index(self, name: str) -> int:
        """Row of the action called ``name``."""
        try:
            return self.names.index(name)
        except ValueError:
            raise CodecTableError(
                f"unknown action {name!r} (known: {', '.join(self.names)})"
            ) from None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecTable:
        """Build from the JSON written by ``bench/measure_codecs.py``."""
        try:
            actions = tuple(Action(a["name"], a["codec"], int(a["level"])) for a in data["actions"])
            meas = data["measurements"]
            classes = tuple(data["payloads"])
        except (KeyError, TypeError) as exc:
            raise CodecTableError(f"codec table is missing {exc}") from None
        if not actions or actions[0].codec != "none":
            raise CodecTableError("the first action of the codec table must be 'none'")
        shape = (len(actions), len(classes))
        ratio, comp, decomp = np.ones(shape), np.zeros(shape), np.zeros(shape)
        for i, act in enumerate(actions[1:], start=1):
            for j, cls_name in enumerate(classes):
                try:
                    m = meas[act.name][cls_name]
                    ratio[i, j] = float(m["ratio"])
                    comp[i, j] = 1.0 / float(m["compress_mbps"])
                    decomp[i, j] = 1.0 / float(m["decompress_mbps"])
                except (KeyError, TypeError, ZeroDivisionError) as exc:
                    raise CodecTableError(
                        f"codec table has no usable {act.name}/{cls_name} measurement ({exc!r})"
                    ) from None
        if not (np.isfinite(ratio).all() and (ratio > 0).all()):
            raise CodecTableError("codec table ratios must be finite and > 0")
        canon = json.dumps({"actions": data["actions"], "measurements": meas}, sort_keys=True)
        source: dict[str, Any] = {k: data[k] for k in ("generated", "command", "host") if k in data}
        return cls(
            actions=actions,
            classes=classes,
            ratio=ratio,
            compress_s_per_mb=comp,
            decompress_s_per_mb=decomp,
            source=source,
            digest=hashlib.sha256(canon.encode()).hexdigest()[:12],
        )


def load_codec_table(path: str | Path | None = None) -> CodecTable:
    """Read a codec table; by default the committed ``models/compression/codecs.json``."""
    if path is None:
        text = resources.files("models.compression").joinpath("codecs.json").read_text()
    else:
        text = Path(path).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CodecTableError(f"codec table is not valid JSON: {exc}") from None
    return CodecTable.from_dict(data)
