"""The transfer-time model: how long a transfer takes on a link with each codec.

For a transfer of ``D`` uncompressed bytes with action ``a`` on a link in state ``s``::

    time(a, s) = compress + rtt + wire bytes / goodput + decompress

* **Payload.** The bytes are a mixture of the measured payload classes (see
  :class:`~models.compression.codecs.CodecTable`). A share ``hde_delta_hit_rate`` of the pages
  are delta hits, shipped as XOR deltas against their previous version: zero-heavy pages
  (class ``zero``). The other pages are placed on the chain ``compressed -> memory -> text ->
  zero`` (ordered by compressibility) so that the reference codec (zstd-3, DWCP's default)
  reaches ``hde_compression_ratio`` on them: the telemetry's ratio is read as the reference
  codec's ratio on the pages that were not delta hits.
* **CPU.** Compression runs on the sender's idle cores, ``cores * (1 - cpu_util/100)`` (at
  least ``min_cores``), one stream per core at most (``amst_streams``); decompression on
  ``receiver_cores`` (the receiver's load is not in the sender's telemetry). Per-core speeds
  are the measured ones.
* **Network.** ``goodput = min(throughput, Mathis) * (1 - loss)``, with the Mathis et al. bound
  of ``amst_streams`` TCP-like streams, ``streams * MSS * C / (rtt * sqrt(loss))``, plus one
  round trip. ``throughput_mbps`` is read as the bandwidth available to the transfer.

The stages are added, not overlapped (a conservative bound: a pipelined sender overlaps them).
The best action for a state is the one with the least time.

Examples
--------
A busy WAN link carrying memory pages, and an idle datacenter link:

>>> model = TransferModel()
>>> wan = [400.0, 120.0, 5e-4, 16, 40.0, 1.8, 0.5]     # see STATE_FIELDS
>>> dc = [20000.0, 0.3, 1e-6, 4, 85.0, 1.2, 0.1]
>>> t = model.times([wan, dc])
>>> [model.table.names[i] for i in t.argmin(axis=1)]
['zstd-3', 'none']
>>> (t[0] / t[0].min()).round(2).tolist()               # time relative to the best, WAN
[3.28, 1.15, 1.03, 1.0, 1.02, 1.5]
>>> round(float(t[1].min()), 3), round(float(t[1, model.table.index("zstd-3")]), 3)  # s, DC
(0.027, 0.079)
"""

from __future__ import annotations

import numpy as np

from models.compression.codecs import CodecTable, load_codec_table
from models.compression.states import STATE_FIELDS

__all__ = ["TransferModel"]


class TransferModel:
    """Expected transfer time of each codec action for link states (pure numpy, vectorised).

    Parameters
    ----------
    table
        The measured codec table (default: the committed one).
    transfer_mib
        Uncompressed size of the transfer being planned, MiB.
    cores
        Cores of a sender node; the idle share of them compresses.
    min_cores
        Cores a saturated sender still gets for compression.
    receiver_cores
        Cores the receiver decompresses on.
    reference
        Action whose ratio ``hde_compression_ratio`` is read as.
    mss_bytes, mathis_c
        Segment size and constant of the Mathis throughput bound.
    min_throughput_mbps
        Floor on the link's bandwidth (a stalled link is not infinitely slow).
    """

    def __init__(
        self,
        table: CodecTable | None = None,
        *,
        transfer_mib: float = 64.0,
        cores: float = 8.0,
        min_cores: float = 0.25,
        receiver_cores: float = 4.0,
        reference: str = "zstd-3",
        mss_bytes: float = 1448.0,
        mathis_c: float = 1.22,
        min_throughput_mbps: float = 0.1,
    ) -> None:
        self.table = table if table is not None else load_codec_table()
        self.transfer_mib = transfer_mib
        self.cores = cores
        self.min_cores = min_cores
        self.receiver_cores = receiver_cores
        self.reference = reference
        self.mss_bytes = mss_bytes
        self.mathis_c = mathis_c
        self.min_throughput_mbps = min_throughput_mbps
        t = self.table
        ref = t.ratio[t.index(reference)]
        # Chain of classes ordered by compressibility; knots are compressed fractions 1/ratio.
        self._order = np.argsort(ref, kind="stable")  # least compressible first
        self._knots = 1.0 / ref[self._order]  # decreasing
        self._zero = t.classes.index("zero") if "zero" in t.classes else int(self._order[-1])

    @property
    def names(self) -> tuple[str, ...]:
        """Action names, in output column order."""
        return self.table.names

    def mixture(self, states: np.ndarray) -> np.ndarray:
        """Share of the transfer's bytes in each payload class, shape ``(n, n_classes)``."""
        s = _as_states(states)
        ratio = np.maximum(s[:, 5], 1.0)
        hit = np.clip(s[:, 6], 0.0, 1.0)
        g = 1.0 / ratio  # target compressed fraction of the non-hit pages
        knots = self._knots[::-1]  # increasing, for np.interp
        w = np.zeros((len(s), len(self.table.classes)))
        for k, cls in enumerate(self._order):
            onehot = np.zeros(len(knots))
            onehot[len(knots) - 1 - k] = 1.0
            w[:, cls] = np.interp(g, knots, onehot)  # clamps at the ends of the chain
        w *= (1.0 - hit)[:, None]
        w[:, self._zero] += hit
        return w

    def times(self, states: np.ndarray, *, parts: bool = False) -> np.ndarray:
        """Seconds per transfer, shape ``(n, n_actions)``; ``parts`` adds a leading axis of 3.

        With ``parts=True`` the result is ``(3, n, n_actions)``: compress, network and
        decompress seconds, which add up to the total.
        """
        s = _as_states(states)
        t = self.table
        w = self.mixture(s)
        mb = self.transfer_mib * 1.048576  # MB (1e6 bytes) per transfer
        tput, rtt_ms, loss, streams, cpu = (s[:, i] for i in range(5))
        streams = np.maximum(streams, 1.0)
        idle = self.cores * (1.0 - np.clip(cpu, 0.0, 100.0) / 100.0)
        send_cores = np.minimum(streams, np.maximum(idle, self.min_cores))
        recv_cores = np.minimum(streams, self.receiver_cores)
        comp = mb * (w @ t.compress_s_per_mb.T) / send_cores[:, None]
        decomp = mb * (w @ t.decompress_s_per_mb.T) / recv_cores[:, None]
        wire_mb = mb * (w @ (1.0 / t.ratio).T)
        rtt = np.maximum(rtt_ms, 0.0) / 1e3
        loss = np.clip(loss, 0.0, 0.99)
        bw = np.maximum(tput, self.min_throughput_mbps) / 8.0  # MB/s
        with np.errstate(divide="ignore"):
            mathis = (
                streams
                * self.mss_bytes
                * self.mathis_c
                / (np.maximum(rtt, 1e-5) * np.sqrt(loss))
                / 1e6
            )
        goodput = np.minimum(bw, mathis) * (1.0 - loss)
        net = rtt[:, None] + wire_mb / goodput[:, None]
        if parts:
            return np.stack([comp, net, decomp])
        return comp + net + decomp

    def best(self, states: np.ndarray) -> np.ndarray:
        """Index of the fastest action for each state."""
        return self.times(states).argmin(axis=1)


def _as_states(states: np.ndarray) -> np.ndarray:
    s = np.asarray(states, dtype=np.float64)
    if s.ndim == 1:
        s = s[None, :]
    if s.ndim != 2 or s.shape[1] != len(STATE_FIELDS):
        raise ValueError(f"states must have shape (n, {len(STATE_FIELDS)}), got {s.shape}")
    return s
