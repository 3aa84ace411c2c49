"""JSON Schema files for subscribers in other languages, generated from the one definition.

``python -m stream.jsonschema`` rewrites ``schemas/*.schema.json``; ``--check`` exits non-zero
when a file is out of date (a test runs the same check).

Examples
--------
>>> doc = build_schemas()["telemetry"]
>>> doc["required"], doc["properties"]["rtt_ms"]["anyOf"][0]["x-unit"]
(['timestamp', 'node_id'], 'ms')
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

import msgspec
import orjson

from stream.records import Alert, DeadLetter, IncidentLabel, Prediction
from stream.schema import EXTRA_FIELD, EXTRA_RESERVED, SCHEMA_VERSION, Telemetry

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
TYPES: dict[str, Any] = {
    "telemetry": Telemetry,
    "label": IncidentLabel,
    "alert": Alert,
    "prediction": Prediction,
    "dead-letter": DeadLetter,
}


def build_schemas() -> dict[str, dict[str, Any]]:
    """One JSON Schema (draft 2020-12) document per record type."""
    out: dict[str, dict[str, Any]] = {}
    for name, type_ in TYPES.items():
        (ref,), components = msgspec.json.schema_components([type_], ref_template="#/$defs/{name}")
        top_name = ref["$ref"].rsplit("/", 1)[1]
        doc: dict[str, Any] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://dwcp-stream.invalid/schemas/{name}.schema.json",
            "title": f"dwcp-stream {name} record",
            "x-schema-version": SCHEMA_VERSION,
            **components.pop(top_name),
        }
        if components:
            doc["$defs"] = components
        out[name] = normalise_descriptions(doc)
    reserve_extra_names(out["telemetry"])
    return out


def reserve_extra_names(doc: dict[str, Any]) -> None:
    """Forbid the fixed fields' names in ``extra`` (msgspec cannot say it; the validator does).

    >>> doc = {"properties": {"extra": {"anyOf": [{"propertyNames": {"pattern": "^a"}}]}}}
    >>> reserve_extra_names(doc)
    >>> doc["properties"]["extra"]["anyOf"][0]["propertyNames"]["not"]["enum"][:2]
    ['amst_streams', 'amst_transfer_rate']
    """
    for option in doc["properties"][EXTRA_FIELD]["anyOf"]:
        if "propertyNames" in option:
            option["propertyNames"]["not"] = {"enum": sorted(EXTRA_RESERVED)}


def normalise_descriptions(node: Any) -> Any:
    """``node`` with every ``description`` text cleaned as :func:`inspect.cleandoc` does.

    msgspec copies docstrings into ``description``, raw (indented continuation lines) in some
    versions and cleaned in others; cleaning them here keeps the generated files identical
    whatever msgspec version is installed.

    >>> normalise_descriptions({"description": "Top.\\n\\n    More.\\n    ", "x": [{"description": "a"}]})
    {'description': 'Top.\\n\\nMore.', 'x': [{'description': 'a'}]}
    """
    if isinstance(node, dict):
        return {
            k: inspect.cleandoc(v) if k == "description" and isinstance(v, str)
            else normalise_descriptions(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [normalise_descriptions(v) for v in node]
    return node


def render(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def stale_files(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Schema files that are missing or differ from what the code generates."""
    return [
        directory / f"{name}.schema.json"
        for name, doc in build_schemas().items()
        if not (directory / f"{name}.schema.json").is_file()
        or (directory / f"{name}.schema.json").read_bytes() != render(doc)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream.jsonschema", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale files; exit 1 if any")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help=f"output folder (default {SCHEMA_DIR})")
    args = parser.parse_args(argv)
    stale = stale_files(args.dir)
    if args.check:
        for path in stale:
            print(f"stale: {path} (run python -m stream.jsonschema)", file=sys.stderr)
        return 1 if stale else 0
    args.dir.mkdir(parents=True, exist_ok=True)
    for name, doc in build_schemas().items():
        (args.dir / f"{name}.schema.json").write_bytes(render(doc))
    print(f"wrote {len(TYPES)} schema files to {args.dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
