"""The application shell over files (no broker): checkpoint rule and layout, several
processors with prefixed flags, exit codes."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import pytest

from consumers import __main__ as run_cli
from stream import app
from stream.checkpoint import CheckpointStore

LINE = '{"timestamp": "2026-01-05T10:00:%02dZ", "node_id": "n-%d", "rtt_ms": 3}\n'


def recording(tmp_path: Path, n: int = 30, bad: int = 0) -> Path:
    path = tmp_path / "r.jsonl"
    path.write_text("".join(LINE % (i % 60, i % 3) for i in range(n)) + "{oops\n" * bad)
    return path


class Count(app.Processor):
    """Counts records; its own flag ``--step`` says by how much."""

    name = "count"

    def __init__(self, settings: Any, args: argparse.Namespace, state: Any | None) -> None:
        self.step = args.step
        self.n = state or 0

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--step", type=int, default=1)

    def handle(self, batch: list[Any]) -> list[Any]:
        self.n += self.step * len(batch)
        return []

    def state(self, final: bool = False) -> Any:
        return self.n


class Other(Count):
    name = "other"


def run(classes: list[type[app.Processor]], *argv: str) -> app.App:
    a = app.App(classes, list(argv), environ={})
    a.run(install_signals=False)
    return a


def test_a_file_run_is_stateless_unless_asked(tmp_path: Path) -> None:
    path = recording(tmp_path)
    flags = ["--from-file", str(path), "--state-dir", str(tmp_path / "s")]
    assert run([Count], *flags).processors[0].n == 30
    assert run([Count], *flags).processors[0].n == 30  # no checkpoint was written or read
    assert not (tmp_path / "s").exists()
    assert run([Count], *flags, "--with-state").processors[0].n == 30
    assert run([Count], *flags, "--with-state").processors[0].n == 60  # restored, continued
    store = CheckpointStore(tmp_path / "s", "count-dwcp-count")
    wrapped, meta = store.load()
    assert wrapped == {
        "processor": "count", "format": 1, "model_version": "", "state": 60,
        "positions": {("r.jsonl", 0): (31, [])},  # lines count from 1; a file run ignores them
    }  # fmt: skip
    assert meta["why"] == "shutdown" and meta["processor"] == "count"


def test_a_checkpoint_of_another_format_is_ignored_with_a_warning(tmp_path: Path, caplog) -> None:
    path = recording(tmp_path)
    store = CheckpointStore(tmp_path / "s", "count-dwcp-count")
    store.save({"processor": "count", "format": 0, "state": 1000})
    flags = ["--from-file", str(path), "--state-dir", str(tmp_path / "s"), "--with-state"]
    with caplog.at_level(logging.WARNING):
        assert run([Count], *flags).processors[0].n == 30
    assert "not a format-1 count checkpoint; starting fresh" in caplog.text


def test_several_processors_one_decode_prefixed_flags(tmp_path: Path) -> None:
    path = recording(tmp_path, bad=2)
    a = run([Count, Other], "--from-file", str(path), "--other.step", "10", "--count.step", "2")
    counts = {p.name: p.n for p in a.processors}
    assert counts == {"count": 60, "other": 300}  # each sees the 30 good records once
    assert a.loop is not None and a.loop.stats.dead_letters == 2 and a.group == "dwcp-count+other"


def test_a_checkpoint_follows_each_commit_once_its_interval_passed(tmp_path: Path) -> None:
    path = recording(tmp_path, n=50)
    flags = ["--from-file", str(path), "--state-dir", str(tmp_path / "s"), "--with-state"]
    a = run([Count], *flags, "--batch-size", "10", "--checkpoint-interval", "0")
    store = CheckpointStore(tmp_path / "s", "count-dwcp-count")
    # one after each commit (at least 5 batches of 10) and one on close; the newest 3 are kept
    assert a.loop is not None and (commits := a.loop.stats.commits) >= 5
    assert store.versions() == [commits - 1, commits, commits + 1]
    assert store.load()[0]["state"] == 50


def test_run_cli_errors_name_the_cause(tmp_path: Path, capsys) -> None:
    assert run_cli.main(["run", "nosuch"]) == 2
    assert "unknown processor(s): nosuch" in capsys.readouterr().err
    assert run_cli.main(["run", "ingest", "ingest"]) == 2
    capsys.readouterr()
    assert run_cli.main(["run", "ingest", "--from-file", str(tmp_path / "missing.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "cannot read" in err and "missing.jsonl" in err


@pytest.mark.parametrize("argv", [[], ["--help"]])
def test_run_cli_usage(argv: list[str], capsys) -> None:
    assert run_cli.main(argv) == (0 if argv else 2)
    assert "reliability" in capsys.readouterr().err


def test_run_help_without_names_lists_the_processors(capsys) -> None:
    assert run_cli.main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Processors: ingest, reliability, consensus, bandwidth, compression" in out
    assert run_cli.main(["run"]) == 2
    assert "no processor named" in capsys.readouterr().err


class Learner(Count):
    """Records what it learned from history apart from what it handled live."""

    name = "learner"

    def __init__(self, settings: Any, args: argparse.Namespace, state: Any | None) -> None:
        super().__init__(settings, args, state)
        self.learned: list[str] = []
        self.ended = 0

    def learn(self, batch: list[Any]) -> None:
        self.learned += [rec.node_id for _m, rec in batch]

    def end_learning(self) -> None:
        self.ended += 1

    def handle(self, batch: list[Any]) -> list[Any]:
        super().handle(batch)
        from stream.loop import Output

        return [Output("dwcp.predictions", b"k", b"{}") for _ in batch]


def test_learn_from_history_before_the_live_records(tmp_path: Path) -> None:
    live = recording(tmp_path, n=12)
    history = tmp_path / "history.jsonl"
    history.write_text("".join(LINE % (i, 7) for i in range(5)) + "{oops\n")
    out = tmp_path / "out"
    a = run([Learner], "--from-file", str(live), "--learn-from", str(history),
            "--learn-from", str(history), "--output-dir", str(out))  # fmt: skip
    p = a.processors[0]
    assert p.learned == ["n-7"] * 10 and p.ended == 1  # both files, in order; the bad line dropped
    assert p.n == 12  # live records only
    lines = (out / "dwcp.predictions.jsonl").read_text().splitlines()
    assert len(lines) == 12  # history's outputs are not written
    assert not (out / "dwcp.dead-letter.jsonl").exists()  # nor its dead letters


class Prepared(Count):
    """Records when it was made ready, against when it learned and handled records."""

    name = "prepared"

    def __init__(self, settings: Any, args: argparse.Namespace, state: Any | None) -> None:
        super().__init__(settings, args, state)
        self.events: list[str] = []

    def ready(self) -> None:
        self.events.append("ready")

    def learn(self, batch: list[Any]) -> None:
        self.events.append("learn")

    def handle(self, batch: list[Any]) -> list[Any]:
        self.events.append("handle")
        return super().handle(batch)


def test_ready_is_called_once_after_the_history_and_before_the_first_records(
    tmp_path: Path,
) -> None:
    history = tmp_path / "history.jsonl"
    history.write_text("".join(LINE % (i, 7) for i in range(5)))
    a = run([Prepared, Count], "--from-file", str(recording(tmp_path)),
            "--learn-from", str(history))  # fmt: skip
    events = a.processors[0].events
    assert events.count("ready") == 1
    assert events.index("ready") > events.index("learn")
    assert events.index("ready") < events.index("handle")
    assert a.processors[1].n == 35  # the other one (no hook): 5 history records, 30 live


class Fetching(Prepared):
    """Records the batches it was asked to prefetch, against those it handled."""

    name = "fetching"

    def prefetch(self, batch: list[Any]) -> None:
        self.events.append("prefetch")
        self.fetched = batch

    def handle(self, batch: list[Any]) -> list[Any]:
        assert batch is self.fetched  # the very batch it prefetched
        return super().handle(batch)


def test_every_processor_prefetches_a_batch_before_any_handles_it(tmp_path: Path) -> None:
    order: list[str] = []
    a = app.App([Fetching, Prepared], ["--from-file", str(recording(tmp_path)),
                                       "--batch-size", "7"], environ={})  # fmt: skip
    for proc in a.processors:
        proc.events = order  # one log for both
    a.run(install_signals=False)
    # per batch: the first one's prefetch, then both handles (the second has no hook)
    batches = [e for e in order if e != "ready"]
    assert len(batches) >= 15 and batches == ["prefetch", "handle", "handle"] * (len(batches) // 3)
    assert a.processors[1].n == 30


def test_learn_from_is_skipped_when_a_checkpoint_was_restored(tmp_path: Path, capsys) -> None:
    (tmp_path / "h").mkdir()
    live, history = recording(tmp_path, n=6), recording(tmp_path / "h", n=4)
    flags = ["--from-file", str(live), "--with-state", "--state-dir", str(tmp_path / "s"),
             "--learn-from", str(history)]  # fmt: skip
    assert run([Learner], *flags).processors[0].learned == ["n-0", "n-1", "n-2", "n-0"]
    capsys.readouterr()
    again = run([Learner], *flags).processors[0]
    assert again.learned == [] and again.ended == 0
    assert "a checkpoint was restored" in capsys.readouterr().err


def test_learn_from_a_missing_file_names_it(tmp_path: Path) -> None:
    live = recording(tmp_path)
    with pytest.raises(app.DwcpError, match="missing.csv"):
        run([Learner], "--from-file", str(live), "--learn-from", str(tmp_path / "missing.csv"))


def test_learning_keeps_the_process_live_but_not_ready(tmp_path: Path) -> None:
    live, history = recording(tmp_path, n=3), tmp_path / "history.jsonl"
    history.write_text("".join(LINE % (i, 7) for i in range(5)))
    a = app.App([Learner], ["--from-file", str(live), "--learn-from", str(history)], environ={})
    seen: list[tuple[bool, bool]] = []

    def learn(batch: list[Any]) -> None:
        seen.append((a.health.live()[0], a.health.ready()[0]))

    a.processors[0].learn = learn  # type: ignore[method-assign]
    a.health.last_beat -= 10 * a.health.liveness_timeout_s  # as if a long history had started
    a.learn_history()
    # live again (beaten by the learning loop; without it the backdated beat fails /healthz),
    # and never ready while learning
    assert seen and all(live and not ready for live, ready in seen)
    assert a.health.live()[0] and not a.health.ready()[0]
