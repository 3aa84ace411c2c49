"""The telemetry schema: the single definition every producer, consumer and model imports.

Each field is declared once in :data:`FIELDS` with its type, unit, valid range and whether
it is required. From that table we build

* :class:`Telemetry`, a ``msgspec.Struct`` that decodes *and validates* a JSON record in one
  C pass (the fast path used by every consumer),
* the per-field diagnostics of :mod:`stream.validation` (the slow path, run only on records
  the fast path rejects, so that a dead letter names every bad field), and
* the JSON Schema published for subscribers in other languages (:mod:`stream.jsonschema`).

The first 26 fields are the legacy system's CSV columns under their legacy names. Fields
after them are additions the incident categories need.

Beyond the fixed fields a record may carry ``extra``: an open map of further numeric metrics
(``{"name": finite number}``) for telemetry that is not DWCP (a server's 19 unnamed metrics, a
new sensor). Its rules (:data:`EXTRA_NAME_PATTERN`, at most :data:`EXTRA_MAX` names, finite
numbers only, no name of a fixed field) are checked by both paths and the JSON Schema. The
name ``extra`` says what it is (metrics *beyond* the schema), does not clash with
``top_metrics`` in alerts or the Prometheus ``/metrics`` endpoint, and is short on the wire.

Examples
--------
>>> rec = decode_telemetry(b'{"timestamp": "2026-01-05T10:00:00Z", "node_id": "n-001", '
...                        b'"rtt_ms": 12.5, "link_type": "wan"}')
>>> rec.node_id, rec.rtt_ms, rec.timestamp.isoformat()
('n-001', 12.5, '2026-01-05T10:00:00+00:00')
>>> FIELD_BY_NAME["packet_loss"].unit, FIELD_BY_NAME["packet_loss"].max
('fraction', 1.0)
>>> decode_telemetry(b'{"timestamp": "2026-01-05T10:00:00Z", "node_id": "n-001", '
...                  b'"extra": {"m01": 0.5, "gc.pauses_total": 7}}').extra
{'m01': 0.5, 'gc.pauses_total': 7.0}
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

SCHEMA_VERSION = 1

LINK_TYPES = ("dc", "metro", "wan", "edge")
DWCP_MODES = ("datacenter", "internet", "hybrid")
NETWORK_TIERS = ("tier1", "tier2", "tier3")
TRANSPORT_TYPES = ("tcp", "rdma", "quic")

#: Event times outside this window are rejected as implausible (clock bugs, epoch zero).
MIN_TIME = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
MAX_TIME = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)

_MAX_BYTES = 10**18


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One telemetry field: name, kind, unit, valid range and description.

    ``kind`` is one of ``"time"``, ``"str"``, ``"enum"``, ``"float"``, ``"int"``.
    ``min``/``max`` are inclusive bounds for numeric kinds; ``choices`` lists the values of an
    ``enum``. Optional fields may be absent or ``null``; present values are always checked.
    ``counter`` says a numeric field counts something: ``"delta"`` (the amount since the
    previous sample, e.g. bytes sent in the interval) or ``"cumulative"`` (a running total
    that only a reset makes smaller); ``""`` for a gauge (a level, e.g. RTT or CPU use).
    """

    name: str
    kind: str
    unit: str
    description: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    required: bool = False
    legacy: bool = True
    counter: str = ""

    @property
    def numeric(self) -> bool:
        return self.kind in ("float", "int")


def _f(name: str, unit: str, lo: float, hi: float, desc: str, kind: str = "float", legacy: bool = True) -> FieldSpec:
    return FieldSpec(name, kind, unit, desc, float(lo), float(hi), legacy=legacy)


def _i(
    name: str, unit: str, lo: int, hi: int, desc: str, legacy: bool = True, counter: str = ""
) -> FieldSpec:
    return FieldSpec(name, "int", unit, desc, float(lo), float(hi), legacy=legacy, counter=counter)


def _e(name: str, choices: tuple[str, ...], desc: str) -> FieldSpec:
    return FieldSpec(name, "enum", "", desc, choices=choices)


def _s(name: str, desc: str, required: bool = False) -> FieldSpec:
    return FieldSpec(name, "str", "", desc, required=required)


