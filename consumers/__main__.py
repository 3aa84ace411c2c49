"""``python -m consumers run NAME [NAME ...] [flags]``: several processors in one process.

One consumer group (``dwcp-<a>+<b>...``), one poll and one validation per record for all of
them; a batch is committed once every processor's outputs are flushed, and a bad record becomes
one dead letter for the group. Each processor's own flags are prefixed with its name
(``--bandwidth.warmup-windows 3000``); the common flags (source, limits, state, connection)
are shared. ``python -m consumers run --help`` lists the processors;
``python -m consumers run reliability bandwidth --help`` their flags. One process per
processor (``python -m consumers.<name>``) stays the way to scale one model out.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from stream import app


def processors() -> dict[str, type[app.Processor]]:
    """Every processor by name (imported here, so ``--help`` can list them)."""
    from consumers.bandwidth import BandwidthProcessor
    from consumers.compression import CompressionProcessor
    from consumers.consensus import ConsensusProcessor
    from consumers.ingest import IngestProcessor
    from consumers.reliability import ReliabilityProcessor

    classes: list[type[app.Processor]] = [
        IngestProcessor,
        ReliabilityProcessor,
        ConsensusProcessor,
        BandwidthProcessor,
        CompressionProcessor,
    ]
    return {c.name: c for c in classes}


USAGE = """usage: python -m consumers run NAME [NAME ...] [flags]

Run the named processors in one process, one consumer group, one decode per record.
Processors: {names}.
  python -m consumers run reliability bandwidth consensus compression --from-beginning
  python -m consumers run reliability bandwidth --help      (their flags)
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``run`` then processor names, then flags."""
    args = list(sys.argv[1:] if argv is None else argv)
    known = processors()
    if not args or args[0] != "run":
        print(USAGE.format(names=", ".join(known)), file=sys.stderr)
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    names: list[str] = []
    rest = args[1:]
    while rest and not rest[0].startswith("-"):
        names.append(rest.pop(0))
    unknown = [n for n in names if n not in known]
    if not names and rest[:1] in (["-h"], ["--help"]):
        print(USAGE.format(names=", ".join(known)))
        return 0
    if unknown or not names:
        what = f"unknown processor(s): {', '.join(unknown)}" if unknown else "no processor named"
        print(f"error: {what} (known: {', '.join(known)})", file=sys.stderr)
        return 2
    if len(set(names)) != len(names):
        print(f"error: a processor is named twice: {' '.join(names)}", file=sys.stderr)
        return 2
    chosen = [known[n] for n in names]
    prog = "python -m consumers run " + " ".join(names)
    return app.main(chosen, rest, prog)


if __name__ == "__main__":
    sys.exit(main())
