"""Where the simulated fleet's nodes live and which links they report on.

Nodes are spread round-robin over regions and availability zones. Each node reports on a
fixed number of links; the link type follows from geography: ``dc`` (same AZ), ``metro``
(same region, other AZ), ``wan`` (other region) and ``edge`` (an edge site that is not a
fleet node and reports nothing itself). Per-link categorical fields (``dwcp_mode``,
``network_tier``, ``transport_type``) and base characteristics (propagation RTT, capacity)
are drawn once and never change.

Examples
--------
>>> import numpy as np
>>> topo = build_topology(12, np.random.default_rng(0), regions=2, azs_per_region=3)
>>> topo.n_nodes, topo.n_links, topo.node_ids[:2], topo.node_az[:2]
(12, 48, ['n-001', 'n-002'], ['us-east-a', 'eu-west-a'])
>>> sorted(set(topo.link_type_name))
['dc', 'edge', 'metro', 'wan']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream.schema import LINK_TYPES


@dataclass(frozen=True)
class Region:
    name: str
    utc_offset_h: float  # drives the local diurnal and weekly cycle
    position: float  # place on a ring of circumference 1; WAN RTT grows with ring distance


#: In the order a fleet of ``--regions R`` uses the first R of them.
REGIONS: tuple[Region, ...] = (
    Region("us-east", -5.0, 0.25),
    Region("eu-west", 0.0, 0.42),
    Region("ap-south", 5.5, 0.70),
    Region("us-west", -8.0, 0.10),
    Region("eu-central", 1.0, 0.46),
    Region("ap-northeast", 9.0, 0.92),
    Region("sa-east", -3.0, 0.32),
)
MAX_AZS = 6
EDGE_SITES_PER_REGION = 8


@dataclass(frozen=True)
class LinkClass:
    """Base characteristics of one link type (ranges are drawn log-uniformly per link)."""

    rtt_ms: tuple[float, float]  # propagation RTT (wan: from geography instead)
    capacity_mbps: tuple[float, float]
    queue_ms: float  # extra RTT when the bottleneck queue is full
    queue_pkts: float  # queue depth at full congestion
    base_loss: float  # loss fraction on an idle link
    streams: tuple[int, int]  # AMST parallel streams at nominal load
    regime_per_h: float  # how often available bandwidth shifts to a new level
    regime_low: float  # lowest level (fraction of capacity) a shift can go to
    # (dwcp_mode, network_tier, transport_type) choices with weights
    modes: tuple[tuple[str, float], ...]
    tiers: tuple[tuple[str, float], ...]
    transports: tuple[tuple[str, float], ...]


LINK_CLASSES: dict[str, LinkClass] = {
    "dc": LinkClass(
        (0.2, 1.0),
        (10_000, 100_000),
        2.0,
        3000,
        2e-6,
        (2, 8),
        0.02,
        0.75,
        (("datacenter", 1.0),),
        (("tier1", 1.0),),
        (("rdma", 0.7), ("tcp", 0.3)),
    ),
    "metro": LinkClass(
        (1.0, 5.0),
        (5_000, 40_000),
        6.0,
        2500,
        1e-5,
        (4, 16),
        0.05,
        0.6,
        (("datacenter", 0.6), ("hybrid", 0.4)),
        (("tier1", 0.7), ("tier2", 0.3)),
        (("tcp", 0.7), ("rdma", 0.2), ("quic", 0.1)),
    ),
    "wan": LinkClass(
        (30.0, 150.0),
        (500, 10_000),
        60.0,
        2000,
        1e-4,
        (8, 64),
        0.2,
        0.45,
        (("internet", 0.6), ("hybrid", 0.4)),
        (("tier2", 0.7), ("tier1", 0.3)),
        (("tcp", 0.5), ("quic", 0.5)),
    ),
    "edge": LinkClass(
        (10.0, 60.0),
        (50, 500),
        80.0,
        800,
        5e-4,
        (2, 8),
        0.25,
        0.4,
        (("internet", 1.0),),
        (("tier3", 1.0),),
        (("quic", 0.7), ("tcp", 0.3)),
    ),
}

#: Compression effort of HDE per DWCP mode (datacenter links barely compress).
MODE_COMPRESSION = {"datacenter": 0.25, "hybrid": 0.7, "internet": 1.0}


@dataclass(frozen=True, eq=False)
class Topology:
    """Nodes and links. Links of node ``i`` are rows ``i*K .. i*K+K-1`` (K = links per node)."""

    node_ids: list[str]
    node_region: np.ndarray  # (N,) index into regions
    node_region_name: list[str]
    node_az: list[str]
    region_utc_offset_h: np.ndarray  # (N,)
    links_per_node: int
    link_node: np.ndarray  # (L,) reporting node index
    link_peer: np.ndarray  # (L,) peer node index, -1 for edge sites
    link_peer_id: list[str]
    link_type: np.ndarray  # (L,) index into LINK_TYPES
    link_type_name: list[str]
    link_mode: list[str]
    link_tier: list[str]
    link_transport: list[str]
    base_rtt_ms: np.ndarray  # (L,)
    capacity_mbps: np.ndarray  # (L,)

    @property
    def n_nodes(self) -> int:
        return len(self.node_ids)

    @property
    def n_links(self) -> int:
        return len(self.link_peer_id)

    def links_of(self, node: int) -> range:
        k = self.links_per_node
        return range(node * k, node * k + k)


def _pick(rng: np.random.Generator, choices: tuple[tuple[str, float], ...]) -> str:
    names = [c[0] for c in choices]
    p = np.array([c[1] for c in choices])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _wan_rtt(a: Region, b: Region, rng: np.random.Generator) -> float:
    d = abs(a.position - b.position)
    d = min(d, 1.0 - d)  # ring distance in [0, 0.5]
    return (30.0 + 240.0 * d) * rng.uniform(0.92, 1.08)


def build_topology(
    n_nodes: int,
    rng: np.random.Generator,
    *,
    regions: int = 4,
    azs_per_region: int = 3,
    links_per_node: int = 4,
) -> Topology:
    """Place ``n_nodes`` nodes and choose ``links_per_node`` distinct peers for each."""
    if n_nodes < 1:
        raise ValueError(f"nodes must be >= 1, got {n_nodes}")
    if not 1 <= regions <= len(REGIONS):
        raise ValueError(f"regions must be in 1..{len(REGIONS)}, got {regions}")
    if not 1 <= azs_per_region <= MAX_AZS:
        raise ValueError(f"azs_per_region must be in 1..{MAX_AZS}, got {azs_per_region}")
    if not 1 <= links_per_node <= EDGE_SITES_PER_REGION:
        raise ValueError(
            f"links_per_node must be in 1..{EDGE_SITES_PER_REGION}, got {links_per_node}"
        )
    regs = REGIONS[:regions]
    width = max(3, len(str(n_nodes)))
    node_ids = [f"n-{i + 1:0{width}d}" for i in range(n_nodes)]
    node_region = np.arange(n_nodes) % regions
    node_az_idx = (np.arange(n_nodes) // regions) % azs_per_region
    node_az = [
        f"{regs[r].name}-{'abcdef'[a]}" for r, a in zip(node_region, node_az_idx, strict=True)
    ]

    # Preferred link types per slot; later slots alternate wan/edge, then anything left.
    preference = ["dc", "metro", "wan", "edge", "wan", "edge", "metro", "dc"]
    peers: list[int] = []
    peer_ids: list[str] = []
    types: list[str] = []
    rtts: list[float] = []
    by_az: dict[str, list[int]] = {}
    by_region: dict[int, list[int]] = {}
    for j in range(n_nodes):
        by_az.setdefault(node_az[j], []).append(j)
        by_region.setdefault(int(node_region[j]), []).append(j)
    for i in range(n_nodes):
        r, az = int(node_region[i]), node_az[i]
        cands = {
            "dc": [j for j in by_az[az] if j != i],
            "metro": [j for j in by_region[r] if node_az[j] != az],
            "wan": [j for j in range(n_nodes) if node_region[j] != r],
        }
        edge_sites = list(rng.permutation(EDGE_SITES_PER_REGION))
        chosen: set[int] = set()
        for slot in range(links_per_node):
            order = [preference[slot]] + [
                t for t in ("dc", "metro", "wan") if t != preference[slot]
            ]
            ltype, peer = "edge", -1
            for t in order:
                if t == "edge":
                    break
                free = [j for j in cands[t] if j not in chosen]
                if free:
                    ltype, peer = t, int(free[int(rng.integers(len(free)))])
                    break
            chosen.add(peer)
            cls = LINK_CLASSES[ltype]
            if ltype == "edge":
                site = int(edge_sites.pop())
                peer_ids.append(f"edge-{regs[r].name}-{site + 1:02d}")
                rtts.append(_loguniform(rng, *cls.rtt_ms))
            else:
                peer_ids.append(node_ids[peer])
                if ltype == "wan":
                    rtts.append(_wan_rtt(regs[r], regs[int(node_region[peer])], rng))
                else:
                    rtts.append(_loguniform(rng, *cls.rtt_ms))
            peers.append(peer)
            types.append(ltype)

    caps = [_loguniform(rng, *LINK_CLASSES[t].capacity_mbps) for t in types]
    modes = [_pick(rng, LINK_CLASSES[t].modes) for t in types]
    tiers = [_pick(rng, LINK_CLASSES[t].tiers) for t in types]
    transports = [_pick(rng, LINK_CLASSES[t].transports) for t in types]
    return Topology(
        node_ids=node_ids,
        node_region=node_region,
        node_region_name=[regs[r].name for r in node_region],
        node_az=node_az,
        region_utc_offset_h=np.array([regs[r].utc_offset_h for r in node_region]),
        links_per_node=links_per_node,
        link_node=np.repeat(np.arange(n_nodes), links_per_node),
        link_peer=np.array(peers, dtype=np.intp),
        link_peer_id=peer_ids,
        link_type=np.array([LINK_TYPES.index(t) for t in types], dtype=np.intp),
        link_type_name=types,
        link_mode=modes,
        link_tier=tiers,
        link_transport=transports,
        base_rtt_ms=np.array(rtts),
        capacity_mbps=np.array(caps),
    )