#: The schema, in wire order. Ranges are *validity* limits (what a sane sensor can report),
#: not typical operating ranges; models learn the latter.
FIELDS: tuple[FieldSpec, ...] = (
    # --- the 26 legacy columns -------------------------------------------------------------
    FieldSpec("timestamp", "time", "UTC", "Event time of the sample, RFC 3339 with an offset", required=True),
    _s("region", "Region of the reporting node, e.g. us-east"),
    _s("az", "Availability zone of the reporting node, e.g. us-east-a"),
    _e("link_type", LINK_TYPES, "Kind of link the sample measures"),
    _s("node_id", "Reporting node; the telemetry topic is keyed by it", required=True),
    _s("peer_id", "The node at the other end of the link"),
    _f("rtt_ms", "ms", 0, 60_000, "Round-trip time on the link"),
    _f("jitter_ms", "ms", 0, 60_000, "Round-trip time variation"),
    _f("throughput_mbps", "Mbit/s", 0, 1_000_000, "Achieved throughput on the link"),
    _i("bytes_tx", "bytes", 0, _MAX_BYTES, "Bytes sent in the interval", counter="delta"),
    _i("bytes_rx", "bytes", 0, _MAX_BYTES, "Bytes received in the interval", counter="delta"),
    _f("packet_loss", "fraction", 0, 1, "Share of packets lost in the interval"),
    _i("retransmits", "count", 0, 10**12, "TCP/transport retransmissions in the interval", counter="delta"),
    _i("congestion_window", "segments", 0, 2**31, "Sender congestion window"),
    _i("queue_depth", "packets", 0, 10**9, "Send queue depth"),
    _e("dwcp_mode", DWCP_MODES, "DWCP operating mode of the link"),
    _e("network_tier", NETWORK_TIERS, "Network tier of the link"),
    _e("transport_type", TRANSPORT_TYPES, "Transport in use"),
    _f("hde_compression_ratio", "ratio", 0, 1000, "HDE compression ratio (raw / compressed bytes)"),
    _f("hde_delta_hit_rate", "fraction", 0, 1, "Share of pages served by delta encoding"),
    _i("amst_streams", "count", 0, 4096, "Parallel AMST transfer streams"),
    _f("amst_transfer_rate", "Mbit/s", 0, 1_000_000, "Aggregate AMST transfer rate"),
    _f("error_budget_burn_rate", "ratio", 0, 10_000, "SLO error-budget burn rate (1 = on budget)"),
    _f("uptime_pct", "percent", 0, 100, "Availability over the trailing hour"),
    _f("failure_rate", "fraction", 0, 1, "Share of failed transfer operations in the interval"),
    _f("consensus_latency_ms", "ms", 0, 600_000, "Latency of the last consensus round"),
    # --- additions the incident categories need -------------------------------------------
    _f("cpu_util", "percent", 0, 100, "CPU utilisation of the node", legacy=False),
    _f("mem_util", "percent", 0, 100, "Memory utilisation of the node", legacy=False),
    _f("disk_util", "percent", 0, 100, "Disk utilisation of the node's data volume", legacy=False),
    _i("error_count", "count", 0, 10**9, "Errors logged by the node in the interval", legacy=False, counter="delta"),
    _f("uptime_s", "s", 0, 10**10, "Seconds since the node (re)started", legacy=False),
)

FIELD_BY_NAME: dict[str, FieldSpec] = {f.name: f for f in FIELDS}
LEGACY_COLUMNS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.legacy)
NUMERIC_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.numeric)
REQUIRED_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.required)
COUNTER_KINDS = ("delta", "cumulative")

#: The open map of further numeric metrics (see the module docstring).
EXTRA_FIELD = "extra"
#: Lower-case, starts with a letter, then letters, digits, ``_`` and ``.``; 1-64 characters.
EXTRA_NAME_PATTERN = r"^[a-z][a-z0-9_.]{0,63}$"
EXTRA_MAX = 64
#: Names an extra metric may not take: the fixed fields (and ``extra`` itself).
EXTRA_RESERVED: frozenset[str] = frozenset(FIELD_BY_NAME) | {EXTRA_FIELD}
#: Extra metrics named ``*_total`` are cumulative counters (the Prometheus/OpenMetrics
#: convention); every other extra metric is a gauge.
EXTRA_COUNTER_SUFFIX = "_total"
_FLOAT_MAX = 1.7976931348623157e308  # the largest finite double: bounds reject overflow to inf
_EXTRA_NAME = re.compile(EXTRA_NAME_PATTERN)


def extra_counter(name: str) -> str:
    """The counter kind of extra metric ``name`` (``"cumulative"`` for ``*_total``, else ``""``).

    >>> extra_counter("gc.pauses_total"), extra_counter("m01")
    ('cumulative', '')
    """
    return "cumulative" if name.endswith(EXTRA_COUNTER_SUFFIX) else ""


