"""Measure the real compressors and write the codec table (``models/compression/codecs.json``).

For each payload class that resembles VM-migration traffic, and each action the DWCP
delta-encoding layer can take (no compression, LZ4, zstd at several levels), compress and
decompress a generated payload chunk by chunk with the real ``lz4`` and ``zstandard`` libraries
on one core, and record the compression ratio and the compress/decompress throughput (MB/s of
*uncompressed* data, 1 MB = 1e6 bytes).

Payload classes (seeded numpy generators, no files):

* ``compressed``: already-compressed data (zlib level 6 output of mixed text and memory
  pages, e.g. compressed caches, media, encrypted volumes behave alike): ratio ~1.
* ``memory``: 4 KiB pages of a running process: heap words (pointers, small integers,
  doubles, zero padding), code-like byte streams, sparse data pages, and a share of
  high-entropy pages (keys, buffers).
* ``text``: log and configuration text (timestamps, levels, identifiers, numbers).
* ``zero``: zero-heavy pages (freshly allocated pages, page deltas after delta encoding):
  mostly zero with a few short dirty runs.

Usage::

    python bench/measure_codecs.py                      # rewrites models/compression/codecs.json
    python bench/measure_codecs.py --output /tmp/c.json --payload-mib 1 --repeats 3   # quick look

Timings on a shared machine are noisy; the host is recorded with them. The table's
``compress_mbps``/``decompress_mbps`` come from the *fastest* of the ``--repeats`` runs: a
codec is a deterministic CPU-bound function, so other processes on the core can only slow a
run down, and the fastest run is the best estimate of one uncontended core (the medians are
kept beside them as ``*_median``). The ratios are exact and reproducible for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import lz4
import lz4.block
import numpy as np
import zstandard

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "models" / "compression" / "codecs.json"
PAGE = 4096

#: (name, codec, level). ``none`` is not measured: ratio 1 and no CPU time.
ACTIONS: tuple[tuple[str, str, int], ...] = (
    ("none", "none", 0),
    ("lz4", "lz4", 0),
    ("zstd-1", "zstd", 1),
    ("zstd-3", "zstd", 3),
    ("zstd-9", "zstd", 9),
    ("zstd-19", "zstd", 19),
)

DESCRIPTIONS = {
    "compressed": "already-compressed data: zlib level 6 output of mixed text and memory pages",
    "memory": "4 KiB process-memory pages: heap words, code-like bytes, sparse data, 15% high-entropy",
    "text": "log and configuration text",
    "zero": "zero-heavy pages (fresh allocations, page deltas): ~97% zero bytes in short dirty runs",
}

_WORDS = (
    "migration vm page dirty round copy delta stream link node peer region zone transfer "
    "commit checkpoint snapshot memory disk cpu network queue worker task request response "
    "error warning info debug timeout retry connection established closed bytes sent received "
    "latency throughput bandwidth compression ratio level codec frame block chunk offset"
).split()
_LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")


def text_payload(n: int, rng: np.random.Generator) -> bytes:
    """Log-like lines until ``n`` bytes."""
    out: list[str] = []
    size, t = 0, 1_767_571_200.0
    while size < n:
        t += float(rng.exponential(0.05))
        stamp = dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        words = " ".join(_WORDS[int(i)] for i in rng.integers(0, len(_WORDS), rng.integers(4, 12)))
        line = (
            f"{stamp}Z {_LEVELS[int(rng.integers(len(_LEVELS)))]} [worker-{int(rng.integers(32))}] "
            f"{words} id={int(rng.integers(1 << 40)):010x} took={float(rng.gamma(2.0, 8.0)):.2f}ms\n"
        )
        out.append(line)
        size += len(line)
    return "".join(out).encode()[:n]


def _heap_page(rng: np.random.Generator) -> bytes:
    words = np.zeros(PAGE // 8, dtype=np.uint64)
    kind = rng.choice(5, size=words.size, p=[0.3, 0.25, 0.25, 0.1, 0.1])
    base = np.uint64(0x00007F0000000000) + np.uint64(int(rng.integers(1 << 28)) << 12)
    ptr = base + (rng.integers(0, 1 << 20, words.size).astype(np.uint64) << np.uint64(4))
    words = np.where(kind == 0, ptr, words)
    words = np.where(kind == 1, rng.integers(0, 1024, words.size).astype(np.uint64), words)
    doubles = rng.normal(100.0, 50.0, words.size).round(2).view(np.uint64)
    words = np.where(kind == 3, doubles, words)
    words = np.where(kind == 4, rng.integers(0, 1 << 63, words.size, dtype=np.uint64), words)
    return words.tobytes()  # kind 2: zero padding


def _code_page(rng: np.random.Generator) -> bytes:
    # Skewed byte distribution plus repeated short idioms, like machine code.
    p = 1.0 / np.arange(1, 257) ** 1.1
    body = rng.choice(256, size=PAGE, p=p / p.sum()).astype(np.uint8)
    idioms = [rng.integers(0, 256, int(rng.integers(3, 9))).astype(np.uint8) for _ in range(24)]
    pos = 0
    while pos < PAGE - 16:
        pos += int(rng.integers(4, 40))
        idiom = idioms[int(rng.integers(len(idioms)))]
        body[pos : pos + idiom.size] = idiom[: max(0, PAGE - pos)]
    return body.tobytes()


def _sparse_page(rng: np.random.Generator) -> bytes:
    page = np.zeros(PAGE, dtype=np.uint8)
    for _ in range(int(rng.integers(4, 40))):
        at, n = int(rng.integers(PAGE - 64)), int(rng.integers(4, 64))
        page[at : at + n] = rng.integers(0, 256, n)
    return page.tobytes()


def memory_payload(n: int, rng: np.random.Generator) -> bytes:
    """Process-memory pages until ``n`` bytes."""
    makers: list[Callable[[np.random.Generator], bytes]] = [
        _heap_page,
        _code_page,
        _sparse_page,
        lambda r: r.bytes(PAGE),
    ]
    probs = [0.4, 0.25, 0.2, 0.15]
    pages = [makers[int(rng.choice(4, p=probs))](rng) for _ in range(-(-n // PAGE))]
    return b"".join(pages)[:n]


def zero_payload(n: int, rng: np.random.Generator) -> bytes:
    """Zero-heavy pages until ``n`` bytes."""
    buf = np.zeros(n, dtype=np.uint8)
    for page in range(0, n, PAGE):
        for _ in range(int(rng.integers(0, 8))):
            at, k = page + int(rng.integers(PAGE - 32)), int(rng.integers(8, 32))
            buf[at : at + k] = rng.integers(0, 256, k)
    return buf.tobytes()


def compressed_payload(n: int, rng: np.random.Generator) -> bytes:
    """zlib output of mixed text and memory until ``n`` bytes."""
    parts: list[bytes] = []
    size = 0
    while size < n:
        src = (
            text_payload(256 * 1024, rng) if rng.random() < 0.5 else memory_payload(256 * 1024, rng)
        )
        part = zlib.compress(src, 6)
        parts.append(part)
        size += len(part)
    return b"".join(parts)[:n]


PAYLOADS: dict[str, Callable[[int, np.random.Generator], bytes]] = {
    "compressed": compressed_payload,
    "memory": memory_payload,
    "text": text_payload,
    "zero": zero_payload,
}


def _codec(
    codec: str, level: int
) -> tuple[Callable[[bytes], bytes], Callable[[bytes, int], bytes]]:
    if codec == "lz4":
        return (
            lambda b: lz4.block.compress(b, mode="default", store_size=False),
            lambda c, n: lz4.block.decompress(c, uncompressed_size=n),
        )
    comp = zstandard.ZstdCompressor(level=level)
    decomp = zstandard.ZstdDecompressor()
    return comp.compress, lambda c, n: decomp.decompress(c)


def measure(payload: bytes, codec: str, level: int, chunk: int, repeats: int) -> dict[str, float]:
    """Ratio and compress/decompress MB/s (fastest and median run), ``chunk`` bytes per call."""
    compress, decompress = _codec(codec, level)
    chunks = [payload[i : i + chunk] for i in range(0, len(payload), chunk)]
    ctimes, dtimes = [], []
    packed: list[bytes] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        packed = [compress(c) for c in chunks]
        ctimes.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for c, raw in zip(packed, chunks, strict=True):
            decompress(c, len(raw))
        dtimes.append(time.perf_counter() - t0)
    for c, raw in zip(packed, chunks, strict=True):  # the round trip is exact
        if decompress(c, len(raw)) != raw:
            raise RuntimeError(f"{codec}-{level}: round trip changed the data")
    n = len(payload)
    return {
        "ratio": round(n / sum(len(c) for c in packed), 4),
        "compress_mbps": round(n / min(ctimes) / 1e6, 2),
        "decompress_mbps": round(n / min(dtimes) / 1e6, 2),
        "compress_mbps_median": round(n / statistics.median(ctimes) / 1e6, 2),
        "decompress_mbps_median": round(n / statistics.median(dtimes) / 1e6, 2),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_table(payload_mib: float, chunk_kib: int, repeats: int, seed: int, log: bool) -> dict:
    """Measure every (action, payload class); returns the codec table as a dict."""
    n = int(payload_mib * 1024 * 1024)
    payloads = {
        name: make(n, np.random.default_rng([seed, i]))
        for i, (name, make) in enumerate(PAYLOADS.items())
    }
    measurements: dict[str, dict[str, dict[str, float]]] = {}
    for name, codec, level in ACTIONS:
        if codec == "none":
            continue
        measurements[name] = {}
        for cls, data in payloads.items():
            reps = repeats if level < 10 else max(1, min(repeats, 3))
            m = measure(data, codec, level, chunk_kib * 1024, reps)
            measurements[name][cls] = m
            if log:
                print(
                    f"{name:8s} {cls:10s} ratio {m['ratio']:8.3f}  compress "
                    f"{m['compress_mbps']:8.1f} MB/s  decompress {m['decompress_mbps']:8.1f} MB/s",
                    file=sys.stderr,
                    flush=True,
                )
    return {
        "format": 1,
        "generated": dt.datetime.now(dt.UTC)
        .replace(microsecond=0)
        .isoformat()
        .replace("+00:00", "Z"),
        "command": "python bench/measure_codecs.py "
        f"--payload-mib {payload_mib:g} --chunk-kib {chunk_kib} --repeats {repeats} --seed {seed}",
        "host": {
            "cpu": _cpu_model(),
            "python": platform.python_version(),
            "lz4": lz4.library_version_string(),
            "zstd": zstandard.ZSTD_VERSION and ".".join(map(str, zstandard.ZSTD_VERSION)),
            "python-zstandard": zstandard.__version__,
        },
        "units": {
            "compress_mbps": "MB/s of uncompressed data on one core, fastest run (1 MB = 1e6 bytes)",
            "decompress_mbps": "MB/s of uncompressed data on one core, fastest run",
            "*_median": "the same, median run",
            "ratio": "uncompressed / compressed bytes",
        },
        "payload_bytes": n,
        "chunk_bytes": chunk_kib * 1024,
        "repeats": repeats,
        "seed": seed,
        "payloads": DESCRIPTIONS,
        "actions": [{"name": a, "codec": c, "level": lv} for a, c, lv in ACTIONS],
        "measurements": measurements,
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"default {DEFAULT_OUTPUT.relative_to(ROOT)}",
    )
    p.add_argument(
        "--payload-mib", type=float, default=4.0, help="MiB per payload class (default 4)"
    )
    p.add_argument(
        "--chunk-kib", type=int, default=64, help="bytes per compress call, KiB (default 64)"
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=7,
        help="timed runs per cell (default 7; at most 3 at level >= 10)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    table = build_table(args.payload_mib, args.chunk_kib, args.repeats, args.seed, not args.quiet)
    args.output.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
