"""From a fleet :class:`~producers.fleet.Sample` to telemetry records and their JSON bytes.

Records are plain dicts in the schema's wire order (:data:`stream.schema.FIELDS`), encoded
with ``orjson`` (timestamps RFC 3339 in UTC with a ``Z``). The per-link static fields (region,
AZ, ids, link type and the categorical fields) are built once per topology.

Examples
--------
>>> from producers.fleet import Fleet, FleetConfig
>>> from stream.schema import decode_telemetry
>>> fleet = Fleet(FleetConfig(nodes=4, seed=7, incident_rate=0.0))
>>> enc = RecordEncoder(fleet.topology)
>>> recs = enc.records(fleet.step())
>>> len(recs), list(recs[0])[:5]
(16, ['timestamp', 'region', 'az', 'link_type', 'node_id'])
>>> decode_telemetry(enc.encode(recs)[0]).node_id
'n-001'
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from producers.config import Sample
from producers.topology import Topology
from stream.records import IncidentLabel
from stream.records import encode as encode_record
from stream.schema import FIELDS

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
_OPT = orjson.OPT_UTC_Z


class RecordEncoder:
    """Turns samples of one topology into record dicts, JSON values and Kafka keys."""

    def __init__(self, topology: Topology) -> None:
        t = topology
        self.topology = t
        ln = t.link_node.tolist()
        self.static: dict[str, list[Any]] = {
            "region": [t.node_region_name[i] for i in ln],
            "az": [t.node_az[i] for i in ln],
            "link_type": list(t.link_type_name),
            "node_id": [t.node_ids[i] for i in ln],
            "peer_id": list(t.link_peer_id),
            "dwcp_mode": list(t.link_mode),
            "network_tier": list(t.link_tier),
            "transport_type": list(t.link_transport),
        }
        self.link_keys = [t.node_ids[i].encode() for i in ln]
        self.link_node = t.link_node

    def records(self, sample: Sample) -> list[dict[str, Any]]:
        """The sample's records as dicts, grouped by node (links in topology order)."""
        idx = sample.links
        full = len(idx) == len(self.link_keys)
        idx_list = idx.tolist()
        times = sample.times
        cols: list[list[Any]] = []
        for name in FIELD_NAMES:
            if name == "timestamp":
                cols.append([times[i] for i in self.link_node[idx].tolist()])
            elif name in self.static:
                col = self.static[name]
                cols.append(col if full else [col[i] for i in idx_list])
            else:
                arr = sample.values[name]
                cols.append((arr if full else arr[idx]).tolist())
        names = FIELD_NAMES
        return [dict(zip(names, row, strict=True)) for row in zip(*cols, strict=True)]

    def keys(self, sample: Sample) -> list[bytes]:
        """Kafka keys (the node id, UTF-8) of the sample's records, in record order."""
        if len(sample.links) == len(self.link_keys):
            return self.link_keys
        return [self.link_keys[i] for i in sample.links.tolist()]

    @staticmethod
    def encode(records: list[dict[str, Any]]) -> list[bytes]:
        """JSON bytes of each record."""
        dumps = orjson.dumps
        return [dumps(r, option=_OPT) for r in records]


def encode_label(label: IncidentLabel) -> bytes:
    """JSON bytes of an incident label (the labels topic's value)."""
    return encode_record(label)


def as_columns(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Column arrays of decoded records (for analysis and tests)."""
    return {name: np.array([r[name] for r in records]) for name in FIELD_NAMES}