def extra_name_reason(name: str) -> str | None:
    """Why ``name`` cannot name an extra metric, or ``None`` if it can.

    >>> extra_name_reason("m01"), extra_name_reason("rtt_ms")
    (None, "name 'rtt_ms' is a schema field: send it as a top-level field")
    """
    if name in EXTRA_RESERVED:
        return f"name {name!r} is a schema field: send it as a top-level field"
    if not _EXTRA_NAME.match(name):
        return f"name {name[:80]!r} does not match {EXTRA_NAME_PATTERN}"
    return None


def _annotation(spec: FieldSpec) -> Any:
    extra: dict[str, str] = {"x-unit": spec.unit} if spec.unit else {}
    if spec.counter:
        extra["x-counter"] = spec.counter
    meta: dict[str, Any] = {"description": spec.description}
    if extra:
        meta["extra_json_schema"] = extra
    if spec.kind == "time":
        return Annotated[dt.datetime, msgspec.Meta(tz=True, **meta)]
    if spec.kind == "str":
        return Annotated[str, msgspec.Meta(min_length=1, max_length=256, **meta)]
    if spec.kind == "enum":
        return Annotated[Literal[spec.choices], msgspec.Meta(**meta)]  # type: ignore[valid-type]
    base = int if spec.kind == "int" else float
    lo = int(spec.min) if base is int else spec.min  # type: ignore[arg-type]
    hi = int(spec.max) if base is int else spec.max  # type: ignore[arg-type]
    return Annotated[base, msgspec.Meta(ge=lo, le=hi, **meta)]


def _post_init(self: Any) -> None:
    # msgspec guarantees a tz-aware datetime; normalise to UTC and reject implausible times.
    # (An identity check, not utcoffset(): this runs for every record on the hot path.)
    ts = self.timestamp
    if ts.tzinfo is not dt.UTC:
        ts = self.timestamp = ts.astimezone(dt.UTC)
    if not MIN_TIME <= ts < MAX_TIME:
        raise ValueError(f"timestamp {ts.isoformat()} is outside [{MIN_TIME.year}, {MAX_TIME.year})")
    extra = self.extra
    if extra is not None:  # msgspec checked the pattern, the count and the bounds
        for name in extra.keys() & EXTRA_RESERVED:
            raise ValueError(f"extra: {extra_name_reason(name)}")
        for name, value in extra.items():
            if not math.isfinite(value):  # not reachable from JSON; msgspec.convert could
                raise ValueError(f"extra.{name}: {value!r} is not a finite number")


def _struct_fields() -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for spec in FIELDS:
        ann = _annotation(spec)
        out.append((spec.name, ann) if spec.required else (spec.name, ann | None, None))
    name = Annotated[str, msgspec.Meta(pattern=EXTRA_NAME_PATTERN)]
    value = Annotated[float, msgspec.Meta(ge=-_FLOAT_MAX, le=_FLOAT_MAX)]
    extra = Annotated[
        dict[name, value],  # type: ignore[valid-type]
        msgspec.Meta(
            max_length=EXTRA_MAX,
            description="Further numeric metrics, name -> finite number (not DWCP fields)",
            extra_json_schema={"x-counter-suffix": EXTRA_COUNTER_SUFFIX},
        ),
    ]
    out.append((EXTRA_FIELD, extra | None, None))
    # msgspec wants required fields first; wire order is kept by FIELDS for everything else.
    return sorted(out, key=lambda f: len(f) == 3)


#: One telemetry sample. Unknown extra keys are ignored (forward compatibility); absent
#: optional fields are ``None``.
Telemetry = msgspec.defstruct(
    "Telemetry",
    _struct_fields(),
    kw_only=True,
    omit_defaults=True,
    gc=False,  # scalars and a str -> float dict: no reference cycles possible, cheaper allocation
    namespace={"__post_init__": _post_init, "__doc__": "One telemetry sample (see FIELDS)."},
)

_decoder = msgspec.json.Decoder(Telemetry)


def decode_telemetry(data: bytes) -> Any:
    """Decode and validate one JSON telemetry record (fast path).

    Raises ``msgspec.ValidationError`` / ``msgspec.DecodeError`` on the first problem; use
    :func:`stream.validation.validate_telemetry` for the full per-field list.
    """
    return _decoder.decode(data)


def decode_telemetry_lines(data: bytes) -> list[Any]:
    """Decode newline-delimited JSON telemetry in one call (all-or-nothing)."""
    return _decoder.decode_lines(data)


def telemetry_to_dict(rec: Any) -> dict[str, Any]:
    """A plain dict of the fields that are present (``None`` fields dropped)."""
    return {k: v for k, v in msgspec.structs.asdict(rec).items() if v is not None}
